//! Collectives against a plain reference computed on every rank from the same seeded data:
//! random shapes, row counts not divisible by the number of ranks, empty tensors, non-contiguous
//! inputs; and size disagreements that must be errors on every rank, not hangs.

mod common;

use common::on_ranks;
use ferrograd_distributed::{Communicator, DistError, MpiFloat, ReduceOp};
use ferrograd_tensor::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The tensor rank `r` holds in `case` (every rank can build every rank's tensor).
fn data<F: MpiFloat>(case: u64, r: usize, shape: &[usize]) -> Tensor<F> {
    let mut rng = StdRng::seed_from_u64(case * 1000 + r as u64);
    Tensor::rand_uniform(shape, F::from_f64(-1.0), F::from_f64(1.0), &mut rng)
}

fn close<F: MpiFloat>(what: &str, got: &Tensor<F>, want: &Tensor<F>, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    for (i, (a, b)) in got.to_vec().into_iter().zip(want.to_vec()).enumerate() {
        assert!((a.to_f64() - b.to_f64()).abs() <= tol, "{what}: element {i}: got {a:?}, want {b:?}");
    }
}

fn check_all<F: MpiFloat>(comm: &Communicator, tol: f64) {
    let (p, me) = (comm.size(), comm.rank());
    let mut shape_rng = StdRng::seed_from_u64(42);
    for case in 0..40u64 {
        // Rows 0..=7 (often not divisible by p, sometimes 0), trailing dims 0..=3 elements.
        let rows = shape_rng.random_range(0..8usize);
        let cols = if case % 10 == 9 { 0 } else { shape_rng.random_range(1..4usize) };
        let shape = [rows, cols];
        let all: Vec<Tensor<F>> = (0..p).map(|r| data(case, r, &shape)).collect();
        let mine = all[me].clone();

        let sum = all.iter().skip(1).fold(all[0].clone(), |acc, t| acc.add(t));
        let got = comm.all_reduce(&mine, ReduceOp::Sum).unwrap();
        close(&format!("all_reduce sum {shape:?}"), &got, &sum, tol);
        let mut inplace = mine.clone();
        comm.all_reduce_(&mut inplace, ReduceOp::Mean).unwrap();
        close("all_reduce_ mean", &inplace, &sum.div_scalar(F::from_f64(p as f64)), tol);
        let max = all.iter().skip(1).fold(all[0].clone(), |acc, t| acc.maximum(t));
        close("all_reduce max", &comm.all_reduce(&mine, ReduceOp::Max).unwrap(), &max, 0.0);
        let min = all.iter().skip(1).fold(all[0].clone(), |acc, t| acc.minimum(t));
        close("all_reduce min", &comm.all_reduce(&mine, ReduceOp::Min).unwrap(), &min, 0.0);
        // A non-contiguous input: the transposed view.
        let t_sum = comm.all_reduce(&mine.t(), ReduceOp::Sum).unwrap();
        close("all_reduce of a transposed view", &t_sum, &sum.t().contiguous(), tol);

        let root = case as usize % p;
        let mut b = mine.clone();
        comm.broadcast_(&mut b, root).unwrap();
        close("broadcast", &b, &all[root], 0.0);

        // all_gather with a different number of rows on each rank.
        let rows_of = |r: usize| (rows + r) % 5;
        let parts: Vec<Tensor<F>> = (0..p).map(|r| data(case + 500, r, &[rows_of(r), cols])).collect();
        let gathered = comm.all_gather(&parts[me]).unwrap();
        let refs: Vec<&Tensor<F>> = parts.iter().collect();
        close("all_gather", &gathered, &Tensor::cat(&refs, 0), 0.0);

        // reduce_scatter: this rank's rows of the sum, split as numpy.array_split.
        let start: usize = (0..me).map(|r| rows / p + usize::from(r < rows % p)).sum();
        let len = rows / p + usize::from(me < rows % p);
        let got = comm.reduce_scatter(&mine, ReduceOp::Sum).unwrap();
        close(&format!("reduce_scatter {shape:?}"), &got, &sum.narrow(0, start, len).contiguous(), tol);
        let got = comm.reduce_scatter(&mine, ReduceOp::Mean).unwrap();
        let mean = sum.div_scalar(F::from_f64(p as f64));
        close("reduce_scatter mean", &got, &mean.narrow(0, start, len).contiguous(), tol);
    }
    comm.barrier();
}

#[test]
fn collectives_match_reference() {
    on_ranks("collectives_match_reference", &[2, 3], |comm| {
        check_all::<f32>(comm, 1e-6);
        check_all::<f64>(comm, 1e-14);
        let mut flat = vec![comm.rank() as f64 + 1.0; 3];
        comm.all_reduce_slice_(&mut flat, ReduceOp::Sum).unwrap();
        let p = comm.size() as f64;
        assert_eq!(flat, vec![p * (p + 1.0) / 2.0; 3]);
        let mut scalar = Tensor::<f32>::scalar(comm.rank() as f32);
        comm.all_reduce_(&mut scalar, ReduceOp::Max).unwrap();
        assert_eq!(scalar.item(), (comm.size() - 1) as f32);
    });
}

#[test]
fn size_disagreements_are_errors_on_every_rank() {
    on_ranks("size_disagreements_are_errors_on_every_rank", &[2, 3], |comm| {
        let me = comm.rank();
        // Rank 1 holds one element more.
        let t = Tensor::<f32>::ones(&[3 + usize::from(me == 1)]);
        let err = comm.all_reduce(&t, ReduceOp::Sum).unwrap_err();
        assert!(
            matches!(err, DistError::SizeMismatch { op: "all_reduce", min: 3, max: 4, rank, .. } if rank == me),
            "{err}"
        );
        let mut b = t.clone();
        assert!(matches!(comm.broadcast_(&mut b, 0), Err(DistError::SizeMismatch { op: "broadcast", .. })));
        assert!(matches!(comm.reduce_scatter(&t, ReduceOp::Sum), Err(DistError::SizeMismatch { .. })));
        let g = Tensor::<f64>::ones(&[2, 2 + usize::from(me == 1)]);
        assert!(matches!(comm.all_gather(&g), Err(DistError::ShapeMismatch { op: "all_gather", .. })));
        assert!(matches!(comm.broadcast_(&mut b, 7), Err(DistError::BadRank { root: 7, .. })));
        // The ranks are still in step: a correct collective after the errors works.
        let ok = comm.all_reduce(&Tensor::<f32>::ones(&[2]), ReduceOp::Sum).unwrap();
        assert_eq!(ok.to_vec(), vec![comm.size() as f32; 2]);
    });
}

/// A rank that panics (here between collectives, while the other ranks wait in an all-reduce)
/// ends the whole job with a message naming it, instead of leaving the others waiting forever.
#[test]
fn a_panicking_rank_aborts_the_job() {
    common::on_ranks_expect_abort("a_panicking_rank_aborts_the_job", 2, "rank 1 of 2 panicked", |comm| {
        if comm.rank() == 1 {
            panic!("a bug on rank 1");
        }
        let _ = comm.all_reduce(&Tensor::<f32>::ones(&[4]), ReduceOp::Sum);
        unreachable!("rank 1 never joins the all-reduce");
    });
}
