//! `scaled_dot_product_attention` forward + backward throughput (criterion's "elem/s" counts
//! sequences): batch 32, 4 heads, head dim 32, sequence 64 and 256, f32, with and without a
//! causal mask; the loss is `sum(out * w)` for a fixed `w`, and the gradients of q, k and v are
//! computed. `benches/compare/attention_torch.py` times the same with PyTorch's
//! `F.scaled_dot_product_attention`; see `benches/compare/README.md`.
//!
//! Threads: `MATMUL_NUM_THREADS=N cargo bench --bench attention` (default 1); the bench name
//! carries the count.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use ferrograd::nn::functional::scaled_dot_product_attention;
use ferrograd::prelude::*;
use ferrograd::tensor::rand::{rngs::StdRng, Rng, SeedableRng};

const BATCH: usize = 32;
const HEADS: usize = 4;
const HEAD_DIM: usize = 32;

fn main() {
    let threads = std::env::var("MATMUL_NUM_THREADS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1);
    ferrograd::tensor::set_num_threads(threads);
    let mut rng = StdRng::seed_from_u64(0);
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("sdpa_forward_backward");
    group.measurement_time(Duration::from_secs(8)).sample_size(20);
    group.throughput(Throughput::Elements(BATCH as u64));
    for seq in [64, 256] {
        let shape = [BATCH, HEADS, seq, HEAD_DIM];
        let mut randn = || Tensor::<f32>::from_fn(&shape, |_| rng.random::<f32>() * 2.0 - 1.0);
        let (q, k, v, w) = (randn(), randn(), randn(), Var::constant(randn()));
        for causal in [false, true] {
            let name = if causal { "causal" } else { "full" };
            group.bench_function(BenchmarkId::new(format!("seq{seq}_{name}"), format!("b{BATCH}/t{threads}")), |b| {
                b.iter(|| {
                    let (q, k, v) = (Var::leaf(q.clone()), Var::leaf(k.clone()), Var::leaf(v.clone()));
                    let out = scaled_dot_product_attention(&q, &k, &v, None, 0.0, causal, None);
                    let grads = (&out * &w).sum().backward();
                    grads.len()
                })
            });
        }
    }
    group.finish();
    c.final_summary();
}
