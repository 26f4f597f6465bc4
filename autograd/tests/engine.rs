//! The engine's behaviour: retained and freed graphs, no_grad, hooks, higher-order gradients,
//! memory release, anomaly mode, custom ops and grad() on intermediate values.

use ferrograd_autograd::check::{gradcheck, gradgradcheck};
use ferrograd_autograd::{detect_anomaly, grad, no_grad, BackwardOptions, CustomOp, NodeId, Var};
use ferrograd_tensor::Tensor;

fn leaf(v: &[f64]) -> Var<f64> {
    Var::leaf(Tensor::from_slice(v, &[v.len()]))
}

#[test]
fn backward_twice_needs_retain_graph() {
    let x = leaf(&[1.0, 2.0]);
    let y = x.exp().mul(&x).sum();
    let g1 = y.backward_with(BackwardOptions { retain_graph: true, create_graph: false });
    let g2 = y.backward();
    assert_eq!(g1.get(&x).unwrap().to_vec(), g2.get(&x).unwrap().to_vec());
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| y.backward()));
    let msg = *again.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("already freed") && msg.contains("retain_graph"), "{msg}");
}

#[test]
fn no_grad_records_nothing_and_restores_the_mode() {
    let x = leaf(&[1.0]);
    let y = no_grad(|| x.sin().mul_scalar(2.0));
    assert!(!y.requires_grad());
    assert!(x.sin().requires_grad());
    let caught = std::panic::catch_unwind(|| no_grad(|| panic!("inside")));
    assert!(caught.is_err());
    assert!(ferrograd_autograd::is_grad_enabled(), "a panic inside no_grad must not leave grad off");
}

#[test]
fn detach_cuts_the_graph() {
    let x = leaf(&[3.0]);
    let y = (&x * &x.detach()).sum();
    assert_eq!(y.backward().get(&x).unwrap().to_vec(), vec![3.0]);
}

#[test]
fn hooks_see_and_replace_gradients() {
    use std::sync::{Arc, Mutex};
    let x = leaf(&[1.0, 2.0]);
    let h = x.mul_scalar(3.0);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    h.register_hook(move |g| {
        s.lock().unwrap().extend(g.to_vec());
        None
    });
    x.register_hook(|g| Some(g.mul_scalar(10.0)));
    let grads = h.square().sum().backward();
    assert_eq!(*seen.lock().unwrap(), vec![6.0, 12.0]); // d(h²)/dh = 2h
    assert_eq!(grads.get(&x).unwrap().to_vec(), vec![180.0, 360.0]); // 2h * 3 * 10
}

#[test]
fn third_derivative_of_sin_x_times_x_squared() {
    for &x0 in &[-1.3f64, 0.4, 2.2] {
        let x = leaf(&[x0]);
        let y = x.sin().mul(&x.square()).sum();
        let d1 = grad(&[y], std::slice::from_ref(&x), None, true)[0].clone().unwrap();
        let d2 = grad(&[d1.sum()], std::slice::from_ref(&x), None, true)[0].clone().unwrap();
        let d3 = grad(&[d2.sum()], std::slice::from_ref(&x), None, false)[0].clone().unwrap();
        let expected = -x0 * x0 * x0.cos() - 6.0 * x0 * x0.sin() + 6.0 * x0.cos();
        assert!((d3.item() - expected).abs() < 1e-10, "x={x0}: {} vs {expected}", d3.item());
    }
}

#[test]
fn grad_of_an_intermediate_value() {
    let x = leaf(&[2.0]);
    let h = x.square();
    let y = h.sin().sum();
    let g = grad(&[y], &[h.clone(), x.clone()], None, false);
    assert!((g[0].as_ref().unwrap().item() - 4.0f64.cos()).abs() < 1e-12);
    assert!((g[1].as_ref().unwrap().item() - 4.0 * 4.0f64.cos()).abs() < 1e-12);
}

#[test]
fn unrelated_inputs_get_no_gradient() {
    let x = leaf(&[1.0]);
    let z = leaf(&[1.0]);
    let g = grad(&[x.exp().sum()], &[z], None, false);
    assert!(g[0].is_none());
}

#[test]
fn backward_frees_saved_tensors() {
    let x = leaf(&[0.5, 1.5, 2.5]);
    let h = x.exp();
    let k = h.sin();
    let (wh, wk) = (h.data().storage_weak(), k.data().storage_weak());
    let loss = k.mul(&h).sum();
    drop((h, k));
    assert!(wh.upgrade().is_some(), "saved for backward until it runs");
    let _ = loss.backward();
    assert!(wh.upgrade().is_none(), "exp's output is still alive after backward");
    assert!(wk.upgrade().is_none(), "sin's output is still alive after backward");
}

#[test]
fn retained_graph_keeps_saved_tensors() {
    let x = leaf(&[0.5]);
    let h = x.exp();
    let wh = h.data().storage_weak();
    let loss = h.sin().sum();
    drop(h);
    let _ = loss.backward_with(BackwardOptions { retain_graph: true, create_graph: false });
    assert!(wh.upgrade().is_some());
    drop(loss);
    assert!(wh.upgrade().is_none(), "dropping the output frees the graph");
}

#[test]
fn a_long_chain_drops_without_overflowing_the_stack() {
    let x = leaf(&[1.0]);
    let mut y = x.clone();
    for _ in 0..200_000 {
        y = y.mul_scalar(1.0);
    }
    drop(y);
}

#[test]
fn gradients_accumulate_across_uses_and_map_to_stable_ids() {
    let id = NodeId::fresh();
    let w1 = Var::leaf_with_id(Tensor::from_vec(vec![2.0f64], &[1]), id);
    let w2 = Var::leaf_with_id(Tensor::from_vec(vec![2.0f64], &[1]), id);
    let y = (&w1 * 3.0 + &w1 * &w1).sum();
    let g = y.backward();
    assert_eq!(g.get_by_id(id).unwrap().to_vec(), vec![7.0]);
    assert_eq!(g.get(&w2).unwrap().to_vec(), vec![7.0], "same id, same gradient");
}

#[test]
fn anomaly_mode_names_the_forward_op_and_its_location() {
    let x = leaf(&[-1.0]);
    let r = std::panic::catch_unwind(|| detect_anomaly(|| x.log()));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("`log`") && msg.contains("engine.rs"), "{msg}");
}

#[test]
fn anomaly_mode_names_the_backward_op() {
    let x = leaf(&[0.0]);
    let y = x.sqrt().sum(); // forward is finite (0), the gradient 1/(2·0) is not
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| detect_anomaly(|| y.backward())));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("backward of op `sqrt`") && msg.contains("engine.rs"), "{msg}");
}

struct Clip;
impl CustomOp<f64> for Clip {
    fn name(&self) -> &'static str {
        "soft_clip"
    }
    fn forward(&self, inputs: &[&Tensor<f64>]) -> Tensor<f64> {
        inputs[0].map(|x| x.tanh() * 2.0)
    }
    fn backward(&self, _inputs: &[Var<f64>], output: &Var<f64>, grad: &Var<f64>) -> Vec<Option<Var<f64>>> {
        // d/dx 2 tanh x = 2 (1 - tanh²x) = 2 - y²/2
        vec![Some(grad.mul(&output.square().mul_scalar(-0.5).add_scalar(2.0)))]
    }
}

#[test]
fn custom_ops_pass_gradcheck_and_gradgradcheck() {
    let x = Tensor::from_vec(vec![-1.5, -0.2, 0.3, 2.0], &[2, 2]);
    gradcheck(|v| Var::apply_op(Clip, &[&v[0]]), std::slice::from_ref(&x)).unwrap();
    gradgradcheck(|v| Var::apply_op(Clip, &[&v[0]]), &[x]).unwrap();
}

#[test]
fn gradcheck_reports_a_wrong_gradient() {
    struct Wrong;
    impl CustomOp<f64> for Wrong {
        fn name(&self) -> &'static str {
            "wrong"
        }
        fn forward(&self, inputs: &[&Tensor<f64>]) -> Tensor<f64> {
            inputs[0].map(|x| x * x)
        }
        fn backward(&self, inputs: &[Var<f64>], _o: &Var<f64>, grad: &Var<f64>) -> Vec<Option<Var<f64>>> {
            vec![Some(grad.mul(&inputs[0]))] // should be 2x
        }
    }
    let x = Tensor::from_vec(vec![1.0, 3.0], &[2]);
    let err = gradcheck(|v| Var::apply_op(Wrong, &[&v[0]]), &[x]).unwrap_err();
    assert_eq!((err.input, err.input_index.clone(), err.output_index.clone()), (0, vec![0], vec![0]));
    assert!((err.analytic - 1.0).abs() < 1e-12 && (err.numeric - 2.0).abs() < 1e-6);
    assert!(err.to_string().contains("analytic 1"), "{err}");
}

#[test]
fn vars_cross_threads() {
    let x = leaf(&[1.0, 2.0]);
    let y = std::thread::spawn(move || x.square().sum().backward().len()).join().unwrap();
    assert_eq!(y, 1);
}

/// `split`, `chunk` and `unbind` record one op with a node per piece: each piece keeps its own
/// hooks, can be a `grad` target, and the op's one backward sees every piece's gradient (zero
/// for pieces no gradient reached).
#[test]
fn pieces_of_a_split_are_values_of_their_own() {
    let x = leaf(&[1.0, 2.0, 3.0, 4.0, 5.0]);
    let p = x.split(2, 0);
    assert_eq!(p.len(), 3);
    assert!(p.iter().all(|v| v.requires_grad() && !v.is_leaf()));
    p[0].register_hook(|g| Some(g.mul_scalar(10.0)));
    // Pieces 0 and 2 used (piece 0 twice), piece 1 not: its part of x's gradient is zero.
    let y = (&(&p[0] * &p[0]).sum() + &p[0].sum()) + (&p[2] * 3.0).sum();
    let g = grad(&[y], &[x.clone(), p[0].clone(), p[1].clone()], None, false);
    assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![30.0, 50.0, 0.0, 0.0, 3.0]);
    assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![30.0, 50.0], "a piece's gradient, through its hook");
    assert!(g[2].is_none(), "no gradient reached piece 1");

    let rows = Var::leaf(Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]));
    let cols = rows.unbind(1);
    let y = (&cols[2] * &cols[0]).sum();
    let g = y.backward_with(BackwardOptions { retain_graph: true, create_graph: false });
    assert_eq!(g.get(&rows).unwrap().to_vec(), vec![3.0, 0.0, 1.0, 6.0, 0.0, 4.0]);
    assert_eq!(y.backward().get(&rows).unwrap().to_vec(), vec![3.0, 0.0, 1.0, 6.0, 0.0, 4.0]);
    // The second backward freed the unbind: a new use of one of its pieces cannot go through it.
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cols[1].sum().backward()));
    let msg = *again.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("already freed") && msg.contains("`unbind`"), "{msg}");
}

#[test]
fn second_derivatives_flow_through_split_pieces() {
    // y = sum over chunks c of (c0 * c1 * c2) with x = [c0 | c1 | c2]: a mixed second derivative.
    let f = |v: &[Var<f64>]| {
        let c = v[0].chunk(3, 0);
        (&(&c[0] * &c[1]) * &c[2].exp()).sum()
    };
    let x = Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 0.25, 1.5, -0.5], &[6]);
    gradcheck(f, std::slice::from_ref(&x)).unwrap();
    gradgradcheck(f, std::slice::from_ref(&x)).unwrap();
}
