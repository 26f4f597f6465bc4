//! L-BFGS against `torch.optim.LBFGS`, recorded by `tests/fixtures/gen_lbfgs.py` into
//! `tests/fixtures/lbfgs_reference.txt` (float64): returned losses, parameters, evaluation and
//! iteration counts after every step, with and without the strong-Wolfe line search; and its
//! state saved and loaded mid-run.

use std::collections::HashMap;

use ferrograd_autograd::{Grads, Param, Var};
use ferrograd_optim::{Lbfgs, LbfgsOptions, LineSearch, OptimError, Optimizer};
use ferrograd_tensor::Tensor;

const FIXTURE: &str = include_str!("fixtures/lbfgs_reference.txt");
const A: [f64; 18] =
    [0.5, -1.0, 2.0, 1.5, 0.25, -0.5, -1.0, 2.0, 0.75, 0.3, -0.6, 1.2, 0.8, 0.1, -1.3, -0.4, -0.9, 0.2];
const T: [f64; 12] = [0.6, -0.7, 0.2, 0.0, -0.5, 0.9, 0.7, 0.3, -0.1, 0.4, 0.3, -0.6];

fn fixture() -> HashMap<String, Vec<f64>> {
    FIXTURE
        .lines()
        .map(|line| {
            let mut it = line.split_whitespace();
            let key = format!("{} {}", it.next().unwrap(), it.next().unwrap());
            (key, it.map(|v| v.parse().unwrap()).collect())
        })
        .collect()
}

/// The problems of gen_lbfgs.py: their parameters at the start, and their loss.
#[derive(Clone, Copy)]
enum Problem {
    Rosen,
    Tanh,
}

impl Problem {
    fn params(self) -> Vec<Param<f64>> {
        match self {
            Problem::Rosen => vec![
                Param::new(Tensor::from_vec(vec![-1.2, 1.0, -0.5, 0.8], &[2, 2])),
                Param::new(Tensor::from_vec(vec![0.5], &[1])),
            ],
            Problem::Tanh => vec![
                Param::new(Tensor::from_vec(vec![0.1, -0.2, 0.3, 0.4, -0.5, 0.6], &[3, 2])),
                Param::new(Tensor::from_vec(vec![0.05, -0.05], &[2])),
            ],
        }
    }

    fn loss(self, p: &[Param<f64>]) -> Var<f64> {
        match self {
            Problem::Rosen => {
                let v = p[0].var().reshape(&[4]);
                let (head, tail) = (v.narrow(0, 0, 3), v.narrow(0, 1, 3));
                let rosen = ((&tail - &head.square()).square() * 100.0 + (1.0 - &head).square()).sum();
                &rosen + &((&p[1].var() - 2.0).square() * 0.5).sum()
            }
            Problem::Tanh => {
                let a = Var::constant(Tensor::from_vec(A.to_vec(), &[6, 3]));
                let t = Var::constant(Tensor::from_vec(T.to_vec(), &[6, 2]));
                (&(&a.matmul(&p[0].var()) + &p[1].var()).tanh() - &t).square().mean()
            }
        }
    }
}

fn case(name: &str) -> (Problem, LbfgsOptions, usize, f64) {
    let wolfe = Some(LineSearch::StrongWolfe);
    let d = LbfgsOptions::default();
    match name {
        "rosen_fixed" => (Problem::Rosen, LbfgsOptions { lr: 0.1, max_iter: 10, ..d }, 4, 1.0),
        "rosen_wolfe" => (Problem::Rosen, LbfgsOptions { line_search: wolfe, ..d }, 4, 1.0),
        "rosen_wolfe_history2" => {
            (Problem::Rosen, LbfgsOptions { max_iter: 7, history_size: 2, line_search: wolfe, ..d }, 6, 1.0)
        }
        "rosen_wolfe_max_eval" => {
            (Problem::Rosen, LbfgsOptions { max_iter: 20, max_eval: Some(9), line_search: wolfe, ..d }, 5, 1.0)
        }
        "tanh_fixed" => (Problem::Tanh, LbfgsOptions { lr: 0.5, max_iter: 10, history_size: 4, ..d }, 4, 1.0),
        "tanh_wolfe" => {
            (Problem::Tanh, LbfgsOptions { max_iter: 15, history_size: 5, line_search: wolfe, ..d }, 3, 1.0)
        }
        "tanh_tolerance_change" => {
            (Problem::Tanh, LbfgsOptions { tolerance_change: 1e-4, line_search: wolfe, ..d }, 3, 1.0)
        }
        "tanh_tolerance_grad" => {
            (Problem::Tanh, LbfgsOptions { tolerance_grad: 2e-3, max_iter: 4, line_search: wolfe, ..d }, 8, 1.0)
        }
        "tanh_maximize" => {
            (Problem::Tanh, LbfgsOptions { max_iter: 6, line_search: wolfe, maximize: true, ..d }, 3, -1.0)
        }
        "tanh_one_iter" => (Problem::Tanh, LbfgsOptions { lr: 0.3, max_iter: 1, history_size: 3, ..d }, 12, 1.0),
        other => panic!("no case {other}"),
    }
}

#[track_caller]
fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{what}[{i}]: {g} vs PyTorch {w}");
    }
}

#[test]
fn lbfgs_follows_pytorch_trajectories() {
    let fx = fixture();
    let names: Vec<String> = fx.keys().filter_map(|k| k.strip_prefix("loss ").map(str::to_string)).collect();
    assert_eq!(names.len(), 10, "every case of the fixture");
    for name in names {
        let (problem, options, steps, sign) = case(&name);
        let params = problem.params();
        let mut opt = Lbfgs::new(params.clone(), options);
        let (mut losses, mut values, mut evals, mut iters) = (vec![], vec![], vec![], vec![]);
        for _ in 0..steps {
            losses.push(opt.step_closure(&mut || problem.loss(&params) * sign));
            values.extend(params.iter().flat_map(|p| p.value().to_vec()));
            evals.push(opt.func_evals() as f64);
            iters.push(opt.n_iter() as f64);
        }
        assert_eq!(evals, fx[&format!("evals {name}")], "{name}: loss evaluations");
        assert_eq!(iters, fx[&format!("iters {name}")], "{name}: iterations");
        assert_close(&format!("{name} loss"), &losses, &fx[&format!("loss {name}")]);
        assert_close(&format!("{name} params"), &values, &fx[&format!("params {name}")]);
    }
}

#[test]
fn one_iteration_from_given_gradients_equals_the_closure_step() {
    // `Optimizer::step(&grads)` with max_iter 1 is what `step_closure` does with it: the
    // fixture's `tanh_one_iter` case, driven like any optimizer.
    let fx = fixture();
    let (problem, options, steps, _) = case("tanh_one_iter");
    let params = problem.params();
    let mut opt: Box<dyn Optimizer<f64>> = Box::new(Lbfgs::new(params.clone(), options));
    let mut values = vec![];
    for _ in 0..steps {
        opt.step(&problem.loss(&params).backward());
        values.extend(params.iter().flat_map(|p| p.value().to_vec()));
    }
    assert_close("tanh_one_iter via step", &values, &fx["params tanh_one_iter"]);
}

#[test]
#[should_panic(expected = "Lbfgs::step: a step from given gradients is one iteration without line search")]
fn a_step_from_gradients_needs_max_iter_one() {
    let params = Problem::Tanh.params();
    let mut opt = Lbfgs::new(params.clone(), LbfgsOptions::default());
    opt.step(&Problem::Tanh.loss(&params).backward());
}

/// 3 steps, save, 3 more; against 3 steps, load into a fresh optimizer and fresh parameters, 3
/// more: bit for bit.
fn resumes_bit_for_bit(problem: Problem, options: LbfgsOptions) {
    let params = problem.params();
    let mut opt = Lbfgs::new(params.clone(), options);
    let mut saved = None;
    for k in 0..6 {
        if k == 3 {
            saved = Some((params.iter().map(Param::value).collect::<Vec<_>>(), opt.state_dict()));
        }
        opt.step_closure(&mut || problem.loss(&params));
    }
    let (values, state) = saved.unwrap();
    let fresh: Vec<Param<f64>> = values.into_iter().map(Param::new).collect();
    let mut resumed = Lbfgs::new(fresh.clone(), options);
    resumed.load_state_dict(&state).unwrap();
    assert_eq!(resumed.state_dict(), state, "the state round-trips");
    for _ in 3..6 {
        resumed.step_closure(&mut || problem.loss(&fresh));
    }
    for (p, q) in params.iter().zip(&fresh) {
        assert_eq!(p.value().to_vec(), q.value().to_vec());
    }
    assert_eq!(opt.state_dict(), resumed.state_dict());
}

#[test]
fn state_saves_and_loads_mid_run() {
    let wolfe = Some(LineSearch::StrongWolfe);
    resumes_bit_for_bit(
        Problem::Rosen,
        LbfgsOptions { max_iter: 5, history_size: 3, line_search: wolfe, ..Default::default() },
    );
    resumes_bit_for_bit(Problem::Tanh, LbfgsOptions { lr: 0.5, max_iter: 4, history_size: 2, ..Default::default() });
    // Names as PyTorch's state, the history as stacked rows.
    let params = Problem::Tanh.params();
    let mut opt = Lbfgs::new(params.clone(), LbfgsOptions { max_iter: 3, ..Default::default() });
    assert!(opt.state_dict().is_empty());
    opt.step_closure(&mut || Problem::Tanh.loss(&params));
    let state = opt.state_dict();
    let keys: Vec<&str> = state.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "state.0.0.H_diag",
            "state.0.0.d",
            "state.0.0.func_evals",
            "state.0.0.n_iter",
            "state.0.0.old_dirs",
            "state.0.0.old_stps",
            "state.0.0.prev_flat_grad",
            "state.0.0.ro",
            "state.0.0.t"
        ]
    );
    // PyTorch's state after this step (checked with torch 2.x): 2 iterations (the loop stops
    // early), one curvature pair.
    assert_eq!(state["state.0.0.old_dirs"].shape(), &[1, 8]);
    assert_eq!(state["state.0.0.n_iter"].item(), 2.0);
}

#[test]
fn impossible_state_is_a_typed_error_and_changes_nothing() {
    let params = Problem::Tanh.params();
    let mut opt = Lbfgs::new(params.clone(), LbfgsOptions { max_iter: 3, ..Default::default() });
    opt.step_closure(&mut || Problem::Tanh.loss(&params));
    let good = opt.state_dict();
    let with = |key: &str, t: Tensor<f64>| {
        let mut s = good.clone();
        s.insert(format!("state.0.0.{key}"), t);
        s
    };
    let cases = [
        (with("n_iter", Tensor::scalar(2f64.powi(64))), "InvalidValue"),
        (with("func_evals", Tensor::scalar(-1.0)), "InvalidValue"),
        (with("t", Tensor::scalar(-0.5)), "InvalidValue"),
        (with("H_diag", Tensor::scalar(0.0)), "InvalidValue"),
        (with("ro", Tensor::from_vec(vec![1.0, f64::NAN], &[2])), "InvalidValue"),
        (with("d", Tensor::zeros(&[7])), "ShapeMismatch"),
        (with("old_dirs", Tensor::zeros(&[3, 8])), "ShapeMismatch"),
        (with("exp_avg", Tensor::zeros(&[8])), "UnexpectedKey"),
    ];
    for (state, kind) in cases {
        let err = opt.load_state_dict(&state).unwrap_err();
        assert!(format!("{err:?}").starts_with(kind), "{kind}: {err}");
    }
    let mut missing = good.clone();
    missing.remove("state.0.0.prev_flat_grad");
    assert_eq!(opt.load_state_dict(&missing), Err(OptimError::MissingKey("state.0.0.prev_flat_grad".into())));
    assert_eq!(opt.state_dict(), good);
}

#[test]
fn options_are_checked() {
    let p = || Problem::Tanh.params();
    let err = |o: LbfgsOptions| Lbfgs::try_new(p(), o).unwrap_err().to_string();
    let d = LbfgsOptions::default();
    assert_eq!(err(LbfgsOptions { lr: -1.0, ..d }), "Lbfgs: invalid lr = -1: must be finite and >= 0");
    assert_eq!(err(LbfgsOptions { history_size: 0, ..d }), "Lbfgs: invalid history_size = 0: must be >= 1");
    assert_eq!(err(LbfgsOptions { max_iter: 0, ..d }), "Lbfgs: invalid max_iter = 0: must be >= 1");
    assert_eq!(err(LbfgsOptions { max_eval: Some(0), ..d }), "Lbfgs: invalid max_eval = 0: must be >= 1");
    assert_eq!(
        err(LbfgsOptions { tolerance_change: f64::NAN, ..d }),
        "Lbfgs: invalid tolerance_change = NaN: must be finite and >= 0"
    );
    let w = p().remove(0);
    assert!(matches!(Lbfgs::try_new(vec![w.clone(), w], d), Err(OptimError::DuplicateParameter(_))));
}

#[test]
fn missing_gradients_count_as_zeros_as_in_pytorch() {
    let (a, b) = (Param::new(Tensor::from_vec(vec![2.0f64], &[1])), Param::new(Tensor::from_vec(vec![5.0], &[1])));
    let mut opt = Lbfgs::new(vec![a.clone(), b.clone()], LbfgsOptions { max_iter: 1, ..Default::default() });
    let mut grads = Grads::default();
    grads.insert(a.id(), Tensor::from_vec(vec![4.0], &[1]));
    opt.step(&grads);
    // First step: t = min(1, 1 / |g|_1) * lr = 0.25 along -g.
    assert_eq!((a.value().item(), b.value().item()), (1.0, 5.0));
}
