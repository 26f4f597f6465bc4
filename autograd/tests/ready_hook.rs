//! `Var::backward_with_ready`: each leaf is reported once, as soon as no op left on the tape can
//! add to its gradient, with the gradient the returned `Grads` hold. Ops of the test graphs log
//! when their backward runs, so the tests see where in the pass each leaf was reported.

use std::sync::{Arc, Mutex};

use ferrograd_autograd::{grad, BackwardOptions, NodeId, Param, Var};
use ferrograd_tensor::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

type Log = Arc<Mutex<Vec<String>>>;

/// The identity, whose backward writes `op NAME` to the log when it runs.
fn probe(v: &Var<f64>, name: &'static str, log: &Log) -> Var<f64> {
    let log = log.clone();
    Var::from_op("probe", v.data().clone(), [v], move |_, g| {
        log.lock().unwrap().push(format!("op {name}"));
        [Some(g.clone())].into_iter().collect()
    })
}

fn randn(shape: &[usize], rng: &mut StdRng) -> Tensor<f64> {
    Tensor::rand_normal(shape, 0.0, 1.0, rng)
}

/// Runs `backward_with_ready` on `loss`, logging `ready NAME` per reported leaf (names from
/// `leaves`), and checks what holds for every pass: each leaf reported at most once, with the
/// gradient the returned `Grads` hold, and every leaf with a gradient reported.
fn run(loss: &Var<f64>, opts: BackwardOptions, leaves: &[(&str, NodeId)], log: &Log) -> Vec<(NodeId, Var<f64>)> {
    let mut seen: Vec<(NodeId, Var<f64>)> = Vec::new();
    let grads = loss.backward_with_ready(opts, |id, g| {
        let name = leaves.iter().find(|(_, l)| *l == id).map_or("?", |(n, _)| n);
        log.lock().unwrap().push(format!("ready {name}"));
        seen.push((id, g.clone()));
    });
    for (i, (id, _)) in seen.iter().enumerate() {
        assert!(!seen[..i].iter().any(|(j, _)| j == id), "{id:?} reported twice");
    }
    assert_eq!(seen.len(), grads.len(), "reported {} leaves, Grads hold {}", seen.len(), grads.len());
    for (id, g) in &seen {
        let held = grads.get_by_id(*id).unwrap_or_else(|| panic!("{id:?} reported but not in Grads"));
        assert_eq!(g.to_vec(), held.to_vec(), "{id:?}: the reported gradient is not the final one");
    }
    seen
}

fn position(log: &[String], entry: &str) -> usize {
    log.iter().position(|e| e == entry).unwrap_or_else(|| panic!("`{entry}` not in {log:?}"))
}

struct Mlp {
    w: Vec<Var<f64>>,
    b: Vec<Var<f64>>,
}

impl Mlp {
    fn new(widths: &[usize], rng: &mut StdRng) -> Mlp {
        let w = widths.windows(2).map(|p| Var::leaf(randn(&[p[0], p[1]], rng))).collect();
        let b = widths[1..].iter().map(|&n| Var::leaf(randn(&[n], rng))).collect();
        Mlp { w, b }
    }

    fn leaves(&self) -> Vec<(String, NodeId)> {
        let mut out = Vec::new();
        for (k, (w, b)) in self.w.iter().zip(&self.b).enumerate() {
            out.push((format!("w{k}"), w.id().unwrap()));
            out.push((format!("b{k}"), b.id().unwrap()));
        }
        out
    }

    /// Layer k is `probe(h W_k + b_k)`, tanh between layers; the loss is the sum of squares.
    fn loss(&self, x: &Var<f64>, log: &Log) -> Var<f64> {
        const NAMES: [&str; 4] = ["layer0", "layer1", "layer2", "layer3"];
        let mut h = x.clone();
        for (k, (w, b)) in self.w.iter().zip(&self.b).enumerate() {
            if k > 0 {
                h = h.tanh();
            }
            h = probe(&h.matmul(w).add(b), NAMES[k], log);
        }
        h.square().sum()
    }
}

#[test]
fn a_chain_reports_each_layer_before_backward_reaches_the_layer_below() {
    let mut rng = StdRng::seed_from_u64(0);
    let net = Mlp::new(&[5, 4, 3, 2], &mut rng);
    let x = Var::constant(randn(&[6, 5], &mut rng));
    let log: Log = Arc::default();
    let names = net.leaves();
    let leaves: Vec<(&str, NodeId)> = names.iter().map(|(n, id)| (n.as_str(), *id)).collect();
    let seen = run(&net.loss(&x, &log), BackwardOptions::default(), &leaves, &log);
    assert_eq!(seen.len(), 6, "every parameter is reported");
    let log = log.lock().unwrap().clone();
    // Layer k's parameters become final once its probe has run, and before layer k-1's runs:
    // the last layer's gradients are ready while two thirds of backward are still to come.
    for k in 0..3 {
        let op = position(&log, &format!("op layer{k}"));
        for p in ["w", "b"] {
            let ready = position(&log, &format!("ready {p}{k}"));
            assert!(ready > op, "{p}{k} reported before its own layer's backward: {log:?}");
            if k > 0 {
                let below = position(&log, &format!("op layer{}", k - 1));
                assert!(ready < below, "{p}{k} reported only after layer {} ran: {log:?}", k - 1);
            }
        }
    }
    assert!(position(&log, "ready w2") < position(&log, "op layer0"));
}

#[test]
fn a_leaf_used_several_times_is_reported_once_after_its_last_use() {
    let mut rng = StdRng::seed_from_u64(1);
    let w = Var::leaf(randn(&[3, 3], &mut rng));
    let v = Var::leaf(randn(&[3, 3], &mut rng));
    let x = Var::constant(randn(&[2, 3], &mut rng));
    let log: Log = Arc::default();
    // w in the first and the last layer (and twice in the last), v only in the last.
    let h = probe(&x.matmul(&w), "first", &log).tanh();
    let h = probe(&h.matmul(&v).matmul(&w).add(&h.matmul(&w)), "last", &log);
    let leaves = [("w", w.id().unwrap()), ("v", v.id().unwrap())];
    let seen = run(&h.square().sum(), BackwardOptions::default(), &leaves, &log);
    assert_eq!(seen.len(), 2);
    let events = log.lock().unwrap().clone();
    assert!(position(&events, "ready v") < position(&events, "op first"), "{events:?}");
    assert!(position(&events, "ready w") > position(&events, "op first"), "{events:?}");
    // The reported sum is the whole gradient: the same as grad() of the same function.
    let again = probe(&x.matmul(&w), "first", &log).tanh();
    let again = again.matmul(&v).matmul(&w).add(&again.matmul(&w)).square().sum();
    let want = grad(&[again], std::slice::from_ref(&w), None, false)[0].clone().unwrap();
    let got = &seen.iter().find(|(id, _)| Some(*id) == w.id()).unwrap().1;
    assert!(got.data().max_abs_diff(want.data()) < 1e-12);
}

#[test]
fn a_parameter_taken_twice_from_its_handle_is_one_leaf() {
    // Two `Param::var()` calls make two graph leaves under one id: one report, the sum.
    let p = Param::new(Tensor::from_vec(vec![1.5f64, -2.0], &[2]));
    let x = Var::constant(Tensor::from_vec(vec![3.0, 4.0], &[2]));
    let loss = p.var().mul(&x).sum().add(&p.var().square().sum());
    let mut reports = Vec::new();
    let grads = loss.backward_with_ready(BackwardOptions::default(), |id, g| reports.push((id, g.to_vec())));
    assert_eq!(reports, vec![(p.id(), vec![3.0 + 3.0, 4.0 - 4.0])]);
    assert_eq!(grads.get_param(&p).unwrap().to_vec(), reports[0].1);
}

#[test]
fn leaves_without_a_gradient_are_not_reported() {
    let a = Var::leaf(Tensor::from_vec(vec![1.0f64, 2.0], &[2]));
    let blocked = Var::leaf(Tensor::from_vec(vec![3.0f64, 4.0], &[2]));
    let detached = Var::leaf(Tensor::from_vec(vec![5.0f64, 6.0], &[2]));
    // An op that sends no gradient to its input.
    let stop = Var::from_op("stop", blocked.data().clone(), [&blocked], |_, _| [None].into_iter().collect());
    let loss = a.mul(&stop).add(&detached.detach()).sum();
    let mut reported = Vec::new();
    let grads = loss.backward_with_ready(BackwardOptions::default(), |id, _| reported.push(id));
    assert_eq!(reported, vec![a.id().unwrap()]);
    assert!(grads.get(&blocked).is_none() && grads.get(&detached).is_none());
}

#[test]
fn a_leaf_behind_a_multi_output_op_is_reported_once() {
    let w = Var::leaf(Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[4]));
    let parts = w.split(2, 0);
    let loss = parts[0].square().sum().add(&parts[1].mul_scalar(3.0).sum());
    let mut reports = Vec::new();
    loss.backward_with_ready(BackwardOptions::default(), |id, g| reports.push((id, g.to_vec())));
    assert_eq!(reports, vec![(w.id().unwrap(), vec![2.0, 4.0, 3.0, 3.0])]);
}

#[test]
fn hooks_run_first_and_every_pass_reports_again() {
    let x = Var::leaf(Tensor::from_vec(vec![1.0f64, -1.0], &[2]));
    x.register_hook(|g| Some(g.mul_scalar(10.0)));
    let loss = x.exp().sum();
    let retain = BackwardOptions { retain_graph: true, create_graph: false };
    for pass in 0..2 {
        let mut reports = Vec::new();
        let opts = if pass == 0 { retain } else { BackwardOptions::default() };
        let grads = loss.backward_with_ready(opts, |_, g| reports.push(g.to_vec()));
        let want: Vec<f64> = [1.0f64, -1.0].iter().map(|v| 10.0 * v.exp()).collect();
        assert_eq!(reports, vec![want.clone()], "pass {pass}");
        assert_eq!(grads.get(&x).unwrap().to_vec(), want);
    }
}

#[test]
fn with_create_graph_the_reported_gradient_is_differentiable() {
    let x = Var::leaf(Tensor::from_vec(vec![2.0f64, -0.5], &[2]));
    let y = x.mul(&x).mul(&x).sum(); // sum of x³
    let mut reported = None;
    let grads = y.backward_with_ready(BackwardOptions { retain_graph: false, create_graph: true }, |_, g| {
        reported = Some(g.clone())
    });
    let g = reported.expect("x is reported");
    assert!(g.requires_grad());
    assert_eq!(g.to_vec(), grads.get(&x).unwrap().to_vec());
    assert_eq!(g.to_vec(), vec![12.0, 0.75]); // 3x²
    let second = grad(&[g.sum()], &[x], None, false)[0].clone().unwrap();
    assert_eq!(second.to_vec(), vec![12.0, -3.0]); // 6x
}

#[test]
fn without_a_hook_backward_is_unchanged() {
    let mut rng = StdRng::seed_from_u64(2);
    let net = Mlp::new(&[4, 3, 2], &mut rng);
    let x = Var::constant(randn(&[5, 4], &mut rng));
    let log: Log = Arc::default();
    let plain = net.loss(&x, &log).backward();
    let hooked = net.loss(&x, &log).backward_with_ready(BackwardOptions::default(), |_, _| {});
    assert_eq!(plain.len(), hooked.len());
    for (id, g) in plain.iter() {
        assert_eq!(g.to_vec(), hooked.get_by_id(id).unwrap().to_vec());
    }
}
