//! Layers against references computed by hand (loops over plain slices), gradients against
//! finite differences, initialisation statistics, parameter naming, state dicts and modes.

use std::collections::BTreeMap;

use ferrograd_autograd::check::gradcheck;
use ferrograd_autograd::{Param, Var};
use ferrograd_nn::init::{self, FanMode, Nonlinearity};
use ferrograd_nn::layers::{
    AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, Dropout, Embedding, Flatten,
    LayerNorm, LeakyReLU, Linear, LinearConfig, LogSoftmax, MaxPool2d, ReLU, Sequential, SiLU, Sigmoid, Softmax, Tanh,
    GELU,
};
use ferrograd_nn::{Module, NnError};
use ferrograd_tensor::{Pool2dOptions, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_normal(shape, 0.0, 1.0, &mut rng(seed))
}

fn c(t: &Tensor<f64>) -> Var<f64> {
    Var::constant(t.clone())
}

#[track_caller]
fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "element {i}: got {g}, want {w}");
    }
}

// ---------------------------------------------------------------- Linear

fn linear_reference(x: &[f64], w: &[f64], b: Option<&[f64]>, rows: usize, inf: usize, outf: usize) -> Vec<f64> {
    let mut y = vec![0.0; rows * outf];
    for r in 0..rows {
        for o in 0..outf {
            let mut acc = b.map_or(0.0, |b| b[o]);
            for i in 0..inf {
                acc += x[r * inf + i] * w[o * inf + i];
            }
            y[r * outf + o] = acc;
        }
    }
    y
}

#[test]
fn linear_matches_loop_with_and_without_bias_and_batch_dims() {
    let fc = Linear::<f64>::new(3, 2, &mut rng(0));
    assert_eq!(fc.weight.shape(), vec![2, 3]);
    assert_eq!((fc.in_features(), fc.out_features()), (3, 2));
    let x = randn(&[2, 4, 3], 1);
    let y = fc.forward(&c(&x));
    assert_eq!(y.shape(), &[2, 4, 2]);
    let b = fc.bias.as_ref().unwrap().value().to_vec();
    let want = linear_reference(&x.to_vec(), &fc.weight.value().to_vec(), Some(&b), 8, 3, 2);
    assert_close(&y.to_vec(), &want, 1e-12);

    let nb = Linear::<f64>::with_config(3, 2, LinearConfig { bias: false }, &mut rng(0));
    assert!(nb.bias.is_none());
    assert_eq!(nb.params().len(), 1);
    let want = linear_reference(&x.to_vec(), &nb.weight.value().to_vec(), None, 8, 3, 2);
    assert_close(&nb.forward(&c(&x)).to_vec(), &want, 1e-12);
}

#[test]
#[should_panic(expected = "Linear: input shape [4, 5]")]
fn linear_refuses_wrong_feature_count() {
    Linear::<f64>::new(3, 2, &mut rng(0)).forward(&c(&Tensor::zeros(&[4, 5])));
}

#[test]
fn linear_gradcheck() {
    let fc = Linear::<f64>::new(3, 2, &mut rng(0));
    let inputs = [randn(&[4, 3], 1), fc.weight.value(), fc.bias.as_ref().unwrap().value()];
    gradcheck(|v| fc.forward_with(&v[0], &v[1], Some(&v[2])), &inputs).unwrap();
}

#[test]
fn linear_param_gradients_map_back_to_params() {
    let fc = Linear::<f64>::new(3, 2, &mut rng(0));
    let x = randn(&[4, 3], 1);
    let grads = fc.forward(&c(&x)).sum().backward();
    // d sum(x W^T + b) / dW[o, i] = sum_r x[r, i]; / db[o] = rows.
    let col_sums = x.sum_dims(&[0], false).to_vec();
    let gw = grads.get_param(&fc.weight).unwrap().to_vec();
    assert_close(&gw, &[col_sums.clone(), col_sums].concat(), 1e-12);
    assert_eq!(grads.get_param(fc.bias.as_ref().unwrap()).unwrap().to_vec(), vec![4.0, 4.0]);
}

// ---------------------------------------------------------------- Conv

/// Direct 2-D cross-correlation with stride, zero padding, dilation and groups.
#[allow(clippy::too_many_arguments)]
fn conv2d_reference(
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    b: Option<&Tensor<f64>>,
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
) -> (Vec<f64>, Vec<usize>) {
    let (n, cin, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (cout, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    assert_eq!(cg * groups, cin);
    let ho = (h + 2 * pad - dil * (kh - 1) - 1) / stride + 1;
    let wo = (wd + 2 * pad - dil * (kw - 1) - 1) / stride + 1;
    let mut out = vec![0.0; n * cout * ho * wo];
    let opg = cout / groups;
    for ni in 0..n {
        for o in 0..cout {
            let g = o / opg;
            for i in 0..ho {
                for j in 0..wo {
                    let mut acc = b.map_or(0.0, |b| b.at(&[o]));
                    for ci in 0..cg {
                        for a in 0..kh {
                            for bb in 0..kw {
                                let hi = (i * stride + a * dil) as isize - pad as isize;
                                let wi = (j * stride + bb * dil) as isize - pad as isize;
                                if hi >= 0 && wi >= 0 && (hi as usize) < h && (wi as usize) < wd {
                                    acc += x.at(&[ni, g * cg + ci, hi as usize, wi as usize]) * w.at(&[o, ci, a, bb]);
                                }
                            }
                        }
                    }
                    out[((ni * cout + o) * ho + i) * wo + j] = acc;
                }
            }
        }
    }
    (out, vec![n, cout, ho, wo])
}

#[test]
fn conv2d_matches_direct_loop() {
    let cfg = Conv2dConfig { stride: [2, 2], padding: [1, 1], dilation: [1, 1], groups: 2, bias: true };
    let conv = Conv2d::<f64>::with_config(4, 6, [3, 3], cfg, &mut rng(3));
    assert_eq!(conv.weight.shape(), vec![6, 2, 3, 3]);
    let x = randn(&[2, 4, 5, 6], 4);
    let (want, shape) =
        conv2d_reference(&x, &conv.weight.value(), Some(&conv.bias.as_ref().unwrap().value()), 2, 1, 1, 2);
    let y = conv.forward(&c(&x));
    assert_eq!(y.shape(), shape.as_slice());
    assert_close(&y.to_vec(), &want, 1e-12);
}

#[test]
fn conv1d_matches_direct_loop_through_conv2d_reference() {
    let cfg = Conv1dConfig { stride: 1, padding: 2, dilation: 2, groups: 1, bias: true };
    let conv = Conv1d::<f64>::with_config(3, 4, 3, cfg, &mut rng(5));
    assert_eq!(conv.weight.shape(), vec![4, 3, 3]);
    let x = randn(&[2, 3, 7], 6);
    // A 1-D convolution is a 2-D one over height 1 with padding only along width; pad by hand.
    let xp = x.pad(&[(0, 0), (0, 0), (2, 2)], 0.0).unsqueeze(2);
    let w = conv.weight.value().unsqueeze(2);
    let (want, shape) = conv2d_reference(&xp, &w, Some(&conv.bias.as_ref().unwrap().value()), 1, 0, 2, 1);
    let y = conv.forward(&c(&x));
    assert_eq!(y.shape(), &[shape[0], shape[1], shape[3]]);
    assert_close(&y.to_vec(), &want, 1e-12);
}

#[test]
fn conv_gradchecks() {
    let cfg = Conv2dConfig { stride: [2, 1], padding: [1, 0], dilation: [1, 1], groups: 2, bias: true };
    let conv = Conv2d::<f64>::with_config(2, 2, [2, 2], cfg, &mut rng(7));
    let inputs = [randn(&[1, 2, 4, 3], 8), conv.weight.value(), conv.bias.as_ref().unwrap().value()];
    gradcheck(|v| conv.forward_with(&v[0], &v[1], Some(&v[2])), &inputs).unwrap();

    let conv1 =
        Conv1d::<f64>::with_config(2, 3, 2, Conv1dConfig { stride: 2, padding: 1, ..Default::default() }, &mut rng(9));
    let inputs = [randn(&[2, 2, 5], 10), conv1.weight.value(), conv1.bias.as_ref().unwrap().value()];
    gradcheck(|v| conv1.forward_with(&v[0], &v[1], Some(&v[2])), &inputs).unwrap();
}

#[test]
fn conv_default_init_uses_fan_in_with_receptive_field() {
    let conv = Conv2d::<f64>::new(4, 8, [3, 3], &mut rng(11));
    let bound = 1.0 / 36f64.sqrt();
    let w = conv.weight.value().to_vec();
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > 0.8 * bound));
    assert!(conv.bias.as_ref().unwrap().value().to_vec().iter().all(|v| v.abs() <= bound));
}

// ---------------------------------------------------------------- Pooling

#[test]
fn pools_match_hand_values_and_gradcheck() {
    let x = Tensor::from_vec((0..16).map(|v| ((v * 7) % 16) as f64).collect(), &[1, 1, 4, 4]);
    let xs = x.to_vec();
    let window =
        |i: usize, j: usize| [xs[8 * i + 2 * j], xs[8 * i + 2 * j + 1], xs[8 * i + 2 * j + 4], xs[8 * i + 2 * j + 5]];
    let want_max: Vec<f64> = (0..2)
        .flat_map(|i| (0..2).map(move |j| (i, j)))
        .map(|(i, j)| window(i, j).into_iter().fold(f64::MIN, f64::max))
        .collect();
    let want_avg: Vec<f64> =
        (0..2).flat_map(|i| (0..2).map(move |j| (i, j))).map(|(i, j)| window(i, j).iter().sum::<f64>() / 4.0).collect();
    assert_eq!(MaxPool2d::new([2, 2]).forward(&c(&x)).to_vec(), want_max);
    assert_eq!(AvgPool2d::new([2, 2]).forward(&c(&x)).to_vec(), want_avg);

    let opts = Pool2dOptions { stride: [1, 1], padding: [1, 1], ..Pool2dOptions::new([3, 3]) };
    let input = randn(&[1, 2, 4, 4], 12);
    gradcheck(|v| MaxPool2d::with_options(opts).forward(&v[0]), std::slice::from_ref(&input)).unwrap();
    gradcheck(|v| AvgPool2d::with_options(opts).forward(&v[0]), &[input]).unwrap();
}

// ---------------------------------------------------------------- BatchNorm

/// Per-channel batch statistics of `[N, C, S]` data: (mean, biased var).
fn channel_stats(x: &[f64], n: usize, ch: usize, s: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (n * s) as f64;
    let mut mean = vec![0.0; ch];
    let mut var = vec![0.0; ch];
    for c in 0..ch {
        let vals: Vec<f64> = (0..n).flat_map(|ni| (0..s).map(move |si| x[(ni * ch + c) * s + si])).collect();
        mean[c] = vals.iter().sum::<f64>() / m;
        var[c] = vals.iter().map(|v| (v - mean[c]).powi(2)).sum::<f64>() / m;
    }
    (mean, var)
}

#[allow(clippy::too_many_arguments)]
fn normalise(x: &[f64], n: usize, ch: usize, s: usize, mean: &[f64], var: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = x.to_vec();
    for ni in 0..n {
        for c in 0..ch {
            for si in 0..s {
                let k = (ni * ch + c) * s + si;
                out[k] = (x[k] - mean[c]) / (var[c] + 1e-5).sqrt() * w[c] + b[c];
            }
        }
    }
    out
}

#[test]
fn batchnorm_train_eval_and_running_stats_match_hand_computation() {
    let (n, ch, s) = (4, 3, 5);
    let w = vec![1.5, -0.5, 2.0];
    let b = vec![0.1, 0.2, -0.3];
    // [N, C, L] for BatchNorm1d and the same data as [N, C, H, W] for BatchNorm2d.
    let x1 = randn(&[n, ch, s], 13).mul_scalar(3.0).add_scalar(1.0);
    let x2 = x1.reshape(&[n, ch, 1, s]);
    let bn1 = BatchNorm1d::<f64>::new(ch);
    let bn2 = BatchNorm2d::<f64>::new(ch);
    for bn in [&bn1 as &dyn Module<f64>, &bn2] {
        let named: Vec<String> = bn.named_parameters().into_iter().map(|(k, _)| k).collect();
        assert_eq!(named, ["weight", "bias"]);
        let buffers: Vec<String> = bn.named_buffers().into_iter().map(|(k, _)| k).collect();
        assert_eq!(buffers, ["running_mean", "running_var"]);
        bn.parameters()[0].set(Tensor::from_vec(w.clone(), &[ch]));
        bn.parameters()[1].set(Tensor::from_vec(b.clone(), &[ch]));
    }
    let xs = x1.to_vec();
    let (mean, var) = channel_stats(&xs, n, ch, s);
    let want = normalise(&xs, n, ch, s, &mean, &var, &w, &b);
    assert_close(&bn1.forward(&c(&x1)).to_vec(), &want, 1e-10);
    assert_close(&bn2.forward(&c(&x2)).to_vec(), &want, 1e-10);

    let m = (n * s) as f64;
    let rm: Vec<f64> = mean.iter().map(|v| 0.1 * v).collect();
    let rv: Vec<f64> = var.iter().map(|v| 0.9 + 0.1 * v * m / (m - 1.0)).collect();
    for bn in [&bn1.running_mean, &bn2.running_mean] {
        assert_close(&bn.value().to_vec(), &rm, 1e-12);
    }
    for bn in [&bn1.running_var, &bn2.running_var] {
        assert_close(&bn.value().to_vec(), &rv, 1e-12);
    }

    // A second step moves the running stats again from where they are.
    bn1.forward(&c(&x1));
    let rm2: Vec<f64> = rm.iter().zip(&mean).map(|(r, v)| 0.9 * r + 0.1 * v).collect();
    assert_close(&bn1.running_mean.value().to_vec(), &rm2, 1e-12);

    // Evaluation normalises with the running statistics and leaves them alone.
    bn2.eval();
    let want_eval = normalise(&xs, n, ch, s, &rm, &rv, &w, &b);
    assert_close(&bn2.forward(&c(&x2)).to_vec(), &want_eval, 1e-10);
    assert_close(&bn2.running_mean.value().to_vec(), &rm, 1e-12);
}

/// Training-mode gradients (input, weight, bias) of `sum(y * r)` against the textbook formula
/// in loops: `gb = sum(g)`, `gw = sum(g x̂)`, `gx = w rstd (g - gb / m - x̂ gw / m)`; on `[N, C]`
/// (Var ops), and `[N, C, L]` and `[N, C, H, W]` with rows of 40 and 36 (the fused op).
#[test]
fn batchnorm_gradients_match_hand_computation() {
    for (shape, seed) in [(vec![6, 3], 40), (vec![4, 3, 40], 41), (vec![3, 2, 4, 9], 42)] {
        let (n, ch) = (shape[0], shape[1]);
        let s: usize = shape[2..].iter().product();
        let x = randn(&shape, seed).mul_scalar(2.0).add_scalar(0.5);
        let r = randn(&shape, seed + 100);
        let (w, b) = (randn(&[ch], seed + 200), randn(&[ch], seed + 300));
        let (xv, wv, bv) = (Var::leaf(x.clone()), Var::leaf(w.clone()), Var::leaf(b.clone()));
        let y = if shape.len() == 4 {
            BatchNorm2d::<f64>::new(ch).forward_with(&xv, Some(&wv), Some(&bv))
        } else {
            BatchNorm1d::<f64>::new(ch).forward_with(&xv, Some(&wv), Some(&bv))
        };
        let grads = (&y * &c(&r)).sum().backward();

        let (xs, gs, ws) = (x.to_vec(), r.to_vec(), w.to_vec());
        let (mean, var) = channel_stats(&xs, n, ch, s);
        let m = (n * s) as f64;
        let at = |ni: usize, c: usize, si: usize| (ni * ch + c) * s + si;
        let (mut gw, mut gb, mut gx) = (vec![0.0; ch], vec![0.0; ch], vec![0.0; xs.len()]);
        for c in 0..ch {
            let rstd = 1.0 / (var[c] + 1e-5).sqrt();
            let xhat = |k: usize| (xs[k] - mean[c]) * rstd;
            for ni in 0..n {
                for si in 0..s {
                    let k = at(ni, c, si);
                    gb[c] += gs[k];
                    gw[c] += gs[k] * xhat(k);
                }
            }
            for ni in 0..n {
                for si in 0..s {
                    let k = at(ni, c, si);
                    gx[k] = ws[c] * rstd * (gs[k] - gb[c] / m - xhat(k) * gw[c] / m);
                }
            }
        }
        assert_close(&grads.get(&xv).unwrap().to_vec(), &gx, 1e-10);
        assert_close(&grads.get(&wv).unwrap().to_vec(), &gw, 1e-10);
        assert_close(&grads.get(&bv).unwrap().to_vec(), &gb, 1e-10);
    }
}

#[test]
fn batchnorm1d_accepts_2d_input() {
    let bn = BatchNorm1d::<f64>::new(2);
    let x = Tensor::from_vec(vec![1.0, 10.0, 3.0, 20.0], &[2, 2]);
    let y = bn.forward(&c(&x)).to_vec();
    // Channel 0 holds 1, 3 (mean 2, biased var 1); channel 1 holds 10, 20 (mean 15, var 25).
    let e0 = 1.0 / (1.0 + 1e-5f64).sqrt();
    let e1 = 5.0 / (25.0 + 1e-5f64).sqrt();
    assert_close(&y, &[-e0, -e1, e0, e1], 1e-12);
}

#[test]
#[should_panic(expected = "more than 1 value per channel")]
fn batchnorm_refuses_single_value_per_channel_in_training() {
    BatchNorm1d::<f64>::new(2).forward(&c(&Tensor::zeros(&[1, 2])));
}

#[test]
fn batchnorm_and_layernorm_gradcheck() {
    let bn = BatchNorm2d::<f64>::new(2);
    let inputs = [randn(&[3, 2, 2, 2], 14), randn(&[2], 15), randn(&[2], 16)];
    gradcheck(|v| bn.forward_with(&v[0], Some(&v[1]), Some(&v[2])), &inputs).unwrap();
    bn.eval();
    gradcheck(|v| bn.forward_with(&v[0], Some(&v[1]), Some(&v[2])), &inputs).unwrap();

    let bn1 = BatchNorm1d::<f64>::new(3);
    let inputs = [randn(&[4, 3], 17), randn(&[3], 18), randn(&[3], 19)];
    gradcheck(|v| bn1.forward_with(&v[0], Some(&v[1]), Some(&v[2])), &inputs).unwrap();

    let ln = LayerNorm::<f64>::new(&[2, 3]);
    let inputs = [randn(&[2, 2, 3], 20), randn(&[2, 3], 21), randn(&[2, 3], 22)];
    gradcheck(|v| ln.forward_with(&v[0], Some(&v[1]), Some(&v[2])), &inputs).unwrap();
}

#[test]
fn layernorm_matches_hand_computation() {
    let ln = LayerNorm::<f64>::new(&[2, 3]);
    let w = randn(&[2, 3], 23);
    let b = randn(&[2, 3], 24);
    ln.weight.as_ref().unwrap().set(w.clone());
    ln.bias.as_ref().unwrap().set(b.clone());
    let x = randn(&[4, 2, 3], 25);
    let xs = x.to_vec();
    let mut want = vec![0.0; xs.len()];
    for r in 0..4 {
        let row = &xs[r * 6..(r + 1) * 6];
        let mean = row.iter().sum::<f64>() / 6.0;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 6.0;
        for k in 0..6 {
            want[r * 6 + k] = (row[k] - mean) / (var + 1e-5).sqrt() * w.to_vec()[k] + b.to_vec()[k];
        }
    }
    assert_close(&ln.forward(&c(&x)).to_vec(), &want, 1e-10);
    let names: Vec<String> = ln.named_parameters().into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["weight", "bias"]);
}

// ---------------------------------------------------------------- Dropout

#[test]
fn dropout_scales_zeroes_about_p_and_repeats_with_the_seed() {
    let x = Var::constant(Tensor::<f64>::ones(&[20_000]));
    let p = 0.3;
    let d = Dropout::new(p, 7);
    let y = d.forward(&x).to_vec();
    let zeros = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
    // Binomial std at n = 20000 is 0.0032; allow five of them.
    assert!((zeros - p).abs() < 0.017, "dropped fraction {zeros}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / (1.0 - p)).abs() < 1e-12));

    assert_eq!(Dropout::new(p, 7).forward(&x).to_vec(), y, "same seed, same mask");
    assert_ne!(Dropout::new(p, 8).forward(&x).to_vec(), y, "different seed, different mask");
    assert_ne!(d.forward(&x).to_vec(), y, "the next call draws a new mask");

    // The gradient goes through the kept elements with the same scale.
    let leaf = Var::leaf(Tensor::<f64>::ones(&[100]));
    let d2 = Dropout::new(0.5, 1);
    let out = d2.forward(&leaf);
    let g = out.sum().backward();
    assert_eq!(g.get(&leaf).unwrap().to_vec(), out.to_vec());

    d.eval();
    assert_eq!(d.forward(&x).to_vec(), x.to_vec());
    assert_eq!(Dropout::new(1.0, 0).forward(&x).to_vec(), vec![0.0; 20_000]);
}

#[test]
#[should_panic(expected = "Dropout: probability 1.5")]
fn dropout_refuses_bad_probability() {
    Dropout::new(1.5, 0);
}

// ---------------------------------------------------------------- Embedding

#[test]
fn embedding_looks_up_rows_and_accumulates_gradients() {
    let emb = Embedding::<f64>::new(5, 3, &mut rng(26));
    let table = emb.weight.value();
    let idx = Tensor::from_vec(vec![4i64, 0, 4, 2], &[2, 2]);
    let y = emb.forward_indices(&idx);
    assert_eq!(y.shape(), &[2, 2, 3]);
    let want: Vec<f64> = [4, 0, 4, 2].iter().flat_map(|&r| table.select(0, r).to_vec()).collect();
    assert_eq!(y.to_vec(), want);
    let g = y.sum().backward();
    let counts = [1.0, 0.0, 1.0, 0.0, 2.0];
    let want_g: Vec<f64> = counts.iter().flat_map(|&k| [k; 3]).collect();
    assert_eq!(g.get_param(&emb.weight).unwrap().to_vec(), want_g);

    // Module::forward reads whole-number floats as indices.
    let via_module = emb.forward(&Var::constant(Tensor::from_vec(vec![4.0, 0.0, 4.0, 2.0], &[2, 2])));
    assert_eq!(via_module.to_vec(), want);

    gradcheck(|v| emb.forward_indices_with(&idx, &v[0]), &[table]).unwrap();
}

#[test]
#[should_panic(expected = "Embedding: index 5 is out of range for a table of 5")]
fn embedding_refuses_out_of_range_index() {
    Embedding::<f64>::new(5, 3, &mut rng(0)).forward_indices(&Tensor::from_vec(vec![5i64], &[1]));
}

#[test]
#[should_panic(expected = "not a whole number")]
fn embedding_module_forward_refuses_fractional_index() {
    Embedding::<f64>::new(5, 3, &mut rng(0)).forward(&Var::constant(Tensor::from_vec(vec![1.5], &[1])));
}

#[test]
fn embedding_is_standard_normal() {
    let w = Embedding::<f64>::new(200, 100, &mut rng(27)).weight.value();
    let (mean, std) = (w.mean().item(), w.std(1).item());
    // 20000 samples: the mean's standard error is 0.007, the std's about 0.005.
    assert!(mean.abs() < 0.035 && (std - 1.0).abs() < 0.025, "mean {mean}, std {std}");
}

// ---------------------------------------------------------------- Activations, Flatten

#[test]
fn activations_match_their_formulas() {
    let x = Tensor::from_vec(vec![-2.0, -0.5, 0.0, 0.5, 3.0, 1.0], &[2, 3]);
    let xs = x.to_vec();
    let erf_gelu = x.gelu().to_vec();
    let cases: Vec<(Box<dyn Module<f64>>, Vec<f64>)> = vec![
        (Box::new(ReLU), xs.iter().map(|v: &f64| v.max(0.0)).collect()),
        (Box::new(LeakyReLU::new(0.2)), xs.iter().map(|&v| if v >= 0.0 { v } else { 0.2 * v }).collect()),
        (Box::new(LeakyReLU::default()), xs.iter().map(|&v| if v >= 0.0 { v } else { 0.01 * v }).collect()),
        (Box::new(Sigmoid), xs.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()),
        (Box::new(Tanh), xs.iter().map(|v| v.tanh()).collect()),
        (Box::new(SiLU), xs.iter().map(|v| v / (1.0 + (-v).exp())).collect()),
        (Box::new(GELU::default()), erf_gelu),
        (
            Box::new(GELU { tanh_approximation: true }),
            xs.iter()
                .map(|v| 0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh()))
                .collect(),
        ),
    ];
    for (i, (layer, want)) in cases.iter().enumerate() {
        let got = layer.forward(&c(&x)).to_vec();
        assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12), "activation {i}: {got:?} vs {want:?}");
    }
    // GELU(0.5) = 0.5 * Φ(0.5) = 0.5 * 0.691462461274013
    assert!((GELU::default().forward(&c(&x)).to_vec()[3] - 0.345731230637007).abs() < 1e-12);

    let soft = Softmax::new(1).forward(&c(&x)).to_vec();
    let logsoft = LogSoftmax::new(-1).forward(&c(&x)).to_vec();
    for r in 0..2 {
        let row = &xs[r * 3..r * 3 + 3];
        let z: f64 = row.iter().map(|v| v.exp()).sum();
        for k in 0..3 {
            assert!((soft[r * 3 + k] - row[k].exp() / z).abs() < 1e-12);
            assert!((logsoft[r * 3 + k] - (row[k] - z.ln())).abs() < 1e-12);
        }
    }
}

#[test]
fn flatten_defaults_and_ranges() {
    let x = c(&Tensor::zeros(&[2, 3, 4, 5]));
    assert_eq!(Flatten::default().forward(&x).shape(), &[2, 60]);
    assert_eq!(Flatten::new(0, 1).forward(&x).shape(), &[6, 4, 5]);
    assert_eq!(Flatten::new(-2, -1).forward(&x).shape(), &[2, 3, 20]);
}

// ---------------------------------------------------------------- init

#[test]
fn init_statistics_match_their_formulas() {
    let shape = [256, 128];
    let n = (256 * 128) as f64;
    let check = |t: Tensor<f64>, std: f64, bound: Option<f64>, what: &str| {
        let (m, s) = (t.mean().item(), t.std(0).item());
        // Standard errors at 32768 samples: mean std/181, std below 1% of std.
        assert!(m.abs() < 5.0 * std / n.sqrt(), "{what}: mean {m}");
        assert!((s / std - 1.0).abs() < 0.02, "{what}: std {s}, want {std}");
        if let Some(b) = bound {
            let max = t.abs().max().item();
            assert!(max <= b && max > 0.99 * b, "{what}: max |x| {max}, bound {b}");
        }
    };
    let mut r = rng(28);
    // PyTorch's Linear default: a = sqrt(5) gives bound 1/sqrt(fan_in).
    let b = 1.0 / 128f64.sqrt();
    let t = init::kaiming_uniform::<f64>(&shape, 5f64.sqrt(), FanMode::FanIn, Nonlinearity::LeakyRelu, &mut r);
    check(t, b / 3f64.sqrt(), Some(b), "kaiming_uniform(a=sqrt 5)");
    let t = init::kaiming_uniform::<f64>(&shape, 0.0, FanMode::FanOut, Nonlinearity::Relu, &mut r);
    check(t, (2.0 / 256f64).sqrt(), Some((6.0 / 256f64).sqrt()), "kaiming_uniform(relu, fan_out)");
    let t = init::kaiming_normal::<f64>(&shape, 0.0, FanMode::FanIn, Nonlinearity::Relu, &mut r);
    check(t, (2.0 / 128f64).sqrt(), None, "kaiming_normal(relu)");
    let t = init::xavier_uniform::<f64>(&shape, 2.0, &mut r);
    check(t, 2.0 * (2.0 / 384f64).sqrt(), Some(2.0 * (6.0 / 384f64).sqrt()), "xavier_uniform(gain 2)");
    let t = init::xavier_normal::<f64>(&shape, 1.0, &mut r);
    check(t, (2.0 / 384f64).sqrt(), None, "xavier_normal");
    let t = init::normal::<f64>(&shape, 0.0, 0.02, &mut r);
    check(t, 0.02, None, "normal");
    let t = init::uniform::<f64>(&shape, -0.5, 0.5, &mut r);
    check(t, 1.0 / 12f64.sqrt(), Some(0.5), "uniform");

    assert_eq!(init::fan_in_and_fan_out(&[8, 4, 3, 3]), (36, 72));
    assert_eq!(init::calculate_gain(Nonlinearity::LeakyRelu, 5f64.sqrt()), (1.0f64 / 3.0).sqrt());
    assert_eq!(init::calculate_gain(Nonlinearity::Tanh, 0.0), 5.0 / 3.0);

    // Seeded: the same generator state gives the same tensor.
    let a = init::xavier_uniform::<f32>(&[4, 4], 1.0, &mut rng(1));
    assert_eq!(a.to_vec(), init::xavier_uniform::<f32>(&[4, 4], 1.0, &mut rng(1)).to_vec());
}

#[test]
#[should_panic(expected = "fewer than 2 dimensions")]
fn fans_need_two_dimensions() {
    init::fan_in_and_fan_out(&[5]);
}

// ---------------------------------------------------------------- Module tree

struct Encoder {
    fc1: Linear<f64>,
    fc2: Linear<f64>,
}

impl Module<f64> for Encoder {
    fn forward(&self, x: &Var<f64>) -> Var<f64> {
        self.fc2.forward(&self.fc1.forward(x).relu())
    }
    fn children(&self) -> Vec<(String, &dyn Module<f64>)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

struct Model {
    encoder: Encoder,
    norm: BatchNorm1d<f64>,
    drop: Dropout,
    head: Sequential<f64>,
    scale: Param<f64>,
}

impl Model {
    fn new(seed: u64) -> Self {
        let mut r = rng(seed);
        Model {
            encoder: Encoder { fc1: Linear::new(3, 5, &mut r), fc2: Linear::new(5, 4, &mut r) },
            norm: BatchNorm1d::new(4),
            drop: Dropout::new(0.5, seed),
            head: Sequential::new().add(Linear::new(4, 4, &mut r)).add(ReLU).add(Linear::new(4, 2, &mut r)),
            scale: Param::new(Tensor::from_vec(vec![seed as f64 + 1.0], &[1])),
        }
    }
}

impl Module<f64> for Model {
    fn forward(&self, x: &Var<f64>) -> Var<f64> {
        let h = self.drop.forward(&self.norm.forward(&self.encoder.forward(x)));
        &self.head.forward(&h) * &self.scale.var()
    }
    fn params(&self) -> Vec<(&str, &Param<f64>)> {
        vec![("scale", &self.scale)]
    }
    fn children(&self) -> Vec<(String, &dyn Module<f64>)> {
        vec![
            ("encoder".into(), &self.encoder),
            ("norm".into(), &self.norm),
            ("drop".into(), &self.drop),
            ("head".into(), &self.head),
        ]
    }
}

#[test]
fn named_parameters_follow_pytorch_dotted_names() {
    let m = Model::new(0);
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "scale",
            "encoder.fc1.weight",
            "encoder.fc1.bias",
            "encoder.fc2.weight",
            "encoder.fc2.bias",
            "norm.weight",
            "norm.bias",
            "head.0.weight",
            "head.0.bias",
            "head.2.weight",
            "head.2.bias",
        ]
    );
    let buffers: Vec<String> = m.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(buffers, ["norm.running_mean", "norm.running_var"]);
    assert_eq!(m.state_dict().len(), 13);
    assert_eq!(m.parameters().iter().map(Param::numel).sum::<usize>(), 1 + 20 + 24 + 8 + 20 + 10);
    assert_eq!(m.head.len(), 3);
    assert!(m.head.get(0).unwrap().params().len() == 2 && m.head.get(1).unwrap().params().is_empty());
}

#[test]
fn state_dict_round_trip_restores_outputs_and_bad_state_is_refused() {
    let a = Model::new(1);
    let b = Model::new(2);
    a.train(true);
    a.forward(&c(&randn(&[6, 3], 30))); // moves a's running statistics away from their start
    a.eval();
    b.eval();
    let x = c(&randn(&[6, 3], 31));
    let ya = a.forward(&x).to_vec();
    assert_ne!(b.forward(&x).to_vec(), ya);
    b.load_state_dict(&a.state_dict()).unwrap();
    assert_eq!(b.forward(&x).to_vec(), ya);

    // A wrong shape anywhere refuses the whole state, leaving every tensor as it was.
    let c_model = Model::new(3);
    let before = c_model.state_dict();
    let mut bad: BTreeMap<String, Tensor<f64>> = a.state_dict();
    bad.insert("head.2.bias".into(), Tensor::zeros(&[3]));
    match c_model.load_state_dict(&bad) {
        Err(NnError::ShapeMismatch { name, expected, found }) => {
            assert_eq!((name.as_str(), expected, found), ("head.2.bias", vec![2], vec![3]));
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let after = c_model.state_dict();
    assert!(before.iter().all(|(k, v)| after[k].to_vec() == v.to_vec()), "module changed by a refused load");

    let mut missing = a.state_dict();
    missing.remove("norm.running_var");
    assert!(matches!(c_model.load_state_dict(&missing), Err(NnError::MissingTensor { .. })));
}

#[test]
fn train_and_eval_reach_every_child() {
    let m = Model::new(4);
    assert!(m.norm.is_training() && m.drop.is_training());
    m.eval();
    assert!(!m.norm.is_training() && !m.drop.is_training());
    let x = c(&randn(&[5, 3], 32));
    assert_eq!(m.forward(&x).to_vec(), m.forward(&x).to_vec(), "eval is deterministic");
    m.train(true);
    assert!(m.norm.is_training() && m.drop.is_training());

    let seq =
        Sequential::<f64>::new().add(Linear::new(3, 4, &mut rng(0))).add(BatchNorm1d::new(4)).add(Dropout::new(0.5, 0));
    seq.eval();
    let y1 = seq.forward(&x).to_vec();
    assert_eq!(y1, seq.forward(&x).to_vec());
}

#[test]
fn gradients_of_a_whole_model_reach_every_parameter() {
    let m = Model::new(5);
    let grads = m.forward(&c(&randn(&[6, 3], 33))).square().sum().backward();
    for (name, p) in m.named_parameters() {
        let g = grads.get_param(&p).unwrap_or_else(|| panic!("no gradient for {name}"));
        assert_eq!(g.shape(), p.shape().as_slice(), "{name}");
    }
}

// ---------------------------------------------------------------- PyTorch references

/// `fixtures/layers.txt`, written by `fixtures/gen_layers.py` with torch.nn.
fn torch_fixture() -> BTreeMap<String, Tensor<f64>> {
    let text = include_str!("fixtures/layers.txt");
    text.lines()
        .map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next().expect("name").to_string();
            let dims = parts.next().expect("dims");
            let shape: Vec<usize> =
                if dims == "scalar" { Vec::new() } else { dims.split(',').map(|d| d.parse().expect("dim")).collect() };
            let values: Vec<f64> = parts.map(|v| v.parse().expect("value")).collect();
            (name, Tensor::from_vec(values, &shape))
        })
        .collect()
}

#[test]
fn layers_match_pytorch_references() {
    use ferrograd_nn::layers::BatchNormConfig;
    let t = torch_fixture();
    let close = |got: &Var<f64>, key: &str| assert_close(&got.to_vec(), &t[key].to_vec(), 1e-10);

    let bn = BatchNorm2d::<f64>::new(3);
    bn.weight.as_ref().unwrap().set(t["bn.weight"].clone());
    bn.bias.as_ref().unwrap().set(t["bn.bias"].clone());
    close(&bn.forward(&c(&t["bn.x1"])), "bn.y1");
    close(&bn.forward(&c(&t["bn.x2"])), "bn.y2");
    assert_close(&bn.running_mean.value().to_vec(), &t["bn.running_mean"].to_vec(), 1e-12);
    assert_close(&bn.running_var.value().to_vec(), &t["bn.running_var"].to_vec(), 1e-12);
    bn.eval();
    close(&bn.forward(&c(&t["bn.x1"])), "bn.y_eval");

    let bn1 =
        BatchNorm1d::<f64>::with_config(2, BatchNormConfig { momentum: 0.3, affine: false, ..Default::default() });
    assert!(bn1.named_parameters().is_empty());
    close(&bn1.forward(&c(&t["bn1.x"])), "bn1.y");
    assert_close(&bn1.running_var.value().to_vec(), &t["bn1.running_var"].to_vec(), 1e-12);

    let ln = LayerNorm::<f64>::new(&[2, 3]);
    ln.weight.as_ref().unwrap().set(t["ln.weight"].clone());
    ln.bias.as_ref().unwrap().set(t["ln.bias"].clone());
    close(&ln.forward(&c(&t["ln.x"])), "ln.y");

    let cfg = Conv2dConfig { stride: [2, 1], padding: [1, 1], dilation: [1, 2], groups: 2, bias: true };
    let conv = Conv2d::<f64>::with_config(4, 6, [3, 2], cfg, &mut rng(0));
    // Loading PyTorch's state dict by name checks that names and shapes agree.
    let state: BTreeMap<String, Tensor<f64>> =
        ["weight", "bias"].iter().map(|k| (k.to_string(), t[&format!("conv.{k}")].clone())).collect();
    conv.load_state_dict(&state).unwrap();
    close(&conv.forward(&c(&t["conv.x"])), "conv.y");

    let x = c(&t["act.x"]);
    close(&GELU::default().forward(&x), "act.gelu");
    close(&GELU { tanh_approximation: true }.forward(&x), "act.gelu_tanh");
    close(&SiLU.forward(&x), "act.silu");
    close(&LeakyReLU::new(0.1).forward(&x), "act.leaky");
}
