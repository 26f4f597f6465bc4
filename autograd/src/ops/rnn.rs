//! Fused recurrent cells: the pointwise part of an LSTM or GRU step as one op, forward and
//! backward each one pass over the gate block (the kernels are `ferrograd_tensor`'s
//! `fused_lstm_cell` and `fused_gru_cell`). A `create_graph` backward instead writes the same
//! gradient with `Var` ops, so higher-order gradients stay exact.

use ferrograd_tensor::{Float, Tensor};
use smallvec::smallvec;

use crate::Var;

impl<F: Float> Var<F> {
    /// The pointwise part of an LSTM step in one op, PyTorch's gate order (input, forget, cell,
    /// output): with `a = gx + gh` split into `[a_i, a_f, a_g, a_o]` along the last dim,
    /// returns `(h', c')` where `c' = σ(a_f) c + σ(a_i) tanh(a_g)` and `h' = σ(a_o) tanh(c')`.
    ///
    /// `gx` and `gh` (the step's input and hidden projections, biases included) are `[B, 4H]`,
    /// `c` is `[B, H]`. The same values as the unfused ops, to a few f32 ulp (exactly in f64),
    /// at a fraction of the memory traffic.
    ///
    /// ```
    /// use ferrograd_autograd::Var;
    /// use ferrograd_tensor::Tensor;
    /// let gx = Var::leaf(Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 0.25], &[1, 4]));
    /// let gh = Var::constant(Tensor::zeros(&[1, 4]));
    /// let c = Var::leaf(Tensor::from_vec(vec![0.3f64], &[1, 1]));
    /// let (h, c_new) = Var::fused_lstm_cell(&gx, &gh, &c);
    /// // The unfused reference.
    /// let g = gx.chunk(4, -1);
    /// let c_ref = &(&g[1].sigmoid() * &c) + &(&g[0].sigmoid() * &g[2].tanh());
    /// assert!((c_new.item() - c_ref.item()).abs() < 1e-15);
    /// assert!((h.item() - (&g[3].sigmoid() * &c_ref.tanh()).item()).abs() < 1e-15);
    /// let grads = (&h + &c_new).sum().backward();
    /// assert_eq!(grads.get(&gx).unwrap().shape(), &[1, 4]);
    /// ```
    ///
    /// # Panics
    /// If the shapes do not fit (the message names them).
    #[track_caller]
    pub fn fused_lstm_cell(gx: &Var<F>, gh: &Var<F>, c: &Var<F>) -> (Var<F>, Var<F>) {
        let parts = Tensor::fused_lstm_cell(&gx.data, &gh.data, &c.data);
        let (gates, tanh_c) = (parts.gates, parts.tanh_c);
        let kept = [gx.clone(), gh.clone(), c.clone()];
        let mut out = Var::record_multi("fused_lstm_cell", vec![parts.h, parts.c], &[gx, gh, c], move |ctx, gs| {
            let (da, dc) = if ctx.create_graph() {
                lstm_cell_backward_ops(&kept, gs)
            } else {
                let (da, dc) = Tensor::fused_lstm_cell_backward(
                    &gates,
                    &kept[2].data,
                    &tanh_c,
                    gs[0].as_ref().map(Var::data),
                    gs[1].as_ref().map(Var::data),
                );
                (Var::constant(da), Var::constant(dc))
            };
            smallvec![
                ctx.needs_input_grad(0).then(|| da.clone()),
                ctx.needs_input_grad(1).then_some(da),
                ctx.needs_input_grad(2).then_some(dc)
            ]
        });
        let c_new = out.pop().expect("two outputs");
        (out.pop().expect("two outputs"), c_new)
    }

    /// The pointwise part of a GRU step in one op, PyTorch's gate order (reset, update, new):
    /// with `gx = x W_ihᵀ + b_ih` and `gh = h W_hhᵀ + b_hh` (each `[B, 3H]`) split in three,
    /// `r = σ(gx_r + gh_r)`, `z = σ(gx_z + gh_z)`, `n = tanh(gx_n + r gh_n)`, and returns
    /// `h' = (1 - z) n + z h` (`h` is `[B, H]`).
    ///
    /// ```
    /// use ferrograd_autograd::Var;
    /// use ferrograd_tensor::Tensor;
    /// let gx = Var::leaf(Tensor::from_vec(vec![0.5f64, -1.0, 2.0], &[1, 3]));
    /// let gh = Var::leaf(Tensor::from_vec(vec![0.1f64, 0.2, -0.3], &[1, 3]));
    /// let h = Var::leaf(Tensor::from_vec(vec![0.7f64], &[1, 1]));
    /// let h_new = Var::fused_gru_cell(&gx, &gh, &h);
    /// let (x3, h3) = (gx.chunk(3, -1), gh.chunk(3, -1));
    /// let (r, z) = ((&x3[0] + &h3[0]).sigmoid(), (&x3[1] + &h3[1]).sigmoid());
    /// let n = (&x3[2] + &(&r * &h3[2])).tanh();
    /// assert!((h_new.item() - (&n + &(&z * &(&h - &n))).item()).abs() < 1e-15);
    /// ```
    ///
    /// # Panics
    /// If the shapes do not fit (the message names them).
    #[track_caller]
    pub fn fused_gru_cell(gx: &Var<F>, gh: &Var<F>, h: &Var<F>) -> Var<F> {
        let parts = Tensor::fused_gru_cell(&gx.data, &gh.data, &h.data);
        let gates = parts.gates;
        let kept = [gx.clone(), gh.clone(), h.clone()];
        Var::record("fused_gru_cell", parts.h, &[gx, gh, h], move |ctx, g| {
            let (dgx, dgh, dh) = if ctx.create_graph() {
                gru_cell_backward_ops(&kept, g)
            } else {
                let (dgx, dgh, dh) = Tensor::fused_gru_cell_backward(&gates, &kept[1].data, &kept[2].data, &g.data);
                (Var::constant(dgx), Var::constant(dgh), Var::constant(dh))
            };
            smallvec![
                ctx.needs_input_grad(0).then_some(dgx),
                ctx.needs_input_grad(1).then_some(dgh),
                ctx.needs_input_grad(2).then_some(dh)
            ]
        })
    }
}

/// [`Var::fused_lstm_cell`]'s gradients `(d a, d c)` written with `Var` ops (differentiable).
fn lstm_cell_backward_ops<F: Float>(kept: &[Var<F>; 3], gs: &[Option<Var<F>>]) -> (Var<F>, Var<F>) {
    let [gx, gh, c] = kept;
    let a = (gx + gh).chunk(4, -1);
    let (i, f, g, o) = (a[0].sigmoid(), a[1].sigmoid(), a[2].tanh(), a[3].sigmoid());
    let c_new = &(&f * c) + &(&i * &g);
    let t = c_new.tanh();
    let zero = || Var::constant(Tensor::zeros(c.shape()));
    let dh = gs[0].clone().unwrap_or_else(zero);
    let dc = gs[1].clone().unwrap_or_else(zero);
    let dct = &dc + &(&(&dh * &o) * &t.square().rsub_scalar(F::one()));
    let dsig = |s: &Var<F>| s * &s.rsub_scalar(F::one());
    let di = &(&dct * &g) * &dsig(&i);
    let df = &(&dct * c) * &dsig(&f);
    let dg = &(&dct * &i) * &g.square().rsub_scalar(F::one());
    let d_o = &(&dh * &t) * &dsig(&o);
    (Var::cat(&[&di, &df, &dg, &d_o], -1), &dct * &f)
}

/// [`Var::fused_gru_cell`]'s gradients `(d gx, d gh, d h)` written with `Var` ops.
fn gru_cell_backward_ops<F: Float>(kept: &[Var<F>; 3], dh: &Var<F>) -> (Var<F>, Var<F>, Var<F>) {
    let [gx, gh, h] = kept;
    let (x3, h3) = (gx.chunk(3, -1), gh.chunk(3, -1));
    let r = (&x3[0] + &h3[0]).sigmoid();
    let z = (&x3[1] + &h3[1]).sigmoid();
    let n = (&x3[2] + &(&r * &h3[2])).tanh();
    let dsig = |s: &Var<F>| s * &s.rsub_scalar(F::one());
    let dan = &(dh * &z.rsub_scalar(F::one())) * &n.square().rsub_scalar(F::one());
    let dar = &(&dan * &h3[2]) * &dsig(&r);
    let daz = &(dh * &(h - &n)) * &dsig(&z);
    let dgx = Var::cat(&[&dar, &daz, &dan], -1);
    let dgh = Var::cat(&[&dar, &daz, &(&dan * &r)], -1);
    (dgx, dgh, dh * &z)
}
