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

    /// A whole LSTM sequence (one layer, one direction) as one op: from the input projections
    /// of every step `gx = x W_ihᵀ` (`[T, B, 4H]`, PyTorch's gate order), an optional `bias`
    /// (`[4H]`, `b_ih + b_hh`) added at every step, the recurrent weights `w_hh` (`[4H, H]`) and
    /// the initial state `(h0, c0)` (`[B, H]` each, zeros if `None`), returns the output
    /// sequence `[T, B, H]` and the final `(h, c)`.
    /// `reverse` runs the steps from `T - 1` down to 0.
    ///
    /// `lengths[b]` (each in `0..=T`) is the number of valid steps of sequence `b`, as
    /// PyTorch's packed sequences: at a padded step the state does not change, the output is
    /// zero, and the step's projections receive exactly zero gradient.
    ///
    /// The forward runs every step in one kernel ([`Tensor::lstm_sequence`]); the backward
    /// runs the recurrence backwards with one product per step and gets `w_hh`'s gradient from
    /// ONE product over all steps (`Σ_t dA_tᵀ h_{t-1}`), rather than one tape node and two
    /// small products per step. The same values as a loop of [`Var::fused_lstm_cell`] steps,
    /// to rounding; a `create_graph` backward is that loop's gradient in `Var` ops, so
    /// higher-order gradients stay exact.
    ///
    /// ```
    /// use ferrograd_autograd::Var;
    /// use ferrograd_tensor::Tensor;
    /// let (t, b, h) = (3, 2, 4);
    /// let gx = Var::leaf(Tensor::from_fn(&[t, b, 4 * h], |i| (i as f64 * 0.37).sin()));
    /// let w = Var::leaf(Tensor::from_fn(&[4 * h, h], |i| (i as f64 * 0.11).cos() * 0.3));
    /// let (out, h_n, c_n) = Var::fused_lstm_sequence(&gx, None, &w, None, None, Some(&[3, 1]), false);
    /// assert_eq!(out.shape(), &[3, 2, 4]);
    /// // Sequence 1 stopped after its first step.
    /// assert_eq!(h_n.data().select(0, 1).to_vec(), out.data().select(0, 0).select(0, 1).to_vec());
    /// let grads = (&out.sum() + &c_n.sum()).backward();
    /// assert_eq!(grads.get(&w).unwrap().shape(), &[16, 4]);
    /// // Padded steps get no gradient.
    /// assert!(grads.get(&gx).unwrap().select(0, 2).select(0, 1).to_vec().iter().all(|&g| g == 0.0));
    /// ```
    ///
    /// # Panics
    /// If the shapes do not fit or a length exceeds `T` (the message names them).
    #[track_caller]
    pub fn fused_lstm_sequence(
        gx: &Var<F>,
        bias: Option<&Var<F>>,
        w_hh: &Var<F>,
        h0: Option<&Var<F>>,
        c0: Option<&Var<F>>,
        lengths: Option<&[usize]>,
        reverse: bool,
    ) -> (Var<F>, Var<F>, Var<F>) {
        record_lstm(LstmInput::Projected(gx), bias, w_hh, h0, c0, lengths, reverse)
    }

    /// A whole LSTM layer (one direction) as one op: [`Var::fused_lstm_sequence`] with the
    /// input projections `gx = x w_ihᵀ` inside, from `x` (`[T, B, I]`, time order, any strides)
    /// and `w_ih` (`[4H, I]`). The same values as `fused_lstm_sequence` on
    /// `x.matmul(&w_ih.t())`; the backward differs: in f32, `w_ih`'s gradient `Σ_t dA_tᵀ x_t`
    /// accumulates step by step with `w_hh`'s, from the same packed gate gradients `dA_t`,
    /// instead of one more product over all of `dA` after the recurrence (cuDNN's split).
    ///
    /// ```
    /// use ferrograd_autograd::Var;
    /// use ferrograd_tensor::Tensor;
    /// let (t, b, i, h) = (3, 2, 5, 4);
    /// let x = Var::leaf(Tensor::from_fn(&[t, b, i], |k| (k as f64 * 0.37).sin()));
    /// let w_ih = Var::leaf(Tensor::from_fn(&[4 * h, i], |k| (k as f64 * 0.23).cos() * 0.3));
    /// let w_hh = Var::leaf(Tensor::from_fn(&[4 * h, h], |k| (k as f64 * 0.11).cos() * 0.3));
    /// let (out, _, c) = Var::fused_lstm_layer(&x, &w_ih, None, &w_hh, None, None, None, false);
    /// let gx = x.reshape(&[t * b, i]).matmul(&w_ih.t()).reshape(&[t, b, 4 * h]);
    /// let (out_ref, _, c_ref) = Var::fused_lstm_sequence(&gx, None, &w_hh, None, None, None, false);
    /// assert!(out.data().sub(out_ref.data()).abs().max().item() < 1e-12);
    /// let grads = (&out.sum() + &c.sum()).backward();
    /// let grads_ref = (&out_ref.sum() + &c_ref.sum()).backward();
    /// for v in [&x, &w_ih, &w_hh] {
    ///     assert!(grads.get(v).unwrap().sub(grads_ref.get(v).unwrap()).abs().max().item() < 1e-12);
    /// }
    /// ```
    ///
    /// # Panics
    /// If the shapes do not fit or a length exceeds `T` (the message names them).
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    pub fn fused_lstm_layer(
        x: &Var<F>,
        w_ih: &Var<F>,
        bias: Option<&Var<F>>,
        w_hh: &Var<F>,
        h0: Option<&Var<F>>,
        c0: Option<&Var<F>>,
        lengths: Option<&[usize]>,
        reverse: bool,
    ) -> (Var<F>, Var<F>, Var<F>) {
        assert!(
            x.rank() == 3 && w_ih.rank() == 2 && w_ih.shape()[1] == x.shape()[2] && w_ih.shape()[0] == w_hh.shape()[0],
            "fused_lstm_layer: input {:?}, w_ih {:?} and w_hh {:?} must be [T, B, I], [4 * H, I] and [4 * H, H]",
            x.shape(),
            w_ih.shape(),
            w_hh.shape()
        );
        record_lstm(LstmInput::Layer { x, w_ih }, bias, w_hh, h0, c0, lengths, reverse)
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

/// What an LSTM layer op starts from: the input projections themselves
/// ([`Var::fused_lstm_sequence`]), or the layer input and the input weights that make them
/// ([`Var::fused_lstm_layer`]).
enum LstmInput<'a, F: Float> {
    Projected(&'a Var<F>),
    Layer { x: &'a Var<F>, w_ih: &'a Var<F> },
}

/// The one recording behind [`Var::fused_lstm_sequence`] and [`Var::fused_lstm_layer`]: the
/// forward kernel on the projections, and a backward that runs the recurrence kernel (or, with
/// `create_graph`, [`lstm_sequence_backward_ops`]) and maps the projections' gradient back to
/// the leading inputs: `gx` itself, or `x` and `w_ih` (in f32 `w_ih`'s from the kernel's
/// step-by-step sums).
#[track_caller]
fn record_lstm<F: Float>(
    input: LstmInput<'_, F>,
    bias: Option<&Var<F>>,
    w_hh: &Var<F>,
    h0: Option<&Var<F>>,
    c0: Option<&Var<F>>,
    lengths: Option<&[usize]>,
    reverse: bool,
) -> (Var<F>, Var<F>, Var<F>) {
    // The leading inputs, the layer input kept contiguous for `w_ih`'s gradient, and the
    // projections the kernel runs on.
    let (lead, x_data, gx) = match input {
        LstmInput::Projected(gx) => (vec![gx.clone()], None, gx.data.clone()),
        LstmInput::Layer { x, w_ih } => {
            let (steps, batch, g) = (x.shape()[0], x.shape()[1], w_ih.shape()[0]);
            let xc = x.data.contiguous();
            let gx = xc.reshape(&[steps * batch, x.shape()[2]]).matmul(&w_ih.data.t()).reshape(&[steps, batch, g]);
            (vec![x.clone(), w_ih.clone()], Some(xc), gx)
        }
    };
    let name = if x_data.is_some() { "lstm_layer" } else { "lstm_sequence" };
    let parts = Tensor::lstm_sequence(
        &gx,
        bias.map(Var::data),
        &w_hh.data,
        h0.map(Var::data),
        c0.map(Var::data),
        lengths,
        reverse,
    );
    let outputs = vec![parts.output.clone(), parts.h.clone(), parts.c.clone()];
    let none = Var::constant(Tensor::zeros(&[]));
    let kept = (lead.clone(), bias.cloned(), w_hh.clone(), h0.cloned(), c0.cloned());
    let lens = lengths.map(<[usize]>::to_vec);
    let mut inputs: Vec<&Var<F>> = lead.iter().collect();
    inputs.extend([bias.unwrap_or(&none), w_hh, h0.unwrap_or(&none), c0.unwrap_or(&none)]);
    // Index of `bias` among the inputs: the state's gradients follow it.
    let base = lead.len();
    let mut out = Var::record_multi(name, outputs, &inputs, move |ctx, gs| {
        let needs = |i| ctx.needs_input_grad(i);
        let (lead, b, w_hh, h0, c0) = &kept;
        // The projections' gradient mapped to the leading inputs' gradients: `gx`'s itself, or
        // `x`'s and `w_ih`'s (`dgxᵀ x` unless the kernel already summed it as `dw_ih`).
        let to_lead = |dgx: Option<Var<F>>, dw_ih: Option<Var<F>>| match lead.as_slice() {
            [_] => smallvec![dgx],
            [x, w_ih] => {
                let (steps, batch, inputs) = (x.shape()[0], x.shape()[1], x.shape()[2]);
                let flat = dgx.map(|d| d.reshape(&[steps * batch, w_ih.shape()[0]]));
                let dw_ih = dw_ih.or_else(|| {
                    let flat = flat.as_ref().filter(|_| needs(1))?;
                    Some(flat.t().matmul(&x.reshape(&[steps * batch, inputs])))
                });
                smallvec![flat.filter(|_| needs(0)).map(|f| f.matmul(w_ih).reshape(&[steps, batch, inputs])), dw_ih]
            }
            _ => unreachable!("one or two leading inputs"),
        };
        let mut grads: smallvec::SmallVec<[Option<Var<F>>; 2]>;
        if ctx.create_graph() {
            let gx = match lead.as_slice() {
                [x, w_ih] => {
                    let (steps, batch, inputs) = (x.shape()[0], x.shape()[1], x.shape()[2]);
                    x.reshape(&[steps * batch, inputs]).matmul(&w_ih.t()).reshape(&[steps, batch, w_ih.shape()[0]])
                }
                lead => lead[0].clone(),
            };
            let [dgx, db, dw, dh0, dc0] = lstm_sequence_backward_ops(
                &gx,
                b.as_ref(),
                w_hh,
                h0.as_ref(),
                c0.as_ref(),
                lens.as_deref(),
                reverse,
                gs,
            );
            let need_dgx = (0..base).any(needs);
            grads = to_lead(need_dgx.then_some(dgx), None);
            grads.extend([
                needs(base).then_some(db),
                needs(base + 1).then_some(dw),
                needs(base + 2).then_some(dh0),
                needs(base + 3).then_some(dc0),
            ]);
        } else {
            let gr = Tensor::lstm_sequence_backward(
                &parts,
                &w_hh.data,
                lens.as_deref(),
                reverse,
                gs[0].as_ref().map(Var::data),
                gs[1].as_ref().map(Var::data),
                gs[2].as_ref().map(Var::data),
                needs(base + 2),
                x_data.as_ref().filter(|_| needs(1)),
                needs(0),
            );
            grads = to_lead(gr.gx.map(Var::constant), gr.w_ih.map(Var::constant));
            grads.extend([
                gr.bias.filter(|_| needs(base)).map(Var::constant),
                needs(base + 1).then(|| Var::constant(gr.w_hh)),
                gr.h0.map(Var::constant),
                needs(base + 3).then(|| Var::constant(gr.c0)),
            ]);
        }
        // Only the gradients asked for.
        for (i, g) in grads.iter_mut().enumerate() {
            if !needs(i) {
                *g = None;
            }
        }
        grads
    });
    let c = out.pop().expect("three outputs");
    let h = out.pop().expect("three outputs");
    (out.pop().expect("three outputs"), h, c)
}

/// [`Var::fused_lstm_sequence`]'s gradients `[d gx, d bias, d w_hh, d h0, d c0]` in `Var` ops: the
/// forward recomputed as a loop of [`Var::fused_lstm_cell`] steps, then the recurrence run
/// backwards with the cell's gradient formula, so that every gradient is itself
/// differentiable (a `create_graph` backward).
#[allow(clippy::too_many_arguments)]
fn lstm_sequence_backward_ops<F: Float>(
    gx: &Var<F>,
    bias: Option<&Var<F>>,
    w: &Var<F>,
    h0: Option<&Var<F>>,
    c0: Option<&Var<F>>,
    lengths: Option<&[usize]>,
    reverse: bool,
    gs: &[Option<Var<F>>],
) -> [Var<F>; 5] {
    let (steps, batch, hidden) = (gx.shape()[0], gx.shape()[1], w.shape()[1]);
    let zeros = |shape: &[usize]| Var::constant(Tensor::zeros(shape));
    let masks: Option<Vec<Tensor<bool>>> =
        lengths.map(|l| (0..steps).map(|t| Tensor::from_fn(&[batch, 1], |r| t < l[r])).collect());
    let order = |s: usize| if reverse { steps - 1 - s } else { s };
    let gxs = gx.unbind(0);
    let w_t = w.t();
    let mut h = h0.cloned().unwrap_or_else(|| zeros(&[batch, hidden]));
    let mut c = c0.cloned().unwrap_or_else(|| zeros(&[batch, hidden]));
    // Per step: (gx + bias, gh, c_prev, h_prev).
    let mut saved: Vec<Option<[Var<F>; 4]>> = vec![None; steps];
    for s in 0..steps {
        let t = order(s);
        let gh = h.matmul(&w_t);
        let gx_t = match bias {
            Some(b) => &gxs[t] + b,
            None => gxs[t].clone(),
        };
        let (h_new, c_new) = Var::fused_lstm_cell(&gx_t, &gh, &c);
        saved[t] = Some([gx_t, gh, c.clone(), h.clone()]);
        (h, c) = match &masks {
            Some(m) => (Var::where_(&m[t], &h_new, &h), Var::where_(&m[t], &c_new, &c)),
            None => (h_new, c_new),
        };
    }
    let mut dh = gs[1].clone().unwrap_or_else(|| zeros(&[batch, hidden]));
    let mut dc = gs[2].clone().unwrap_or_else(|| zeros(&[batch, hidden]));
    let mut dgx: Vec<Option<Var<F>>> = vec![None; steps];
    let mut dw: Option<Var<F>> = None;
    for s in (0..steps).rev() {
        let t = order(s);
        let [gx_t, gh, c_prev, h_prev] = saved[t].take().expect("every step ran");
        let dh_t = match &gs[0] {
            Some(d) => &dh + &d.select(0, t),
            None => dh.clone(),
        };
        let (mut da, mut dcp) = lstm_cell_backward_ops(&[gx_t, gh, c_prev], &[Some(dh_t), Some(dc.clone())]);
        if let Some(m) = &masks {
            da = Var::where_(&m[t], &da, &zeros(&[1, 4 * hidden]));
            dcp = Var::where_(&m[t], &dcp, &dc);
        }
        let dh_new = da.matmul(w);
        dh = match &masks {
            Some(m) => Var::where_(&m[t], &dh_new, &dh),
            None => dh_new,
        };
        dc = dcp;
        let dwt = da.t().matmul(&h_prev);
        dw = Some(match dw {
            Some(acc) => &acc + &dwt,
            None => dwt,
        });
        dgx[t] = Some(da);
    }
    let dgx: Vec<Var<F>> = dgx.into_iter().map(|d| d.unwrap_or_else(|| zeros(&[batch, 4 * hidden]))).collect();
    let dgx = if steps == 0 { zeros(gx.shape()) } else { Var::stack(&dgx.iter().collect::<Vec<_>>(), 0) };
    let db = dgx.sum_dims(&[0, 1], false);
    [dgx, db, dw.unwrap_or_else(|| zeros(w.shape())), dh, dc]
}
