//! Kernels that split their work over threads give bit-identical results whatever the thread
//! count: convolutions (forward, input and weight gradients, where the weight gradient is a
//! reduction over the batch), matrix products (batch entries, row and column blocks),
//! poolings (blocks of planes), reductions over blocks (ranges of output elements) and over
//! outer dims (the halves of their pairwise tree), elementwise maps and layer norm (ranges of
//! rows; its weight and bias sums by ranges of columns), batch norm (statistics by ranges of
//! channels, the elementwise passes by ranges of rows).
//!
//! The thread settings are process-wide, so one test sets them and checks every kernel in turn.

use ferrograd_tensor::rand::{rngs::StdRng, SeedableRng};
use ferrograd_tensor::{
    min_work_per_thread, num_threads, set_min_work_per_thread, set_num_threads, Conv2dOptions, Element, Float,
    Pool2dOptions, Tensor,
};

/// The bits of every element, so that `-0.0` and `0.0` (or two NaNs) are told apart.
fn bits<E: Element + Into<f64>>(t: &Tensor<E>) -> Vec<u64> {
    t.to_vec().into_iter().map(|v| v.into().to_bits()).collect()
}

/// Runs `f` on 1, 2 and 3 threads and asserts the results are bit-identical to the first.
fn same_on_1_2_3_threads(what: &str, f: impl Fn() -> Vec<Vec<u64>>) {
    set_num_threads(1);
    let one = f();
    for threads in [2, 3] {
        set_num_threads(threads);
        let many = f();
        for (i, (a, b)) in one.iter().zip(&many).enumerate() {
            let diff = a.iter().zip(b).filter(|(u, v)| u != v).count();
            assert!(
                diff == 0,
                "{what}, result {i}: {diff} of {} elements differ between 1 and {threads} threads",
                a.len()
            );
        }
    }
}

/// Input `[n, c, h, w]`, weight `[o, c / groups, k, k]`, padding `pad`, stride 1 (the kernels
/// that split the batch) or 2 (im2col).
fn conv_case(n: usize, (c, o, groups): (usize, usize, usize), side: usize, k: usize, pad: usize, stride: usize) {
    let mut rng = StdRng::seed_from_u64((n * 1000 + c * 100 + o * 10 + stride) as u64);
    let opts = Conv2dOptions { stride: [stride, stride], padding: [pad, pad], groups, ..Default::default() };
    let x = Tensor::<f32>::rand_uniform(&[n, c, side, side], -1.0, 1.0, &mut rng);
    let w = Tensor::<f32>::rand_uniform(&[o, c / groups, k, k], -0.5, 0.5, &mut rng);
    let y = x.conv2d(&w, None, &opts);
    let gy = Tensor::<f32>::rand_uniform(y.shape(), -1.0, 1.0, &mut rng);
    same_on_1_2_3_threads(&format!("conv2d x {:?} w {:?} {opts:?}", x.shape(), w.shape()), || {
        vec![
            bits(&x.conv2d(&w, None, &opts)),
            bits(&Tensor::conv2d_input_grad(&gy, &w, x.shape(), &opts)),
            bits(&Tensor::conv2d_weight_grad(&x, &gy, w.shape(), &opts)),
        ]
    });
}

/// Max and average pooling and their gradients over `[n, c, side, side]` (planes split over
/// threads), with `padding` (the per-window path) or without (blocks of planes).
fn pool_case(n: usize, c: usize, side: usize, k: usize, stride: usize, padding: usize) {
    let mut rng = StdRng::seed_from_u64((n * 100 + c * 10 + side) as u64);
    let opts = Pool2dOptions { stride: [stride, stride], padding: [padding, padding], ..Pool2dOptions::new([k, k]) };
    let x = Tensor::<f32>::rand_uniform(&[n, c, side, side], -1.0, 1.0, &mut rng);
    let (y, idx) = x.max_pool2d_with_indices(&opts);
    let gy = Tensor::<f32>::rand_uniform(y.shape(), -1.0, 1.0, &mut rng);
    same_on_1_2_3_threads(&format!("pooling x {:?} {opts:?}", x.shape()), || {
        let (y, i) = x.max_pool2d_with_indices(&opts);
        vec![
            bits(&y),
            i.to_vec().into_iter().map(|v| v as u64).collect(),
            bits(&Tensor::max_pool2d_backward(&gy, &idx, x.shape())),
            bits(&x.avg_pool2d(&opts)),
            bits(&Tensor::avg_pool2d_backward(&gy, x.shape(), &opts)),
        ]
    });
}

/// Elementwise maps split over threads (relu, exp, tanh, sigmoid, gelu; add, sub, mul, div and
/// GELU's gradient), against the
/// per-element function on one thread and bit for bit across thread counts.
fn unary_case() {
    let mut rng = StdRng::seed_from_u64(11);
    let x = Tensor::<f32>::rand_uniform(&[7, 1001], -3.0, 3.0, &mut rng);
    let xs = x.to_vec();
    set_num_threads(1);
    let relu: Vec<f32> = xs.iter().map(|&v| if v < 0.0 { 0.0 } else { v }).collect();
    assert_eq!(x.relu().to_vec(), relu, "relu against the formula");
    let exp: Vec<f32> = xs.iter().map(|v| v.exp()).collect();
    assert_eq!(x.exp().to_vec(), exp, "exp against the formula");
    same_on_1_2_3_threads("unary maps", || {
        vec![bits(&x.relu()), bits(&x.exp()), bits(&x.tanh()), bits(&x.sigmoid()), bits(&x.gelu())]
    });
    // Same-shape binary ops and GELU's gradient, split the same way.
    let y = Tensor::<f32>::rand_uniform(&[7, 1001], 0.5, 2.0, &mut rng);
    let ys = y.to_vec();
    set_num_threads(3);
    let want: Vec<f32> = xs.iter().zip(&ys).map(|(a, b)| a / b).collect();
    assert_eq!(x.div(&y).to_vec(), want, "div against the formula on 3 threads");
    // A permuted view made contiguous (split by ranges of its first dimension), against a
    // gather by index.
    let p = x.reshape(&[7, 7, 143]).permute(&[2, 0, 1]);
    let gathered: Vec<f32> = (0..143)
        .flat_map(|k| (0..7).flat_map(move |i| (0..7).map(move |j| (i * 7 + j) * 143 + k)))
        .map(|o| xs[o])
        .collect();
    assert_eq!(p.contiguous().to_vec(), gathered, "permuted copy against a gather on 3 threads");
    same_on_1_2_3_threads("strided copies", || vec![bits(&p.contiguous()), bits(&x.t().contiguous())]);
    // Broadcast operands (a bias row, a column) and a transposed one, split by ranges of rows.
    let bias = Tensor::<f32>::rand_uniform(&[1001], -1.0, 1.0, &mut rng);
    let col = Tensor::<f32>::rand_uniform(&[7, 1], -1.0, 1.0, &mut rng);
    let bs = bias.to_vec();
    let want: Vec<f32> = xs.iter().enumerate().map(|(i, a)| a + bs[i % 1001]).collect();
    assert_eq!(x.add(&bias).to_vec(), want, "row broadcast against the formula on 3 threads");
    let xt = Tensor::<f32>::rand_uniform(&[1001, 7], -1.0, 1.0, &mut rng).t();
    same_on_1_2_3_threads("broadcast maps", || {
        vec![bits(&x.add(&bias)), bits(&x.mul(&col)), bits(&col.sub(&x)), bits(&x.div(&xt.add(&y)))]
    });
    same_on_1_2_3_threads("binary maps", || {
        vec![bits(&x.add(&y)), bits(&x.sub(&y)), bits(&x.mul(&y)), bits(&x.div(&y)), bits(&x.gelu_backward(&y))]
    });
}

/// Layer norm split by rows (forward, input gradient) and by columns (weight and bias sums),
/// against a plain f64 loop and bit for bit across thread counts.
fn layer_norm_case(rows: usize, n: usize) {
    let mut rng = StdRng::seed_from_u64(12);
    let x = Tensor::<f32>::rand_uniform(&[rows, n], -2.0, 2.0, &mut rng);
    let g = Tensor::<f32>::rand_uniform(&[rows, n], -1.0, 1.0, &mut rng);
    let w = Tensor::<f32>::rand_uniform(&[n], 0.5, 1.5, &mut rng);
    let b = Tensor::<f32>::rand_uniform(&[n], -0.5, 0.5, &mut rng);
    set_num_threads(3);
    let f = x.layer_norm_forward(n, Some(&w), Some(&b), 1e-5);
    let grads = x.layer_norm_backward(&g, &f.mean, &f.rstd, Some(&w), true, true);
    // f64 reference: the output and the bias's and weight's gradients.
    let (xs, gs, ws, bs) = (x.to_vec(), g.to_vec(), w.to_vec(), b.to_vec());
    let (mut dw, mut db) = (vec![0.0f64; n], vec![0.0f64; n]);
    for r in 0..rows {
        let row: Vec<f64> = xs[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect();
        let mean = row.iter().sum::<f64>() / n as f64;
        let rstd = 1.0 / (row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64 + 1e-5).sqrt();
        for j in 0..n {
            let xh = (row[j] - mean) * rstd;
            let got = f.out.to_vec()[r * n + j] as f64;
            assert!((got - (xh * ws[j] as f64 + bs[j] as f64)).abs() < 1e-4, "layer norm out [{r}, {j}]");
            dw[j] += gs[r * n + j] as f64 * xh;
            db[j] += gs[r * n + j] as f64;
        }
    }
    let (gw, gb) = (grads.weight.unwrap().to_vec(), grads.bias.unwrap().to_vec());
    for j in 0..n {
        assert!((gw[j] as f64 - dw[j]).abs() < 1e-3 && (gb[j] as f64 - db[j]).abs() < 1e-3, "dw/db [{j}]");
    }
    same_on_1_2_3_threads(&format!("layer norm [{rows}, {n}]"), || {
        let f = x.layer_norm_forward(n, Some(&w), Some(&b), 1e-5);
        let gr = x.layer_norm_backward(&g, &f.mean, &f.rstd, Some(&w), true, true);
        let plain = x.layer_norm_backward(&g, &f.mean, &f.rstd, None, false, true);
        vec![
            bits(&f.out),
            bits(&f.mean),
            bits(&f.rstd),
            bits(&gr.input),
            bits(&gr.weight.unwrap()),
            bits(&gr.bias.unwrap()),
            bits(&plain.input),
            bits(&plain.bias.unwrap()),
        ]
    });
}

/// `parallel_collect` yields its ranges in order on any number of threads, and refuses a
/// range that yields too few or too many elements.
fn parallel_collect_case() {
    for threads in [1, 2, 3] {
        set_num_threads(threads);
        let v = ferrograd_tensor::parallel_collect(1000, 0, &|r: std::ops::Range<usize>| r.map(|i| i * i));
        assert_eq!(v, (0..1000).map(|i| i * i).collect::<Vec<_>>(), "{threads} threads");
        let short = std::panic::catch_unwind(|| {
            ferrograd_tensor::parallel_collect(1000, 0, &|r: std::ops::Range<usize>| r.skip(1))
        });
        assert!(short.is_err(), "a short range must panic ({threads} threads)");
        let long = std::panic::catch_unwind(|| {
            ferrograd_tensor::parallel_collect(1000, 0, &|r: std::ops::Range<usize>| r.start..r.end + 1)
        });
        assert!(long.is_err(), "a long range must panic ({threads} threads)");
    }
}

/// Reductions over blocks (the innermost dim in memory reduced), split over threads by output
/// elements: a convolution's bias gradient `[n, c, h, w] -> [c]`, a permuted view, `keepdim`,
/// `mean_dims`, `logsumexp_dims`, `var_dims` (BatchNorm's statistics) and `max_dim` over the
/// last reduced dim, values and indices. Each output element must also equal the reduction of its
/// own block alone (a narrowed view reduced on one thread), which checks where each range of
/// outputs starts.
fn reduce_case(shape: &[usize], dims: &[isize], perm: &[usize]) {
    let mut rng = StdRng::seed_from_u64(shape.iter().product::<usize>() as u64);
    let x = Tensor::<f32>::rand_uniform(shape, -1.0, 1.0, &mut rng).permute(perm);
    let what = format!("sum_dims {dims:?} of {:?} permuted by {perm:?}", x.shape());
    set_num_threads(1);
    let kept = (0..x.rank()).find(|d| !dims.contains(&(*d as isize))).expect("a kept dim");
    let alone: Vec<u64> = (0..x.shape()[kept])
        .map(|i| x.narrow(kept as isize, i, 1).sum_dims(dims, false).to_vec())
        .flat_map(|v| v.into_iter().map(|s| f64::from(s).to_bits()))
        .collect();
    same_on_1_2_3_threads(&what, || {
        let sums = bits(&x.sum_dims(dims, false));
        if x.rank() - dims.len() == 1 {
            assert_eq!(sums, alone, "{what}: each output against its block reduced alone");
        }
        let last = *dims.last().expect("a reduced dim");
        let (values, indices) = x.max_dim(last, false);
        vec![
            sums,
            bits(&x.sum_dims(dims, true)),
            bits(&x.mean_dims(dims, false)),
            bits(&x.logsumexp_dims(dims, false)),
            bits(&x.var_dims(dims, 1, false)),
            bits(&values),
            indices.to_vec().into_iter().map(|i| i as u64).collect(),
        ]
    });
}

/// Batch norm's forward (channel statistics by ranges of channels, the output by ranges of
/// rows) and backward, with a weight and gradients of weight and bias.
fn batch_norm_case(shape: &[usize]) {
    let mut rng = StdRng::seed_from_u64(shape.iter().sum::<usize>() as u64 + 7);
    let x = Tensor::<f32>::rand_uniform(shape, -2.0, 3.0, &mut rng);
    let g = Tensor::<f32>::rand_uniform(shape, -1.0, 1.0, &mut rng);
    let w = Tensor::<f32>::rand_uniform(&[shape[1]], 0.5, 1.5, &mut rng);
    let b = Tensor::<f32>::rand_uniform(&[shape[1]], -1.0, 1.0, &mut rng);
    same_on_1_2_3_threads(&format!("batch_norm of {shape:?}"), || {
        let f = x.batch_norm_forward(Some(&w), Some(&b), 1e-5);
        let gr = x.batch_norm_backward(&g, &f.mean, &f.rstd, Some(&w), true, true);
        let (gw, gb) = (gr.weight.expect("asked for"), gr.bias.expect("asked for"));
        vec![bits(&f.out), bits(&f.mean), bits(&f.var), bits(&gr.input), bits(&gw), bits(&gb)]
    });
}

/// `a @ b^T` and `a^T @ b` (transposing the last two dims) for `a` `[.., m, k]` and `b` `[.., n, k]`.
fn matmul_case<E: Float + Into<f64>>(a: &[usize], b: &[usize]) {
    let mut rng = StdRng::seed_from_u64((a.iter().sum::<usize>() * 31 + b.iter().sum::<usize>()) as u64);
    let (lo, hi) = (E::from_f64(-1.0), E::from_f64(1.0));
    let x = Tensor::<E>::rand_uniform(a, lo, hi, &mut rng);
    let y = Tensor::<E>::rand_uniform(b, lo, hi, &mut rng);
    same_on_1_2_3_threads(&format!("matmul {a:?} @ {b:?}^T"), || {
        vec![
            bits(&x.matmul(&y.transpose(-1, -2))),
            bits(&y.transpose(-1, -2).contiguous().transpose(-1, -2).matmul(&x.transpose(-1, -2))),
        ]
    });
}

#[test]
fn split_kernels_are_bit_identical_on_1_2_and_3_threads() {
    let (old_threads, old_min_work) = (num_threads(), min_work_per_thread());
    // Every split that can happen does: the batches and products below are small.
    set_min_work_per_thread(0);
    // LeNet's convolutions (padded and not; batches whose weight gradients make 2 blocks of
    // 2^22 multiply-adds, split unevenly over 3 threads), groups, and the im2col path.
    conv_case(96, (1, 6, 1), 28, 5, 2, 1);
    conv_case(40, (6, 16, 1), 14, 5, 0, 1);
    conv_case(7, (4, 6, 2), 11, 3, 1, 1);
    conv_case(5, (3, 4, 1), 12, 3, 1, 2);
    // Row blocks, column blocks, batch entries, and a batch split into blocks.
    matmul_case::<f32>(&[96, 70], &[50, 70]);
    matmul_case::<f32>(&[20, 70], &[90, 70]);
    matmul_case::<f64>(&[5, 33, 40], &[5, 17, 40]);
    matmul_case::<f64>(&[2, 64, 30], &[2, 48, 30]);
    unary_case();
    layer_norm_case(37, 130);
    layer_norm_case(5, 3);
    parallel_collect_case();
    // LeNet's two bias gradients, 7 outputs (uneven ranges on 2 and 3 threads), a permuted
    // view (the kept dim not outermost), and two kept dims.
    reduce_case(&[16, 6, 28, 28], &[0, 2, 3], &[0, 1, 2, 3]);
    reduce_case(&[64, 16, 10, 10], &[0, 2, 3], &[0, 1, 2, 3]);
    reduce_case(&[5, 7, 9, 11], &[0, 2, 3], &[0, 1, 2, 3]);
    reduce_case(&[7, 5, 9, 11], &[0, 2, 3], &[1, 0, 2, 3]);
    reduce_case(&[3, 4, 5, 67], &[1, 3], &[0, 1, 2, 3]);
    // Reductions over outer dims (the innermost kept), whose pairwise halves run on two
    // threads: a bias gradient over many rows, and the same through a permuted view.
    reduce_case(&[300, 5, 37], &[0], &[0, 1, 2]);
    reduce_case(&[5, 300, 37], &[0], &[1, 0, 2]);
    // Batch norm over 7 channels (uneven ranges on 2 and 3 threads), and over [N, C].
    batch_norm_case(&[9, 7, 6, 5]);
    batch_norm_case(&[40, 13]);
    // LeNet's two max pools (the second in blocks of planes), and padded windows.
    pool_case(16, 6, 28, 2, 2, 0);
    pool_case(64, 16, 10, 2, 2, 0);
    pool_case(5, 3, 9, 3, 2, 1);
    // At the default threshold, as training LeNet at batch 64 runs its second convolution (4
    // weight-gradient blocks: 2 per thread on 2 threads, uneven on 3).
    set_min_work_per_thread(1 << 22);
    conv_case(64, (6, 16, 1), 14, 5, 0, 1);
    set_num_threads(old_threads);
    set_min_work_per_thread(old_min_work);
}
