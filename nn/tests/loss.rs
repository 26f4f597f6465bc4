//! Losses against hand-written f64 loops and against PyTorch (fixtures/losses.txt, written by
//! fixtures/gen_losses.py), gradients against finite differences, and stability on huge logits.

use std::collections::HashMap;

use ferrograd_autograd::check::gradcheck;
use ferrograd_autograd::{Param, Var};
use ferrograd_nn::loss::*;
use ferrograd_tensor::Tensor;

/// The fixture file as `name -> (shape, values)`.
fn fixtures() -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let text = include_str!("fixtures/losses.txt");
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut parts = line.split('|');
            let name = parts.next().unwrap().to_string();
            let shape = parts.next().unwrap();
            let shape: Vec<usize> =
                if shape.is_empty() { vec![] } else { shape.split(',').map(|d| d.parse().unwrap()).collect() };
            let values = parts.next().unwrap().split(' ').map(|v| v.parse().unwrap()).collect();
            (name, (shape, values))
        })
        .collect()
}

struct Fx(HashMap<String, (Vec<usize>, Vec<f64>)>);

impl Fx {
    fn load() -> Self {
        Fx(fixtures())
    }
    fn t(&self, name: &str) -> Tensor<f64> {
        let (shape, v) = &self.0[name];
        Tensor::from_vec(v.clone(), shape)
    }
    fn var(&self, name: &str) -> Var<f64> {
        Var::constant(self.t(name))
    }
    fn idx(&self, name: &str) -> Tensor<i64> {
        let (shape, v) = &self.0[name];
        Tensor::from_vec(v.iter().map(|&x| x as i64).collect(), shape)
    }
    /// Asserts `got` matches the fixture `name` in shape and to 1e-10.
    fn check(&self, name: &str, got: &Var<f64>) {
        let (shape, want) = &self.0[name];
        assert_eq!(got.shape(), shape.as_slice(), "{name}: shape");
        for (i, (g, w)) in got.to_vec().iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-10 * (1.0 + w.abs()), "{name}[{i}]: got {g}, PyTorch {w}");
        }
    }
}

fn close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-10 * (1.0 + w.abs()), "{what}[{i}]: got {g}, reference {w}");
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn log_softmax_rows(x: &[f64], c: usize) -> Vec<f64> {
    x.chunks(c)
        .flat_map(|row| {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            row.iter().map(move |v| v - lse).collect::<Vec<_>>()
        })
        .collect()
}

const REDUCTIONS: [(Reduction, &str); 3] =
    [(Reduction::None, "none"), (Reduction::Mean, "mean"), (Reduction::Sum, "sum")];

fn reduce_ref(v: Vec<f64>, r: Reduction) -> Vec<f64> {
    match r {
        Reduction::None => v,
        Reduction::Mean => vec![mean(&v)],
        Reduction::Sum => vec![v.iter().sum()],
    }
}

#[test]
fn regression_losses_match_hand_loops_and_pytorch() {
    let fx = Fx::load();
    let (x, y) = (fx.var("x"), fx.var("y"));
    let d: Vec<f64> = x.to_vec().iter().zip(y.to_vec()).map(|(a, b)| a - b).collect();
    let huber = |beta: f64| -> Vec<f64> {
        d.iter().map(|v| if v.abs() < beta { 0.5 * v * v / beta } else { v.abs() - 0.5 * beta }).collect()
    };
    for (r, name) in REDUCTIONS {
        let mse = mse_loss_with(&x, &y, r);
        close(&mse.to_vec(), &reduce_ref(d.iter().map(|v| v * v).collect(), r), "mse");
        fx.check(&format!("mse_{name}"), &mse);
        let l1 = l1_loss_with(&x, &y, r);
        close(&l1.to_vec(), &reduce_ref(d.iter().map(|v| v.abs()).collect(), r), "l1");
        fx.check(&format!("l1_{name}"), &l1);
        let sl1 = smooth_l1_loss_with(&x, &y, &SmoothL1Options { beta: 1.0, reduction: r });
        close(&sl1.to_vec(), &reduce_ref(huber(1.0), r), "smooth_l1");
        fx.check(&format!("smooth_l1_{name}"), &sl1);
    }
    let sl1 = smooth_l1_loss_with(&x, &y, &SmoothL1Options { beta: 0.5, ..Default::default() });
    close(&sl1.to_vec(), &[mean(&huber(0.5))], "smooth_l1 beta 0.5");
    fx.check("smooth_l1_beta0.5", &sl1);
    assert_eq!(mse_loss(&x, &y).item(), mse_loss_with(&x, &y, Reduction::Mean).item());
    assert_eq!(l1_loss(&x, &y).item(), l1_loss_with(&x, &y, Reduction::Mean).item());
    let default = SmoothL1Options { beta: 1.0, reduction: Reduction::Mean };
    assert_eq!(smooth_l1_loss(&x, &y).item(), smooth_l1_loss_with(&x, &y, &default).item());
    let beta0 = smooth_l1_loss_with(&x, &y, &SmoothL1Options { beta: 0.0, ..Default::default() });
    assert_eq!(beta0.item(), l1_loss(&x, &y).item());
}

/// Cross-entropy of class indices by hand: per-sample losses and the kept count.
fn ce_ref(logits: &[f64], c: usize, targets: &[i64], eps: f64, ignore: i64) -> (Vec<f64>, usize) {
    let lp = log_softmax_rows(logits, c);
    let mut kept = 0;
    let per = targets
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if t == ignore {
                return 0.0;
            }
            kept += 1;
            let row = &lp[i * c..(i + 1) * c];
            -(1.0 - eps) * row[t as usize] - eps / c as f64 * row.iter().sum::<f64>()
        })
        .collect();
    (per, kept)
}

#[test]
fn cross_entropy_matches_hand_loops_and_pytorch() {
    let fx = Fx::load();
    let logits = fx.var("logits");
    let idx = fx.idx("idx");
    let probs = fx.var("probs");
    let lv = logits.to_vec();
    for (r, name) in REDUCTIONS {
        for (eps, tag) in [(0.0, "ce"), (0.1, "ce_ls")] {
            let opts = CrossEntropyOptions { reduction: r, label_smoothing: eps, ..Default::default() };
            let got = cross_entropy_with(&logits, &idx, &opts);
            close(&got.to_vec(), &reduce_ref(ce_ref(&lv, 5, &idx.to_vec(), eps, -100).0, r), tag);
            fx.check(&format!("{tag}_{name}"), &got);
        }
        for (eps, tag) in [(0.0, "ce_probs"), (0.2, "ce_probs_ls")] {
            let opts = CrossEntropyOptions { reduction: r, label_smoothing: eps, ..Default::default() };
            let got = cross_entropy_probs_with(&logits, &probs, &opts);
            let lp = log_softmax_rows(&lv, 5);
            let pv = probs.to_vec();
            let per: Vec<f64> = (0..4)
                .map(|i| -(0..5).map(|k| ((1.0 - eps) * pv[i * 5 + k] + eps / 5.0) * lp[i * 5 + k]).sum::<f64>())
                .collect();
            close(&got.to_vec(), &reduce_ref(per, r), tag);
            fx.check(&format!("{tag}_{name}"), &got);
        }
    }
    fx.check("ce_mean", &cross_entropy(&logits, &idx));
    fx.check("ce_probs_mean", &cross_entropy_probs(&logits, &probs));

    let idx_ig = fx.idx("idx_ig");
    let (per, kept) = ce_ref(&lv, 5, &idx_ig.to_vec(), 0.0, -100);
    let got = cross_entropy(&logits, &idx_ig);
    close(&got.to_vec(), &[per.iter().sum::<f64>() / kept as f64], "ce ignore");
    fx.check("ce_ignore_mean", &got);
    let ls = CrossEntropyOptions { label_smoothing: 0.1, ..Default::default() };
    fx.check("ce_ignore_ls_mean", &cross_entropy_with(&logits, &idx_ig, &ls));
    let none = CrossEntropyOptions { reduction: Reduction::None, ..Default::default() };
    fx.check("ce_ignore_none", &cross_entropy_with(&logits, &idx_ig, &none));

    let logp = logits.log_softmax(1);
    fx.check("nll_mean", &nll_loss(&logp, &idx));
    let sum = CrossEntropyOptions { reduction: Reduction::Sum, ..Default::default() };
    fx.check("nll_ignore_sum", &nll_loss_with(&logp, &idx_ig, &sum));
    let nll_hand: f64 = idx.to_vec().iter().enumerate().map(|(i, &t)| -logp.to_vec()[i * 5 + t as usize]).sum();
    close(&[nll_loss(&logp, &idx).item()], &[nll_hand / 4.0], "nll");

    let (l3, i3) = (fx.var("logits3"), fx.idx("idx3"));
    fx.check("ce3_mean", &cross_entropy(&l3, &i3));
    fx.check("ce3_none", &cross_entropy_with(&l3, &i3, &none));
}

#[test]
fn bce_with_logits_matches_hand_loops_and_pytorch() {
    let fx = Fx::load();
    let (x, y, pw) = (fx.var("bx"), fx.var("by"), fx.t("pw"));
    let hand = |pos: Option<&[f64]>| -> Vec<f64> {
        let (xv, yv) = (x.to_vec(), y.to_vec());
        (0..12)
            .map(|i| {
                let p = pos.map_or(1.0, |p| p[i % 4]);
                let sig = 1.0 / (1.0 + (-xv[i]).exp());
                -(p * yv[i] * sig.ln() + (1.0 - yv[i]) * (1.0 - sig).ln())
            })
            .collect()
    };
    let got = binary_cross_entropy_with_logits(&x, &y);
    close(&got.to_vec(), &[mean(&hand(None))], "bce");
    fx.check("bce_mean", &got);
    let none = BceWithLogitsOptions { reduction: Reduction::None, pos_weight: None };
    fx.check("bce_none", &binary_cross_entropy_with_logits_with(&x, &y, &none));
    let pwv = pw.to_vec();
    let with_pw = BceWithLogitsOptions { reduction: Reduction::Sum, pos_weight: Some(pw.clone()) };
    let got = binary_cross_entropy_with_logits_with(&x, &y, &with_pw);
    close(&got.to_vec(), &[hand(Some(&pwv)).iter().sum()], "bce pos_weight");
    fx.check("bce_pw_sum", &got);
    let pw_none = BceWithLogitsOptions { reduction: Reduction::None, pos_weight: Some(pw) };
    fx.check("bce_pw_none", &binary_cross_entropy_with_logits_with(&x, &y, &pw_none));
}

#[test]
fn kl_div_matches_hand_loops_and_pytorch() {
    let fx = Fx::load();
    let (input, target) = (fx.var("kin"), fx.var("kt"));
    let per: Vec<f64> = input
        .to_vec()
        .iter()
        .zip(target.to_vec())
        .map(|(i, t)| if t == 0.0 { 0.0 } else { t * (t.ln() - i) })
        .collect();
    for (r, name, want) in [
        (KlReduction::None, "none", per.clone()),
        (KlReduction::Mean, "mean", vec![mean(&per)]),
        (KlReduction::Sum, "sum", vec![per.iter().sum()]),
        (KlReduction::BatchMean, "batchmean", vec![per.iter().sum::<f64>() / 3.0]),
    ] {
        let got = kl_div_with(&input, &target, &KlDivOptions { reduction: r, log_target: false });
        close(&got.to_vec(), &want, "kl");
        fx.check(&format!("kl_{name}"), &got);
    }
    fx.check("kl_mean", &kl_div(&input, &target));
    let opts = KlDivOptions { reduction: KlReduction::BatchMean, log_target: true };
    fx.check("kl_logt_batchmean", &kl_div_with(&input, &fx.var("klt"), &opts));
}

fn grid(shape: &[usize], seed: u64) -> Tensor<f64> {
    // Deterministic, irregular values away from the kinks of |x| and of smooth L1.
    Tensor::from_fn(shape, |i| {
        let v = ((i as u64 * 7919 + seed * 104_729) % 1000) as f64 / 1000.0;
        (v - 0.5) * 3.0 + 0.013
    })
}

fn softmax_rows(t: &Tensor<f64>) -> Tensor<f64> {
    t.softmax(1)
}

#[test]
fn every_loss_passes_gradcheck() {
    let (a, b) = (grid(&[3, 4], 1), grid(&[3, 4], 2));
    for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
        gradcheck(|v| mse_loss_with(&v[0], &v[1], r), &[a.clone(), b.clone()]).unwrap();
        gradcheck(|v| l1_loss_with(&v[0], &v[1], r), &[a.clone(), b.clone()]).unwrap();
        let o = SmoothL1Options { beta: 0.7, reduction: r };
        gradcheck(|v| smooth_l1_loss_with(&v[0], &v[1], &o), &[a.clone(), b.clone()]).unwrap();
        let ce = CrossEntropyOptions { reduction: r, label_smoothing: 0.1, ignore_index: Some(3) };
        let idx = Tensor::from_vec(vec![0i64, 3, 2], &[3]);
        gradcheck(|v| cross_entropy_with(&v[0], &idx, &ce), std::slice::from_ref(&a)).unwrap();
        gradcheck(|v| nll_loss_with(&v[0].log_softmax(1), &idx, &ce), std::slice::from_ref(&a)).unwrap();
        gradcheck(|v| cross_entropy_probs_with(&v[0], &v[1], &ce), &[a.clone(), softmax_rows(&b)]).unwrap();
        let pw =
            BceWithLogitsOptions { reduction: r, pos_weight: Some(Tensor::from_vec(vec![0.5, 1.0, 2.0, 3.0], &[4])) };
        let y = b.sigmoid();
        gradcheck(|v| binary_cross_entropy_with_logits_with(&v[0], &v[1], &pw), &[a.clone(), y.clone()]).unwrap();
    }
    let idx3 = Tensor::from_vec(vec![0i64, 2, 1, 2, 0, 0], &[2, 3]);
    gradcheck(|v| cross_entropy(&v[0], &idx3), &[grid(&[2, 4, 3], 3)]).unwrap();
    for reduction in [KlReduction::None, KlReduction::Mean, KlReduction::Sum, KlReduction::BatchMean] {
        let input = a.log_softmax(1);
        let o = KlDivOptions { reduction, log_target: false };
        gradcheck(|v| kl_div_with(&v[0], &v[1], &o), &[input.clone(), softmax_rows(&b)]).unwrap();
        let o = KlDivOptions { reduction, log_target: true };
        gradcheck(|v| kl_div_with(&v[0], &v[1], &o), &[input, b.log_softmax(1)]).unwrap();
    }
}

#[test]
fn kl_div_gradient_is_finite_at_zero_target_probability() {
    let input = Var::leaf(Tensor::from_vec(vec![-1.0f64, -0.5, -2.0], &[1, 3]));
    let target = Var::leaf(Tensor::from_vec(vec![0.0f64, 0.4, 0.6], &[1, 3]));
    let loss = kl_div(&input, &target);
    let grads = loss.backward();
    assert!(loss.item().is_finite());
    assert!(grads.get(&input).unwrap().to_vec().iter().all(|g| g.is_finite()));
}

#[test]
fn cross_entropy_and_bce_stay_finite_on_huge_logits() {
    let logits = Var::leaf(Tensor::from_vec(vec![1e4f32, -1e4, 0.0, -1e4, 1e4, 5e3, -1e4, -1e4, -1e4], &[3, 3]));
    let targets = Tensor::from_vec(vec![1i64, 0, 2], &[3]);
    let opts = CrossEntropyOptions { label_smoothing: 0.1, ..Default::default() };
    for loss in [cross_entropy(&logits, &targets), cross_entropy_with(&logits, &targets, &opts)] {
        assert!(loss.item().is_finite(), "loss {}", loss.item());
        let g = loss.backward().get(&logits).unwrap().to_vec();
        assert!(g.iter().all(|v| v.is_finite()), "gradient {g:?}");
    }
    // Two samples wrong by a margin of 2e4, one uniform over 3 classes (ln 3).
    let want = (4e4 + 3f32.ln()) / 3.0;
    assert!((cross_entropy(&logits, &targets).item() - want).abs() < 1e-2);
    let probs = Var::constant(Tensor::from_vec(vec![0.0f32, 1.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 1.0], &[3, 3]));
    let loss = cross_entropy_probs(&logits, &probs);
    assert!(loss.item().is_finite());
    assert!(loss.backward().get(&logits).unwrap().to_vec().iter().all(|v| v.is_finite()));

    let y = Var::constant(Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 0.0, 0.3, 0.5, 0.2, 1.0, 0.0], &[3, 3]));
    let loss = binary_cross_entropy_with_logits(&logits, &y);
    assert!(loss.item().is_finite());
    assert!(loss.backward().get(&logits).unwrap().to_vec().iter().all(|v| v.is_finite()));
}

#[test]
fn penalties_sum_over_parameters_and_reach_their_gradients() {
    let w = Param::new(Tensor::from_vec(vec![1.0f64, -2.0, 3.0, -0.5], &[2, 2]));
    let b = Param::new(Tensor::from_vec(vec![0.25f64, -1.0], &[2]));
    let params = [w.clone(), b.clone()];
    assert_eq!(l1_penalty(&params).item(), 1.0 + 2.0 + 3.0 + 0.5 + 0.25 + 1.0);
    assert_eq!(l2_penalty(&params).item(), 1.0 + 4.0 + 9.0 + 0.25 + 0.0625 + 1.0);
    let grads = l2_penalty(&params).backward();
    assert_eq!(grads.get_param(&w).unwrap().to_vec(), vec![2.0, -4.0, 6.0, -1.0]);
    let grads = l1_penalty(&params).backward();
    assert_eq!(grads.get_param(&b).unwrap().to_vec(), vec![1.0, -1.0]);
    assert_eq!(l2_penalty::<f32>(&[]).item(), 0.0);
}

#[test]
#[should_panic(expected = "cross_entropy: target 5 is out of range for 5 classes")]
fn cross_entropy_rejects_out_of_range_target() {
    let logits = Var::constant(Tensor::<f32>::zeros(&[2, 5]));
    cross_entropy(&logits, &Tensor::from_vec(vec![0i64, 5], &[2]));
}

#[test]
#[should_panic(expected = "cross_entropy: input shape [2, 5] needs target shape [2], got [3]")]
fn cross_entropy_rejects_wrong_target_shape() {
    let logits = Var::constant(Tensor::<f32>::zeros(&[2, 5]));
    cross_entropy(&logits, &Tensor::from_vec(vec![0i64, 1, 2], &[3]));
}

#[test]
#[should_panic(expected = "mse_loss: input shape [2, 3] and target shape [3, 2] differ")]
fn mse_rejects_mismatched_shapes() {
    let a = Var::constant(Tensor::<f32>::zeros(&[2, 3]));
    let b = Var::constant(Tensor::<f32>::zeros(&[3, 2]));
    mse_loss(&a, &b);
}
