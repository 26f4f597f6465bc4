//! Recurrent layers: the cells [`RNNCell`], [`LSTMCell`], [`GRUCell`] and the sequence layers
//! [`RNN`], [`LSTM`], [`GRU`], with PyTorch's semantics, parameter names, shapes, gate order and
//! initialisation, so a PyTorch `state_dict` loads with no renaming.
//!
//! # Signatures
//!
//! [`Module::forward`] takes one `Var` and returns one; a recurrent layer takes a state and
//! returns one too. So each type has an inherent `forward` with its natural signature, and its
//! `Module::forward` (what [`Sequential`](crate::layers::Sequential) calls) is the single-input
//! form with a zero initial state:
//!
//! | type | inherent `forward` | `Module::forward(x)` |
//! |---|---|---|
//! | `RNNCell`, `GRUCell` | `(x, h: Option<&Var>) -> h'` | `h'` from a zero state |
//! | `LSTMCell` | `(x, state: Option<(&h, &c)>) -> (h', c')` | `h'` from a zero state |
//! | `RNN`, `GRU` | `(x, h0: Option<&Var>, lengths: Option<&[usize]>) -> (output, h_n)` | `output` |
//! | `LSTM` | `(x, state: Option<(&h0, &c0)>, lengths) -> (output, (h_n, c_n))` | `output` |
//!
//! Shapes are PyTorch's: a cell takes `x` `[B, input]` (or unbatched `[input]`) and states
//! `[B, hidden]`; a layer takes `x` `[T, B, input]` (`[B, T, input]` with `batch_first`, or
//! unbatched `[T, input]`), states `[layers * directions, B, hidden]` (never batch-first), and
//! returns `output` `[T, B, directions * hidden]` (batch-first if the input is).
//!
//! # Variable-length batches
//!
//! `lengths[b]` is the number of valid steps of sequence `b` (each in `1..=T`), the rest being
//! padding, as PyTorch's `pack_padded_sequence(.., enforce_sorted=False)`: the forward direction
//! stops at each sequence's last valid step and the reverse direction starts there. Padded steps
//! leave the state unchanged, their output is zero (as `pad_packed_sequence` gives), and padded
//! inputs receive exactly zero gradient.
//!
//! # Speed
//!
//! Every layer projects the inputs of all steps with one matrix product. An [`LSTM`] runs each
//! (layer, direction), projection included, as one op, [`Var::fused_lstm_layer`]: one tape
//! node whose backward runs the recurrence backwards and accumulates `weight_hh`'s and
//! `weight_ih`'s gradients step by step from the same packed gate gradients. [`RNN`] and
//! [`GRU`] record one step at a time (GRU through a fused cell).

use std::fmt;

use ferrograd_autograd::{Param, Var};
use ferrograd_tensor::{Float, Tensor};
use rand::Rng;

use super::Dropout;
use crate::Module;

/// The non-linearity of [`RNNCell`] and [`RNN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RnnNonlinearity {
    /// `tanh` (PyTorch's default).
    #[default]
    Tanh,
    /// `relu`.
    Relu,
}

/// Which recurrence a cell or layer computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rnn(RnnNonlinearity),
    Lstm,
    Gru,
}

impl Kind {
    /// Gates stacked in `weight_ih`'s rows.
    fn gates(self) -> usize {
        match self {
            Kind::Rnn(_) => 1,
            Kind::Lstm => 4,
            Kind::Gru => 3,
        }
    }

    fn name(self, layer: bool) -> &'static str {
        match (self, layer) {
            (Kind::Rnn(_), false) => "RNNCell",
            (Kind::Lstm, false) => "LSTMCell",
            (Kind::Gru, false) => "GRUCell",
            (Kind::Rnn(_), true) => "RNN",
            (Kind::Lstm, true) => "LSTM",
            (Kind::Gru, true) => "GRU",
        }
    }
}

/// U(-1/sqrt(hidden), 1/sqrt(hidden)), PyTorch's initialisation of every recurrent parameter.
fn recurrent_param<F: Float>(shape: &[usize], hidden: usize, rng: &mut impl Rng) -> Param<F> {
    let bound = if hidden > 0 { 1.0 / (hidden as f64).sqrt() } else { 0.0 };
    Param::new(crate::init::symmetric_uniform(shape, bound, rng))
}

/// A cell's four parameters: `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`.
type CellRefs<'a, F> = (&'a Param<F>, &'a Param<F>, Option<&'a Param<F>>, Option<&'a Param<F>>);

/// One step's state: `h`, and `c` for an LSTM.
type State<F> = (Var<F>, Option<Var<F>>);

/// One step of the recurrence from the input projection `gx = x W_ihᵀ + b_ih` (`[B, G*H]`), the
/// state, and `W_hhᵀ` (`[H, G*H]`), `b_hh`.
fn step<F: Float>(
    kind: Kind,
    gx: &Var<F>,
    h: &Var<F>,
    c: Option<&Var<F>>,
    w_hh_t: &Var<F>,
    b_hh: Option<&Var<F>>,
) -> State<F> {
    let mut gh = h.matmul(w_hh_t);
    if let Some(b) = b_hh {
        gh = &gh + b;
    }
    match kind {
        Kind::Rnn(RnnNonlinearity::Tanh) => ((gx + &gh).tanh(), None),
        Kind::Rnn(RnnNonlinearity::Relu) => ((gx + &gh).relu(), None),
        Kind::Lstm => {
            let c = c.expect("LSTM step without a cell state");
            let (h_new, c_new) = Var::fused_lstm_cell(gx, &gh, c);
            (h_new, Some(c_new))
        }
        Kind::Gru => (Var::fused_gru_cell(gx, &gh, h), None),
    }
}

/// `x Wᵀ + b` over the last dim.
fn project<F: Float>(x: &Var<F>, w: &Var<F>, b: Option<&Var<F>>) -> Var<F> {
    let y = x.matmul(&w.t());
    match b {
        Some(b) => &y + b,
        None => y,
    }
}

/// Options of the cells [`RNNCell`], [`LSTMCell`] and [`GRUCell`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RNNCellConfig {
    /// Whether the cell has `bias_ih` and `bias_hh` (default `true`).
    pub bias: bool,
    /// The non-linearity of an [`RNNCell`] (default `tanh`; ignored by the other cells).
    pub nonlinearity: RnnNonlinearity,
}

impl Default for RNNCellConfig {
    fn default() -> Self {
        RNNCellConfig { bias: true, nonlinearity: RnnNonlinearity::Tanh }
    }
}

/// The parameters every cell has, built as PyTorch does.
struct CellParams<F: Float> {
    weight_ih: Param<F>,
    weight_hh: Param<F>,
    bias_ih: Option<Param<F>>,
    bias_hh: Option<Param<F>>,
}

impl<F: Float> CellParams<F> {
    fn new(kind: Kind, input: usize, hidden: usize, bias: bool, rng: &mut impl Rng) -> Self {
        let g = kind.gates() * hidden;
        CellParams {
            weight_ih: recurrent_param(&[g, input], hidden, rng),
            weight_hh: recurrent_param(&[g, hidden], hidden, rng),
            bias_ih: bias.then(|| recurrent_param(&[g], hidden, rng)),
            bias_hh: bias.then(|| recurrent_param(&[g], hidden, rng)),
        }
    }
}

/// A cell's forward: checks shapes, handles unbatched input, one step.
#[track_caller]
fn cell_forward<F: Float>(
    kind: Kind,
    p: CellRefs<'_, F>,
    x: &Var<F>,
    h: Option<&Var<F>>,
    c: Option<&Var<F>>,
) -> State<F> {
    let name = kind.name(false);
    let (w_ih, w_hh, b_ih, b_hh) = p;
    let (input, hidden) = (w_ih.shape()[1], w_hh.shape()[1]);
    assert!(
        (x.rank() == 1 || x.rank() == 2) && x.shape()[x.rank() - 1] == input,
        "{name}: input shape {:?} is not [batch, {input}] or [{input}]",
        x.shape()
    );
    let unbatched = x.rank() == 1;
    let x = if unbatched { x.unsqueeze(0) } else { x.clone() };
    let batch = x.shape()[0];
    let state = |s: Option<&Var<F>>, what: &str| match s {
        Some(s) => {
            let want: &[usize] = if unbatched { &[hidden] } else { &[batch, hidden] };
            assert!(
                s.shape() == want,
                "{name}: {what} shape {:?} is not {want:?} (input shape {:?})",
                s.shape(),
                x.shape()
            );
            if unbatched {
                s.unsqueeze(0)
            } else {
                s.clone()
            }
        }
        None => Var::constant(Tensor::zeros(&[batch, hidden])),
    };
    let h = state(h, "hidden state");
    let c = (kind == Kind::Lstm).then(|| state(c, "cell state"));
    let gx = project(&x, &w_ih.var(), b_ih.map(Param::var).as_ref());
    let (h, c) = step(kind, &gx, &h, c.as_ref(), &w_hh.var().t(), b_hh.map(Param::var).as_ref());
    if unbatched {
        (h.squeeze_dim(0), c.map(|c| c.squeeze_dim(0)))
    } else {
        (h, c)
    }
}

macro_rules! cell {
    ($name:ident, $c:ident => $kind:expr, $torch:literal, $doc:literal, $gates:literal, $example:literal) => {
        #[doc = concat!($doc, ", as `torch.nn.", $torch, "`.")]
        ///
        #[doc = concat!("`weight_ih` is `[", $gates, " * hidden, input]`, `weight_hh` `[", $gates, " * hidden, hidden]`,")]
        #[doc = concat!("`bias_ih` and `bias_hh` `[", $gates, " * hidden]`, all initialised U(-1/sqrt(hidden), 1/sqrt(hidden)).")]
        ///
        /// The inherent `forward` takes the state as an `Option` (zeros if `None`) and returns the
        /// new state; [`Module::forward`] (what `Sequential` calls) is `forward_from_zero`.
        ///
        /// ```
        /// use ferrograd_autograd::Var;
        #[doc = concat!("use ferrograd_nn::layers::", stringify!($name), ";")]
        /// use ferrograd_tensor::Tensor;
        /// use rand::{rngs::StdRng, SeedableRng};
        #[doc = concat!("let cell = ", stringify!($name), "::<f32>::new(3, 5, &mut StdRng::seed_from_u64(0));")]
        /// let x = Var::constant(Tensor::ones(&[2, 3]));
        #[doc = $example]
        /// ```
        #[derive(Debug, Module)]
        #[module(forward = forward_from_zero)]
        pub struct $name<F: Float = f32> {
            /// Input-to-hidden weights of every gate, stacked.
            pub weight_ih: Param<F>,
            /// Hidden-to-hidden weights of every gate, stacked.
            pub weight_hh: Param<F>,
            /// Input-to-hidden bias, if the cell has biases.
            pub bias_ih: Option<Param<F>>,
            /// Hidden-to-hidden bias, if the cell has biases.
            pub bias_hh: Option<Param<F>>,
            #[module(skip)]
            kind: Kind,
        }

        impl<F: Float> $name<F> {
            /// A cell with biases, initialised as PyTorch's.
            pub fn new(input_size: usize, hidden_size: usize, rng: &mut impl Rng) -> Self {
                Self::with_config(input_size, hidden_size, RNNCellConfig::default(), rng)
            }

            /// A cell with explicit options.
            pub fn with_config(input_size: usize, hidden_size: usize, config: RNNCellConfig, rng: &mut impl Rng) -> Self {
                let $c = &config;
                let kind = $kind;
                let p = CellParams::new(kind, input_size, hidden_size, config.bias, rng);
                $name { weight_ih: p.weight_ih, weight_hh: p.weight_hh, bias_ih: p.bias_ih, bias_hh: p.bias_hh, kind }
            }

            /// Size of the input features.
            pub fn input_size(&self) -> usize {
                self.weight_ih.shape()[1]
            }

            /// Size of the hidden state.
            pub fn hidden_size(&self) -> usize {
                self.weight_hh.shape()[1]
            }

            fn params4(&self) -> CellRefs<'_, F> {
                (&self.weight_ih, &self.weight_hh, self.bias_ih.as_ref(), self.bias_hh.as_ref())
            }
        }
    };
}

cell!(
    RNNCell,
    c => Kind::Rnn(c.nonlinearity),
    "RNNCell",
    "An Elman cell `h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)` with `act` tanh or relu",
    "1",
    "let h = cell.forward(&x, None);\nassert_eq!(h.shape(), &[2, 5]);\nlet h2 = cell.forward(&x, Some(&h));"
);
cell!(
    LSTMCell,
    _c => Kind::Lstm,
    "LSTMCell",
    "A long short-term memory cell, gates stacked in PyTorch's order input, forget, cell, output",
    "4",
    "let (h, c) = cell.forward(&x, None);\nassert_eq!(c.shape(), &[2, 5]);\nlet (h2, c2) = cell.forward(&x, Some((&h, &c)));"
);
cell!(
    GRUCell,
    _c => Kind::Gru,
    "GRUCell",
    "A gated recurrent unit cell, gates stacked as reset, update, new, with PyTorch's \
     `n = tanh(x W_inᵀ + b_in + r * (h W_hnᵀ + b_hn))` and `h' = (1 - z) * n + z * h`",
    "3",
    "let h = cell.forward(&x, None);\nassert_eq!(h.shape(), &[2, 5]);\nlet h2 = cell.forward(&x, Some(&h));"
);

impl<F: Float> RNNCell<F> {
    /// One step: the new hidden state `[B, hidden]` from `x` `[B, input]` and `h` (zero if
    /// `None`); unbatched `[input]` and `[hidden]` work too.
    ///
    /// # Panics
    /// If the shapes do not fit the cell.
    #[track_caller]
    pub fn forward(&self, x: &Var<F>, h: Option<&Var<F>>) -> Var<F> {
        cell_forward(self.kind, self.params4(), x, h, None).0
    }

    /// The new hidden state from a zero state (also [`Module::forward`]).
    #[track_caller]
    pub fn forward_from_zero(&self, x: &Var<F>) -> Var<F> {
        self.forward(x, None)
    }

    /// The cell's non-linearity.
    pub fn nonlinearity(&self) -> RnnNonlinearity {
        match self.kind {
            Kind::Rnn(n) => n,
            _ => unreachable!("an RNNCell is an Elman cell"),
        }
    }
}

impl<F: Float> LSTMCell<F> {
    /// One step: `(h', c')`, each `[B, hidden]`, from `x` `[B, input]` and `(h, c)` (zeros if
    /// `None`); unbatched `[input]` and `[hidden]` work too.
    ///
    /// # Panics
    /// If the shapes do not fit the cell.
    #[track_caller]
    pub fn forward(&self, x: &Var<F>, state: Option<(&Var<F>, &Var<F>)>) -> (Var<F>, Var<F>) {
        let (h, c) = cell_forward(self.kind, self.params4(), x, state.map(|s| s.0), state.map(|s| s.1));
        (h, c.expect("LSTM step returns a cell state"))
    }

    /// The new hidden state `h'` from a zero state (also [`Module::forward`]).
    #[track_caller]
    pub fn forward_from_zero(&self, x: &Var<F>) -> Var<F> {
        self.forward(x, None).0
    }
}

impl<F: Float> GRUCell<F> {
    /// One step: the new hidden state `[B, hidden]` from `x` `[B, input]` and `h` (zero if
    /// `None`); unbatched `[input]` and `[hidden]` work too.
    ///
    /// # Panics
    /// If the shapes do not fit the cell.
    #[track_caller]
    pub fn forward(&self, x: &Var<F>, h: Option<&Var<F>>) -> Var<F> {
        cell_forward(self.kind, self.params4(), x, h, None).0
    }

    /// The new hidden state from a zero state (also [`Module::forward`]).
    #[track_caller]
    pub fn forward_from_zero(&self, x: &Var<F>) -> Var<F> {
        self.forward(x, None)
    }
}

// ---------------------------------------------------------------- multi-layer sequence layers

/// Options of [`RNN`], [`LSTM`] and [`GRU`] (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RNNConfig {
    /// Stacked layers, each reading the previous one's output (default 1).
    pub num_layers: usize,
    /// The non-linearity of an [`RNN`] (default `tanh`; ignored by LSTM and GRU).
    pub nonlinearity: RnnNonlinearity,
    /// Whether every layer has `bias_ih_l{k}` and `bias_hh_l{k}` (default `true`).
    pub bias: bool,
    /// Whether input and output are `[B, T, ..]` rather than `[T, B, ..]` (default `false`;
    /// states are `[layers * directions, B, hidden]` either way).
    pub batch_first: bool,
    /// Dropout probability on the output of every layer but the last, in training (default 0).
    pub dropout: f64,
    /// Whether each layer also reads the sequence backwards (default `false`).
    pub bidirectional: bool,
}

impl Default for RNNConfig {
    fn default() -> Self {
        RNNConfig {
            num_layers: 1,
            nonlinearity: RnnNonlinearity::Tanh,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
        }
    }
}

/// What the three layers share: parameters by PyTorch name, config, dropout.
struct Stack<F: Float> {
    kind: Kind,
    config: RNNConfig,
    input_size: usize,
    hidden_size: usize,
    /// `(name, param)` in PyTorch's state-dict order; per (layer, direction) 2 or 4 entries.
    params: Vec<(String, Param<F>)>,
    dropout: Dropout,
}

impl<F: Float> fmt::Debug for Stack<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.kind.name(true))
            .field("input_size", &self.input_size)
            .field("hidden_size", &self.hidden_size)
            .field("config", &self.config)
            .finish()
    }
}

impl<F: Float> Stack<F> {
    #[track_caller]
    fn new(kind: Kind, input_size: usize, hidden_size: usize, config: RNNConfig, rng: &mut impl Rng) -> Self {
        let name = kind.name(true);
        assert!(config.num_layers >= 1, "{name}: num_layers must be at least 1");
        assert!(
            (0.0..=1.0).contains(&config.dropout),
            "{name}: dropout probability {} is not in [0, 1]",
            config.dropout
        );
        let dirs = if config.bidirectional { 2 } else { 1 };
        let mut params = Vec::new();
        for layer in 0..config.num_layers {
            for dir in 0..dirs {
                let suffix = if dir == 1 { "_reverse" } else { "" };
                let input = if layer == 0 { input_size } else { dirs * hidden_size };
                let p = CellParams::new(kind, input, hidden_size, config.bias, rng);
                params.push((format!("weight_ih_l{layer}{suffix}"), p.weight_ih));
                params.push((format!("weight_hh_l{layer}{suffix}"), p.weight_hh));
                if let (Some(bi), Some(bh)) = (p.bias_ih, p.bias_hh) {
                    params.push((format!("bias_ih_l{layer}{suffix}"), bi));
                    params.push((format!("bias_hh_l{layer}{suffix}"), bh));
                }
            }
        }
        let dropout = Dropout::new(config.dropout, rng.random());
        Stack { kind, config, input_size, hidden_size, params, dropout }
    }

    fn dirs(&self) -> usize {
        if self.config.bidirectional {
            2
        } else {
            1
        }
    }

    fn per_cell(&self) -> usize {
        if self.config.bias {
            4
        } else {
            2
        }
    }

    fn param(&self, name: &str) -> Option<&Param<F>> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// Runs the whole stack. `state0` is `(h0, c0)` with `c0` for an LSTM only.
    #[track_caller]
    fn run(
        &self,
        x: &Var<F>,
        h0: Option<&Var<F>>,
        c0: Option<&Var<F>>,
        lengths: Option<&[usize]>,
    ) -> (Var<F>, Var<F>, Option<Var<F>>) {
        let name = self.kind.name(true);
        let (input, hidden, dirs, layers) = (self.input_size, self.hidden_size, self.dirs(), self.config.num_layers);
        assert!(
            (x.rank() == 2 || x.rank() == 3) && x.shape()[x.rank() - 1] == input,
            "{name}: input shape {:?} is not [T, B, {input}] ([B, T, {input}] with batch_first) or [T, {input}]",
            x.shape()
        );
        let unbatched = x.rank() == 2;
        // Time-major [T, B, input].
        let x = if unbatched {
            x.unsqueeze(1)
        } else if self.config.batch_first {
            x.transpose(0, 1)
        } else {
            x.clone()
        };
        let (steps, batch) = (x.shape()[0], x.shape()[1]);
        assert!(steps >= 1, "{name}: input shape {:?} has no time steps", x.shape());
        let state_shape: Vec<usize> =
            if unbatched { vec![layers * dirs, hidden] } else { vec![layers * dirs, batch, hidden] };
        let state0 = |s: Option<&Var<F>>, what: &str| {
            s.map(|s| {
                assert!(
                    s.shape() == state_shape.as_slice(),
                    "{name}: {what} shape {:?} is not {state_shape:?} (input shape {:?})",
                    s.shape(),
                    x.shape()
                );
                if unbatched {
                    s.unsqueeze(1)
                } else {
                    s.clone()
                }
            })
        };
        let h0 = state0(h0, "initial hidden state");
        let c0 = state0(c0, "initial cell state");
        // Per step, which sequences are still running; None when every sequence has every step.
        let masks: Option<Vec<Tensor<bool>>> = lengths.and_then(|lens| {
            assert!(
                lens.len() == batch,
                "{name}: {} lengths given for a batch of {batch} (input shape {:?})",
                lens.len(),
                x.shape()
            );
            assert!(
                lens.iter().all(|&l| (1..=steps).contains(&l)),
                "{name}: lengths {lens:?} must each be in 1..={steps} (input shape {:?})",
                x.shape()
            );
            (lens.iter().any(|&l| l < steps))
                .then(|| (0..steps).map(|t| Tensor::from_fn(&[batch, 1], |i| t < lens[i])).collect())
        });
        let zeros = Var::constant(Tensor::zeros(&[batch, hidden]));
        let is_lstm = self.kind == Kind::Lstm;
        let kind_gates = self.kind.gates();
        let mut layer_in = x;
        let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
        for layer in 0..layers {
            let mut outs = Vec::with_capacity(dirs);
            for dir in 0..dirs {
                let idx = layer * dirs + dir;
                let ps = &self.params[idx * self.per_cell()..(idx + 1) * self.per_cell()];
                let (w_ih, w_hh) = (ps[0].1.var(), ps[1].1.var());
                let (b_ih, b_hh) =
                    if self.config.bias { (Some(ps[2].1.var()), Some(ps[3].1.var())) } else { (None, None) };
                // Outside GRU's reset gate both biases are added to the same sum: add them once,
                // to the input projection, rather than once per step.
                let (b_ih, b_hh) = match (self.kind, b_ih, b_hh) {
                    (Kind::Gru, bi, bh) => (bi, bh),
                    (_, Some(bi), Some(bh)) => (Some(&bi + &bh), None),
                    (_, bi, bh) => (bi, bh),
                };
                if is_lstm {
                    // The input projection of every step in one GEMM, then the whole recurrence
                    // (bias included), as one op: one tape node, and both weights' gradients
                    // accumulated step by step from the same packed gate gradients.
                    let (out, h, c) = Var::fused_lstm_layer(
                        &layer_in,
                        &w_ih,
                        b_ih.as_ref(),
                        &w_hh,
                        h0.as_ref().map(|h| h.select(0, idx)).as_ref(),
                        c0.as_ref().map(|c| c.select(0, idx)).as_ref(),
                        masks.is_some().then_some(lengths).flatten(),
                        dir == 1,
                    );
                    outs.push(out);
                    h_n.push(h);
                    c_n.push(c);
                    continue;
                }
                // The input projection of every step in one GEMM, then one view per step
                // (`unbind` gathers the steps' gradients into one buffer in backward).
                let flat_in = layer_in.reshape(&[steps * batch, layer_in.shape()[2]]);
                let gx_steps =
                    project(&flat_in, &w_ih, b_ih.as_ref()).reshape(&[steps, batch, kind_gates * hidden]).unbind(0);
                let w_hh_t = w_hh.t().contiguous();
                let mut h = h0.as_ref().map_or_else(|| zeros.clone(), |h| h.select(0, idx));
                let mut c = is_lstm.then(|| c0.as_ref().map_or_else(|| zeros.clone(), |c| c.select(0, idx)));
                let mut out: Vec<Option<Var<F>>> = vec![None; steps];
                let order: Box<dyn Iterator<Item = usize>> =
                    if dir == 0 { Box::new(0..steps) } else { Box::new((0..steps).rev()) };
                for t in order {
                    let (h_new, c_new) = step(self.kind, &gx_steps[t], &h, c.as_ref(), &w_hh_t, b_hh.as_ref());
                    match &masks {
                        Some(m) => {
                            let m = &m[t];
                            out[t] = Some(Var::where_(m, &h_new, &zeros));
                            h = Var::where_(m, &h_new, &h);
                            c = c_new.map(|cn| Var::where_(m, &cn, c.as_ref().expect("LSTM cell state")));
                        }
                        None => {
                            out[t] = Some(h_new.clone());
                            h = h_new;
                            c = c_new;
                        }
                    }
                }
                let out: Vec<Var<F>> = out.into_iter().map(|o| o.expect("every step ran")).collect();
                outs.push(Var::stack(&out.iter().collect::<Vec<_>>(), 0));
                h_n.push(h);
                c_n.extend(c);
            }
            layer_in = if dirs == 1 { outs.pop().expect("one direction") } else { Var::cat(&[&outs[0], &outs[1]], 2) };
            if layer + 1 < layers {
                layer_in = self.dropout.forward(&layer_in);
            }
        }
        let stack_states = |s: Vec<Var<F>>| {
            let s = Var::stack(&s.iter().collect::<Vec<_>>(), 0);
            if unbatched {
                s.squeeze_dim(1)
            } else {
                s
            }
        };
        let output = if unbatched {
            layer_in.squeeze_dim(1)
        } else if self.config.batch_first {
            layer_in.transpose(0, 1)
        } else {
            layer_in
        };
        (output, stack_states(h_n), is_lstm.then(|| stack_states(c_n)))
    }
}

macro_rules! layer {
    ($name:ident, $c:ident => $kind:expr, $doc:literal, $example:literal) => {
        #[doc = concat!($doc, ", as `torch.nn.", stringify!($name), "`.")]
        ///
        /// Parameters are named as PyTorch's: `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`,
        /// `bias_hh_l{k}`, with a `_reverse` suffix for the backward direction of a bidirectional
        /// layer, all initialised U(-1/sqrt(hidden), 1/sqrt(hidden)).
        ///
        /// Input `[T, B, input]` (`[B, T, input]` with `batch_first`, or unbatched `[T, input]`);
        /// states `[layers * directions, B, hidden]` whatever `batch_first` says; output
        /// `[T, B, directions * hidden]` (batch-first if the input is). The inherent `forward`
        /// takes optional initial states and optional `lengths` and returns the output and the
        /// final states; [`Module::forward`] (what `Sequential` calls) returns the output from
        /// zero states.
        ///
        /// `lengths[b]` (in `1..=T`) is the number of valid steps of sequence `b`, as PyTorch's
        /// `pack_padded_sequence(.., enforce_sorted=False)`: padded steps leave the state
        /// unchanged (the reverse direction starts at each sequence's last valid step), their
        /// output is zero, and padded inputs receive exactly zero gradient.
        ///
        /// ```
        /// use ferrograd_autograd::Var;
        #[doc = concat!("use ferrograd_nn::layers::{", stringify!($name), ", RNNConfig};")]
        /// use ferrograd_tensor::Tensor;
        /// use rand::{rngs::StdRng, SeedableRng};
        /// let config = RNNConfig { num_layers: 2, bidirectional: true, batch_first: true, ..Default::default() };
        #[doc = concat!("let layer = ", stringify!($name), "::<f32>::with_config(3, 5, config, &mut StdRng::seed_from_u64(0));")]
        /// let x = Var::constant(Tensor::ones(&[4, 6, 3])); // [batch, time, input]
        #[doc = $example]
        /// ```
        pub struct $name<F: Float = f32> {
            stack: Stack<F>,
        }

        impl<F: Float> fmt::Debug for $name<F> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.stack.fmt(f)
            }
        }

        impl<F: Float> $name<F> {
            /// One layer, one direction, with biases, time-major: PyTorch's defaults.
            pub fn new(input_size: usize, hidden_size: usize, rng: &mut impl Rng) -> Self {
                Self::with_config(input_size, hidden_size, RNNConfig::default(), rng)
            }

            /// A layer with explicit options; its dropout generator is seeded from `rng`.
            ///
            /// # Panics
            /// If `num_layers` is 0 or `dropout` is not in `[0, 1]`.
            #[track_caller]
            pub fn with_config(input_size: usize, hidden_size: usize, config: RNNConfig, rng: &mut impl Rng) -> Self {
                let $c = &config;
                $name { stack: Stack::new($kind, input_size, hidden_size, config, rng) }
            }

            /// The options.
            pub fn config(&self) -> RNNConfig {
                self.stack.config
            }

            /// Size of the input features.
            pub fn input_size(&self) -> usize {
                self.stack.input_size
            }

            /// Size of each direction's hidden state.
            pub fn hidden_size(&self) -> usize {
                self.stack.hidden_size
            }

            /// The parameter of PyTorch name `name` (`"weight_hh_l1_reverse"`), if there is one.
            pub fn param(&self, name: &str) -> Option<&Param<F>> {
                self.stack.param(name)
            }

            /// The output sequence from a zero state (also [`Module::forward`]).
            #[track_caller]
            pub fn forward_from_zero(&self, x: &Var<F>) -> Var<F> {
                self.stack.run(x, None, None, None).0
            }
        }

        impl<F: Float> Module<F> for $name<F> {
            fn forward(&self, input: &Var<F>) -> Var<F> {
                self.forward_from_zero(input)
            }

            fn params(&self) -> Vec<(&str, &Param<F>)> {
                self.stack.params.iter().map(|(n, p)| (n.as_str(), p)).collect()
            }

            fn set_training_self(&self, training: bool) {
                self.stack.dropout.train(training);
            }
        }
    };
}

layer!(
    RNN,
    c => Kind::Rnn(c.nonlinearity),
    "A multi-layer Elman RNN (tanh or relu)",
    "let (out, h_n) = layer.forward(&x, None, Some(&[6, 4, 5, 1]));\nassert_eq!(out.shape(), &[4, 6, 10]);\nassert_eq!(h_n.shape(), &[4, 4, 5]);"
);
layer!(
    LSTM,
    _c => Kind::Lstm,
    "A multi-layer long short-term memory",
    "let (out, (h_n, c_n)) = layer.forward(&x, None, None);\nassert_eq!(out.shape(), &[4, 6, 10]);\nassert_eq!(c_n.shape(), &[4, 4, 5]);"
);
layer!(
    GRU,
    _c => Kind::Gru,
    "A multi-layer gated recurrent unit",
    "let (out, h_n) = layer.forward(&x, None, None);\nassert_eq!(out.shape(), &[4, 6, 10]);\nassert_eq!(h_n.shape(), &[4, 4, 5]);"
);

impl<F: Float> RNN<F> {
    /// The output sequence and the final hidden states from `x`, the initial hidden states `h0`
    /// `[layers * directions, B, hidden]` (zeros if `None`) and optional per-sequence `lengths`.
    ///
    /// # Panics
    /// If a shape does not fit the layer, or `lengths` has the wrong count or a length outside
    /// `1..=T`.
    #[track_caller]
    pub fn forward(&self, x: &Var<F>, h0: Option<&Var<F>>, lengths: Option<&[usize]>) -> (Var<F>, Var<F>) {
        let (out, h, _) = self.stack.run(x, h0, None, lengths);
        (out, h)
    }
}

impl<F: Float> GRU<F> {
    /// The output sequence and the final hidden states from `x`, the initial hidden states `h0`
    /// `[layers * directions, B, hidden]` (zeros if `None`) and optional per-sequence `lengths`.
    ///
    /// # Panics
    /// If a shape does not fit the layer, or `lengths` has the wrong count or a length outside
    /// `1..=T`.
    #[track_caller]
    pub fn forward(&self, x: &Var<F>, h0: Option<&Var<F>>, lengths: Option<&[usize]>) -> (Var<F>, Var<F>) {
        let (out, h, _) = self.stack.run(x, h0, None, lengths);
        (out, h)
    }
}

impl<F: Float> LSTM<F> {
    /// The output sequence and the final `(h_n, c_n)` from `x`, the initial `(h0, c0)`, each
    /// `[layers * directions, B, hidden]` (zeros if `None`), and optional per-sequence `lengths`.
    ///
    /// # Panics
    /// If a shape does not fit the layer, or `lengths` has the wrong count or a length outside
    /// `1..=T`.
    #[track_caller]
    #[allow(clippy::type_complexity)]
    pub fn forward(
        &self,
        x: &Var<F>,
        state: Option<(&Var<F>, &Var<F>)>,
        lengths: Option<&[usize]>,
    ) -> (Var<F>, (Var<F>, Var<F>)) {
        let (out, h, c) = self.stack.run(x, state.map(|s| s.0), state.map(|s| s.1), lengths);
        (out, (h, c.expect("an LSTM has a cell state")))
    }
}
