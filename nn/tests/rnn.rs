//! Recurrent cells and layers against PyTorch (`fixtures/rnn.txt`, written by
//! `fixtures/gen_rnn.py`): outputs, final states and the gradients of the input, the initial
//! states and every parameter, in f64 (1e-10) and f32 (1e-5); PyTorch's own state_dict loading;
//! padded steps; gradcheck and gradgradcheck of every cell and layer.

use std::collections::BTreeMap;

use ferrograd_autograd::Var;
use ferrograd_nn::check::{gradcheck_module_with, gradgradcheck_module_with, GradcheckOptions};
use ferrograd_nn::layers::{
    GRUCell, LSTMCell, Linear, RNNCell, RNNCellConfig, RNNConfig, RnnNonlinearity, Sequential, GRU, LSTM, RNN,
};
use ferrograd_nn::{load_module, Module};
use ferrograd_tensor::{Float, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_normal(shape, 0.0, 1.0, &mut rng(seed))
}

/// `fixtures/rnn.txt`: name -> tensor.
fn fixture() -> BTreeMap<String, Tensor<f64>> {
    include_str!("fixtures/rnn.txt")
        .lines()
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

#[track_caller]
fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what} element {i}: got {g}, want {w}");
    }
}

/// One of the six module types, built like the fixture's torch module.
enum Net<F: Float> {
    RnnCell(RNNCell<F>),
    LstmCell(LSTMCell<F>),
    GruCell(GRUCell<F>),
    Rnn(RNN<F>),
    Lstm(LSTM<F>),
    Gru(GRU<F>),
}

impl<F: Float> Net<F> {
    fn module(&self) -> &dyn Module<F> {
        match self {
            Net::RnnCell(m) => m,
            Net::LstmCell(m) => m,
            Net::GruCell(m) => m,
            Net::Rnn(m) => m,
            Net::Lstm(m) => m,
            Net::Gru(m) => m,
        }
    }

    /// Named outputs, as the fixture names them.
    fn run(
        &self,
        x: &Var<F>,
        h0: Option<&Var<F>>,
        c0: Option<&Var<F>>,
        lengths: Option<&[usize]>,
    ) -> Vec<(&'static str, Var<F>)> {
        let hc = h0.zip(c0);
        match self {
            Net::RnnCell(m) => vec![("h", m.forward(x, h0))],
            Net::GruCell(m) => vec![("h", m.forward(x, h0))],
            Net::LstmCell(m) => {
                let (h, c) = m.forward(x, hc);
                vec![("h", h), ("c", c)]
            }
            Net::Rnn(m) => {
                let (o, h) = m.forward(x, h0, lengths);
                vec![("output", o), ("h_n", h)]
            }
            Net::Gru(m) => {
                let (o, h) = m.forward(x, h0, lengths);
                vec![("output", o), ("h_n", h)]
            }
            Net::Lstm(m) => {
                let (o, (h, c)) = m.forward(x, hc, lengths);
                vec![("output", o), ("h_n", h), ("c_n", c)]
            }
        }
    }

    /// Everything `run` returns, flattened into one vector (for the gradient checks).
    fn run_flat(&self, x: &Var<F>, h0: Option<&Var<F>>, c0: Option<&Var<F>>, lengths: Option<&[usize]>) -> Var<F> {
        let outs: Vec<Var<F>> =
            self.run(x, h0, c0, lengths).into_iter().map(|(_, o)| o.reshape(&[o.numel()])).collect();
        Var::cat(&outs.iter().collect::<Vec<_>>(), 0)
    }
}

fn cell_config(bias: bool, nonlinearity: RnnNonlinearity) -> RNNCellConfig {
    RNNCellConfig { bias, nonlinearity }
}

/// The module of fixture case `case`, with random parameters (the test loads PyTorch's).
fn build<F: Float>(case: &str) -> Net<F> {
    let r = &mut rng(1);
    let tanh = RnnNonlinearity::Tanh;
    let cfg = |num_layers, bidirectional, batch_first| RNNConfig {
        num_layers,
        bidirectional,
        batch_first,
        ..Default::default()
    };
    match case {
        "rnncell_tanh" => Net::RnnCell(RNNCell::new(4, 3, r)),
        "rnncell_relu" => Net::RnnCell(RNNCell::with_config(4, 3, cell_config(true, RnnNonlinearity::Relu), r)),
        "lstmcell" => Net::LstmCell(LSTMCell::new(4, 3, r)),
        "grucell" => Net::GruCell(GRUCell::new(4, 3, r)),
        "grucell_nobias" => Net::GruCell(GRUCell::with_config(4, 3, cell_config(false, tanh), r)),
        "rnn_2l_bi" | "rnn_len" => Net::Rnn(RNN::with_config(4, 3, cfg(2, true, false), r)),
        "rnn_relu_bf_nobias" => Net::Rnn(RNN::with_config(
            4,
            3,
            RNNConfig { nonlinearity: RnnNonlinearity::Relu, bias: false, batch_first: true, ..Default::default() },
            r,
        )),
        "lstm_2l_bi" => Net::Lstm(LSTM::with_config(4, 3, cfg(2, true, false), r)),
        "lstm_bf" => Net::Lstm(LSTM::with_config(4, 3, cfg(1, false, true), r)),
        "lstm_len" => Net::Lstm(LSTM::with_config(4, 3, cfg(2, true, true), r)),
        "gru_2l_bi" => Net::Gru(GRU::with_config(4, 3, cfg(2, true, false), r)),
        "gru_len" => Net::Gru(GRU::with_config(4, 3, cfg(1, true, true), r)),
        _ => panic!("unknown case {case}"),
    }
}

const CASES: [&str; 13] = [
    "rnncell_tanh",
    "rnncell_relu",
    "lstmcell",
    "grucell",
    "grucell_nobias",
    "rnn_2l_bi",
    "rnn_relu_bf_nobias",
    "rnn_len",
    "lstm_2l_bi",
    "lstm_bf",
    "lstm_len",
    "gru_2l_bi",
    "gru_len",
];

fn lengths_of(t: &BTreeMap<String, Tensor<f64>>, case: &str) -> Option<Vec<usize>> {
    t.get(&format!("{case}.lengths")).map(|l| l.to_vec().iter().map(|&v| v as usize).collect())
}

/// Loads PyTorch's parameters into our module through `load_state_dict` (so every name must be
/// PyTorch's), runs the fixture's loss, and compares outputs and gradients.
fn match_case<F: Float>(t: &BTreeMap<String, Tensor<f64>>, case: &str, tol: f64) {
    let net = build::<F>(case);
    let m = net.module();
    let prefix = format!("{case}.");
    let state: BTreeMap<String, Tensor<F>> = t
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|n| (n.to_string(), v)))
        .filter(|(n, _)| n.starts_with("weight_") || n.starts_with("bias_"))
        .map(|(n, v)| (n, v.cast::<F>()))
        .collect();
    m.load_state_dict(&state).unwrap_or_else(|e| panic!("{case}: PyTorch's state_dict does not load: {e}"));
    let leaf = |n: &str| t.get(&format!("{case}.{n}")).map(|v| Var::leaf(v.cast::<F>()));
    let (x, h0, c0) = (leaf("x").expect("x"), leaf("h0"), leaf("c0"));
    let lengths = lengths_of(t, case);
    let outs = net.run(&x, h0.as_ref(), c0.as_ref(), lengths.as_deref());
    let to64 = |v: &Var<F>| v.data().cast::<f64>().to_vec();
    let mut loss: Option<Var<F>> = None;
    for (name, o) in &outs {
        assert_close(&format!("{case}.{name}"), &to64(o), &t[&format!("{case}.{name}")].to_vec(), tol);
        let w = Var::constant(t[&format!("{case}.w_{name}")].cast::<F>());
        let term = (o * &w).sum();
        loss = Some(match loss {
            Some(l) => &l + &term,
            None => term,
        });
    }
    let grads = loss.expect("some output").backward();
    let leaves = [("x", Some(&x)), ("h0", h0.as_ref()), ("c0", c0.as_ref())];
    for (name, v) in leaves.iter().filter_map(|(n, v)| v.map(|v| (n, v))) {
        let g = grads.get(v).unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
        let g: Vec<f64> = g.cast::<f64>().to_vec();
        assert_close(&format!("{case}.grad.{name}"), &g, &t[&format!("{case}.grad.{name}")].to_vec(), tol);
    }
    for (name, p) in m.named_parameters() {
        let g = grads.get_param(&p).unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
        let g: Vec<f64> = g.cast::<f64>().to_vec();
        assert_close(&format!("{case}.grad.{name}"), &g, &t[&format!("{case}.grad.{name}")].to_vec(), tol);
    }
}

#[test]
fn cells_and_layers_match_pytorch_in_f64() {
    let t = fixture();
    for case in CASES {
        match_case::<f64>(&t, case, 1e-10);
    }
}

#[test]
fn cells_and_layers_match_pytorch_in_f32() {
    let t = fixture();
    for case in CASES {
        match_case::<f32>(&t, case, 1e-5);
    }
}

#[test]
fn parameter_names_and_shapes_are_pytorchs() {
    let lstm = LSTM::<f64>::with_config(
        4,
        3,
        RNNConfig { num_layers: 2, bidirectional: true, ..Default::default() },
        &mut rng(0),
    );
    let names: Vec<(String, Vec<usize>)> = lstm.named_parameters().into_iter().map(|(n, p)| (n, p.shape())).collect();
    let want = [
        ("weight_ih_l0", vec![12, 4]),
        ("weight_hh_l0", vec![12, 3]),
        ("bias_ih_l0", vec![12]),
        ("bias_hh_l0", vec![12]),
        ("weight_ih_l0_reverse", vec![12, 4]),
        ("weight_hh_l0_reverse", vec![12, 3]),
        ("bias_ih_l0_reverse", vec![12]),
        ("bias_hh_l0_reverse", vec![12]),
        ("weight_ih_l1", vec![12, 6]),
        ("weight_hh_l1", vec![12, 3]),
        ("bias_ih_l1", vec![12]),
        ("bias_hh_l1", vec![12]),
        ("weight_ih_l1_reverse", vec![12, 6]),
        ("weight_hh_l1_reverse", vec![12, 3]),
        ("bias_ih_l1_reverse", vec![12]),
        ("bias_hh_l1_reverse", vec![12]),
    ];
    assert_eq!(names, want.iter().map(|(n, s)| (n.to_string(), s.clone())).collect::<Vec<_>>());
    assert!(lstm.param("weight_hh_l1_reverse").is_some());
    let gru = GRU::<f64>::with_config(5, 2, RNNConfig { bias: false, ..Default::default() }, &mut rng(0));
    let names: Vec<String> = gru.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight_ih_l0", "weight_hh_l0"]);
    let cell = LSTMCell::<f64>::new(5, 2, &mut rng(0));
    let names: Vec<String> = cell.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]);
}

#[test]
fn init_is_uniform_within_one_over_sqrt_hidden() {
    let lstm = LSTM::<f64>::with_config(7, 16, RNNConfig { num_layers: 2, ..Default::default() }, &mut rng(3));
    let all: Vec<f64> = lstm.parameters().iter().flat_map(|p| p.value().to_vec()).collect();
    let bound = 0.25;
    assert!(all.iter().all(|v| v.abs() <= bound));
    // U(-b, b) has mean 0 and variance b^2 / 3.
    let n = all.len() as f64;
    let mean = all.iter().sum::<f64>() / n;
    let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((var - bound * bound / 3.0).abs() < 0.002, "variance {var}");
}

#[test]
fn pytorch_saved_state_dict_loads_with_load_module() {
    let t = fixture();
    let lstm = LSTM::<f64>::with_config(
        4,
        3,
        RNNConfig { num_layers: 2, bidirectional: true, ..Default::default() },
        &mut rng(0),
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch_lstm.safetensors");
    load_module(path, &lstm).unwrap();
    let x = Var::constant(t["lstm_2l_bi.x"].clone());
    let hc = (Var::constant(t["lstm_2l_bi.h0"].clone()), Var::constant(t["lstm_2l_bi.c0"].clone()));
    let (out, (h, c)) = lstm.forward(&x, Some((&hc.0, &hc.1)), None);
    assert_close("output", &out.to_vec(), &t["lstm_2l_bi.output"].to_vec(), 1e-10);
    assert_close("h_n", &h.to_vec(), &t["lstm_2l_bi.h_n"].to_vec(), 1e-10);
    assert_close("c_n", &c.to_vec(), &t["lstm_2l_bi.c_n"].to_vec(), 1e-10);
}

/// Padded steps: the final state and the valid outputs do not change whatever the padding holds,
/// padded outputs are zero, and padded inputs get exactly zero gradient.
#[test]
fn padded_steps_neither_change_the_state_nor_get_gradient() {
    let (steps, batch, input) = (6, 3, 4);
    let lengths = [6, 2, 4];
    for case in ["rnn_len", "lstm_len", "gru_len"] {
        let net = build::<f64>(case);
        let batch_first = !case.starts_with("rnn");
        let shape = if batch_first { [batch, steps, input] } else { [steps, batch, input] };
        let padded = |b: usize, s: usize| s >= lengths[b];
        let at = |i: usize| {
            let (a, rest) = (i / (shape[1] * input), i % (shape[1] * input) / input);
            if batch_first {
                (a, rest)
            } else {
                (rest, a)
            }
        };
        let x1 = randn(&shape, 5);
        let noise = randn(&shape, 6);
        // Same valid steps, different padding.
        let x2 = Tensor::from_fn(&shape, |i| {
            let (b, s) = at(i);
            if padded(b, s) {
                noise.to_vec()[i] * 100.0
            } else {
                x1.to_vec()[i]
            }
        });
        let (v1, v2) = (Var::leaf(x1.clone()), Var::leaf(x2));
        let o1 = net.run(&v1, None, None, Some(&lengths));
        let o2 = net.run(&v2, None, None, Some(&lengths));
        for ((name, a), (_, b)) in o1.iter().zip(&o2) {
            assert_eq!(a.to_vec(), b.to_vec(), "{case}: {name} depends on padding");
        }
        let out = o1[0].1.to_vec();
        let hidden = out.len() / (batch * steps);
        for (i, v) in out.iter().enumerate() {
            let row = i / hidden;
            let (b, s) = if batch_first { (row / steps, row % steps) } else { (row % batch, row / batch) };
            if padded(b, s) {
                assert_eq!(*v, 0.0, "{case}: padded output {i} is not zero");
            }
        }
        let loss =
            o1.iter().map(|(_, o)| (o * &Var::constant(randn(o.shape(), 9))).sum()).reduce(|a, b| &a + &b).unwrap();
        let g = loss.backward().get(&v1).expect("input gradient").to_vec();
        for (i, gi) in g.iter().enumerate() {
            let (b, s) = at(i);
            if padded(b, s) {
                assert_eq!(*gi, 0.0, "{case}: padded input {i} (sequence {b}, step {s}) got gradient {gi}");
            } else if s < lengths[b] {
                assert!(gi.is_finite());
            }
        }
        assert!(g.iter().any(|&gi| gi != 0.0), "{case}: no gradient at all");
    }
}

#[test]
fn full_lengths_equal_no_lengths_and_unbatched_equals_batch_of_one() {
    let net = build::<f64>("lstm_2l_bi");
    let x = randn(&[5, 2, 4], 2);
    let a = net.run_flat(&Var::constant(x.clone()), None, None, None).to_vec();
    let b = net.run_flat(&Var::constant(x.clone()), None, None, Some(&[5, 5])).to_vec();
    assert_eq!(a, b);
    if let Net::Lstm(m) = &net {
        let x0 = x.narrow(1, 0, 1);
        let (o, (h, _)) = m.forward(&Var::constant(x0.clone()), None, None);
        let (ou, (hu, _)) = m.forward(&Var::constant(x0.reshape(&[5, 4])), None, None);
        assert_eq!(ou.shape(), &[5, 6]);
        assert_eq!(hu.shape(), &[4, 3]);
        assert_eq!(o.to_vec(), ou.to_vec());
        assert_eq!(h.to_vec(), hu.to_vec());
    }
    let cell = GRUCell::<f64>::new(4, 3, &mut rng(0));
    let x = randn(&[1, 4], 3);
    let h = cell.forward(&Var::constant(x.clone()), None).to_vec();
    let hu = cell.forward(&Var::constant(x.reshape(&[4])), None);
    assert_eq!(hu.shape(), &[3]);
    assert_eq!(h, hu.to_vec());
}

#[test]
fn layers_compose_in_sequential_through_module_forward() {
    let seq = Sequential::<f64>::new()
        .add(LSTM::with_config(4, 3, RNNConfig { batch_first: true, ..Default::default() }, &mut rng(0)))
        .add(Linear::new(3, 2, &mut rng(1)));
    let y = seq.forward(&Var::constant(randn(&[2, 5, 4], 0)));
    assert_eq!(y.shape(), &[2, 5, 2]);
    assert_eq!(seq.named_parameters()[0].0, "0.weight_ih_l0");
}

#[test]
fn dropout_between_layers_only_in_training() {
    let cfg = RNNConfig { num_layers: 2, dropout: 0.5, ..Default::default() };
    let gru = GRU::<f64>::with_config(4, 3, cfg, &mut rng(0));
    let x = Var::constant(randn(&[5, 2, 4], 1));
    let a = gru.forward(&x, None, None).0.to_vec();
    let b = gru.forward(&x, None, None).0.to_vec();
    assert_ne!(a, b, "training-mode dropout should draw new masks");
    gru.eval();
    let c = gru.forward(&x, None, None).0.to_vec();
    assert_eq!(c, gru.forward(&x, None, None).0.to_vec());
    // One layer: dropout never applies (PyTorch only drops between layers).
    let one = GRU::<f64>::with_config(4, 3, RNNConfig { dropout: 0.5, ..Default::default() }, &mut rng(0));
    assert_eq!(one.forward(&x, None, None).0.to_vec(), one.forward(&x, None, None).0.to_vec());
}

#[test]
#[should_panic(expected = "LSTM: input shape [5, 2, 3] is not [T, B, 4]")]
fn wrong_input_size_names_layer_and_shapes() {
    let lstm = LSTM::<f64>::new(4, 3, &mut rng(0));
    lstm.forward(&Var::constant(Tensor::zeros(&[5, 2, 3])), None, None);
}

#[test]
#[should_panic(expected = "GRU: lengths [3, 0] must each be in 1..=3")]
fn zero_length_is_refused() {
    let gru = GRU::<f64>::new(4, 3, &mut rng(0));
    gru.forward(&Var::constant(Tensor::zeros(&[3, 2, 4])), None, Some(&[3, 0]));
}

#[test]
#[should_panic(expected = "RNNCell: hidden state shape [2, 4] is not [2, 3]")]
fn wrong_cell_state_is_refused() {
    let cell = RNNCell::<f64>::new(4, 3, &mut rng(0));
    cell.forward(&Var::constant(Tensor::zeros(&[2, 4])), Some(&Var::constant(Tensor::zeros(&[2, 4]))));
}

/// First derivatives of every cell and layer, with respect to input, states and every parameter.
#[test]
fn gradcheck_every_cell_and_layer() {
    let opts = GradcheckOptions::default();
    for case in CASES {
        let net = build::<f64>(case);
        let t = fixture();
        let x = t[&format!("{case}.x")].clone();
        let mut inputs = vec![x];
        for s in ["h0", "c0"] {
            if let Some(v) = t.get(&format!("{case}.{s}")) {
                inputs.push(v.clone());
            }
        }
        let lengths = lengths_of(&t, case);
        let is_lstm = matches!(net, Net::Lstm(_) | Net::LstmCell(_));
        gradcheck_module_with(
            net.module(),
            &inputs,
            |v| {
                let (h, c) = if is_lstm && v.len() == 3 { (v.get(1), v.get(2)) } else { (v.get(1), None) };
                net.run_flat(&v[0], h, c, lengths.as_deref())
            },
            &opts,
        )
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    }
}

/// Second derivatives on tiny shapes: one cell of each kind and a bidirectional layer with
/// padding of each kind.
#[test]
fn gradgradcheck_cells_and_tiny_layers() {
    let opts = GradcheckOptions::default();
    let r = &mut rng(4);
    let x = randn(&[2, 2], 1);
    let h = randn(&[2, 2], 2);
    let c = randn(&[2, 2], 3);
    let cell = RNNCell::<f64>::new(2, 2, r);
    gradgradcheck_module_with(&cell, &[x.clone(), h.clone()], |v| cell.forward(&v[0], Some(&v[1])), &opts).unwrap();
    let cell = GRUCell::<f64>::new(2, 2, r);
    gradgradcheck_module_with(&cell, &[x.clone(), h.clone()], |v| cell.forward(&v[0], Some(&v[1])), &opts).unwrap();
    let cell = LSTMCell::<f64>::new(2, 2, r);
    gradgradcheck_module_with(
        &cell,
        &[x, h, c],
        |v| {
            let (h, c) = cell.forward(&v[0], Some((&v[1], &v[2])));
            Var::cat(&[&h, &c], 1)
        },
        &opts,
    )
    .unwrap();

    let cfg = RNNConfig { bidirectional: true, batch_first: true, ..Default::default() };
    let x = randn(&[2, 3, 2], 5);
    let lengths = [3, 2];
    let rnn = RNN::<f64>::with_config(2, 2, cfg, r);
    gradgradcheck_module_with(&rnn, std::slice::from_ref(&x), |v| rnn.forward(&v[0], None, Some(&lengths)).0, &opts)
        .unwrap();
    let gru = GRU::<f64>::with_config(2, 2, cfg, r);
    gradgradcheck_module_with(&gru, std::slice::from_ref(&x), |v| gru.forward(&v[0], None, Some(&lengths)).0, &opts)
        .unwrap();
    let lstm = LSTM::<f64>::with_config(2, 2, cfg, r);
    gradgradcheck_module_with(
        &lstm,
        std::slice::from_ref(&x),
        |v| {
            let (o, (_, c)) = lstm.forward(&v[0], None, Some(&lengths));
            Var::cat(&[&o.reshape(&[o.numel()]), &c.reshape(&[c.numel()])], 0)
        },
        &opts,
    )
    .unwrap();
}
