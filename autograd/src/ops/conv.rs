//! Convolutions and pooling. The convolution, its input gradient and its weight gradient are
//! three bilinear maps, each one's derivatives are the other two, so every order of derivative
//! closes over the same three kernels. Pooling gradients are scatters whose own gradients are
//! gathers (max) or the pooling itself (average).

use ferrograd_tensor::{Conv1dOptions, Conv2dOptions, Float, Pool2dOptions, Shape, Tensor};
use smallvec::{smallvec, SmallVec};

use crate::var::InputGrads;
use crate::Var;

impl<F: Float> Var<F> {
    /// 2-D convolution of `[N, C, H, W]` by `[O, C/groups, kh, kw]`, plus an optional bias `[O]`.
    #[track_caller]
    pub fn conv2d(&self, weight: &Var<F>, bias: Option<&Var<F>>, opts: &Conv2dOptions) -> Var<F> {
        let out = self.data.conv2d(&weight.data, bias.map(|b| &b.data), opts);
        let (x, w, o) = (self.clone(), weight.clone(), *opts);
        let mut inputs: SmallVec<[&Var<F>; 3]> = smallvec![self, weight];
        inputs.extend(bias);
        Var::record("conv2d", out, &inputs, move |ctx, g| {
            let mut grads: InputGrads<F> = smallvec![
                ctx.needs_input_grad(0).then(|| Var::conv2d_input_grad(g, &w, x.shape(), &o)),
                ctx.needs_input_grad(1).then(|| Var::conv2d_weight_grad(&x, g, w.shape(), &o)),
            ];
            if ctx.needs_input_grad(2) {
                // Each plane's sum first, then over the batch: the plane sums split over
                // threads by ranges of planes, so each thread reads the part of `g` that its
                // core wrote (by channels, every thread read all of `g` and two threads took
                // longer than one).
                grads.push(Some(g.sum_dims(&[2, 3], false).sum_dims(&[0], false)));
            }
            grads
        })
    }

    /// The gradient of [`Var::conv2d`] with respect to its input (a transposed convolution).
    #[track_caller]
    pub fn conv2d_input_grad(grad: &Var<F>, weight: &Var<F>, input_shape: &[usize], opts: &Conv2dOptions) -> Var<F> {
        let out = Tensor::conv2d_input_grad(&grad.data, &weight.data, input_shape, opts);
        let (g0, w, o) = (grad.clone(), weight.clone(), *opts);
        Var::record("conv2d_input_grad", out, &[grad, weight], move |ctx, gg| {
            smallvec![
                ctx.needs_input_grad(0).then(|| gg.conv2d(&w, None, &o)),
                ctx.needs_input_grad(1).then(|| Var::conv2d_weight_grad(gg, &g0, w.shape(), &o))
            ]
        })
    }

    /// The gradient of [`Var::conv2d`] with respect to its weight.
    #[track_caller]
    pub fn conv2d_weight_grad(input: &Var<F>, grad: &Var<F>, weight_shape: &[usize], opts: &Conv2dOptions) -> Var<F> {
        let out = Tensor::conv2d_weight_grad(&input.data, &grad.data, weight_shape, opts);
        let (x, g0, o) = (input.clone(), grad.clone(), *opts);
        Var::record("conv2d_weight_grad", out, &[input, grad], move |ctx, gw| {
            smallvec![
                ctx.needs_input_grad(0).then(|| Var::conv2d_input_grad(&g0, gw, x.shape(), &o)),
                ctx.needs_input_grad(1).then(|| x.conv2d(gw, None, &o))
            ]
        })
    }

    /// 1-D convolution of `[N, C, L]` by `[O, C/groups, k]`, plus an optional bias `[O]`.
    #[track_caller]
    pub fn conv1d(&self, weight: &Var<F>, bias: Option<&Var<F>>, opts: &Conv1dOptions) -> Var<F> {
        let out = self.data.conv1d(&weight.data, bias.map(|b| &b.data), opts);
        let (x, w, o) = (self.clone(), weight.clone(), *opts);
        let mut inputs: SmallVec<[&Var<F>; 3]> = smallvec![self, weight];
        inputs.extend(bias);
        Var::record("conv1d", out, &inputs, move |ctx, g| {
            let mut grads: InputGrads<F> = smallvec![
                ctx.needs_input_grad(0).then(|| Var::conv1d_input_grad(g, &w, x.shape(), &o)),
                ctx.needs_input_grad(1).then(|| Var::conv1d_weight_grad(&x, g, w.shape(), &o)),
            ];
            if ctx.needs_input_grad(2) {
                // Per row, then over the batch, as conv2d's bias.
                grads.push(Some(g.sum_dims(&[2], false).sum_dims(&[0], false)));
            }
            grads
        })
    }

    /// The gradient of [`Var::conv1d`] with respect to its input.
    #[track_caller]
    pub fn conv1d_input_grad(grad: &Var<F>, weight: &Var<F>, input_shape: &[usize], opts: &Conv1dOptions) -> Var<F> {
        let out = Tensor::conv1d_input_grad(&grad.data, &weight.data, input_shape, opts);
        let (g0, w, o) = (grad.clone(), weight.clone(), *opts);
        Var::record("conv1d_input_grad", out, &[grad, weight], move |ctx, gg| {
            smallvec![
                ctx.needs_input_grad(0).then(|| gg.conv1d(&w, None, &o)),
                ctx.needs_input_grad(1).then(|| Var::conv1d_weight_grad(gg, &g0, w.shape(), &o))
            ]
        })
    }

    /// The gradient of [`Var::conv1d`] with respect to its weight.
    #[track_caller]
    pub fn conv1d_weight_grad(input: &Var<F>, grad: &Var<F>, weight_shape: &[usize], opts: &Conv1dOptions) -> Var<F> {
        let out = Tensor::conv1d_weight_grad(&input.data, &grad.data, weight_shape, opts);
        let (x, g0, o) = (input.clone(), grad.clone(), *opts);
        Var::record("conv1d_weight_grad", out, &[input, grad], move |ctx, gw| {
            smallvec![
                ctx.needs_input_grad(0).then(|| Var::conv1d_input_grad(&g0, gw, x.shape(), &o)),
                ctx.needs_input_grad(1).then(|| x.conv1d(gw, None, &o))
            ]
        })
    }

    /// 2-D max pooling; the gradient goes to the position of each maximum.
    #[track_caller]
    pub fn max_pool2d(&self, opts: &Pool2dOptions) -> Var<F> {
        let (out, idx) = self.data.max_pool2d_with_indices(opts);
        let input = Shape::from_slice(self.shape());
        Var::record("max_pool2d", out, &[self], move |_, g| smallvec![Some(g.max_pool2d_backward(&idx, &input))])
    }

    #[track_caller]
    fn max_pool2d_backward(&self, idx: &Tensor<i64>, input: &[usize]) -> Var<F> {
        let out = Tensor::max_pool2d_backward(&self.data, idx, input);
        let idx = idx.clone();
        let out_shape = Shape::from_slice(self.shape());
        Var::record("max_pool2d_backward", out, &[self], move |_, gg| {
            // Each output gradient came from one input position: read it back from there.
            let planes = gg.flatten(-2, -1);
            let flat_idx = idx.flatten(-2, -1);
            smallvec![Some(planes.gather(-1, &flat_idx).reshape(&out_shape))]
        })
    }

    /// 2-D average pooling.
    #[track_caller]
    pub fn avg_pool2d(&self, opts: &Pool2dOptions) -> Var<F> {
        let input = Shape::from_slice(self.shape());
        let o = *opts;
        Var::record("avg_pool2d", self.data.avg_pool2d(opts), &[self], move |_, g| {
            smallvec![Some(g.avg_pool2d_backward(&input, &o))]
        })
    }

    #[track_caller]
    fn avg_pool2d_backward(&self, input: &[usize], opts: &Pool2dOptions) -> Var<F> {
        let o = *opts;
        let out = Tensor::avg_pool2d_backward(&self.data, input, opts);
        Var::record("avg_pool2d_backward", out, &[self], move |_, gg| smallvec![Some(gg.avg_pool2d(&o))])
    }
}
