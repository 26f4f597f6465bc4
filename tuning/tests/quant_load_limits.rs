//! Loading a quantized model checks what its options make the first forward pass allocate:
//! a tiny file must not be able to make `forward` exhaust memory.

use ferrograd_nn::layers::{Conv2d, Conv2dConfig};
use ferrograd_nn::NnError;
use ferrograd_tensor::Tensor;
use ferrograd_tuning::quant::{FloatLayer, QuantizedSequential};
use rand::{rngs::StdRng, SeedableRng};

fn conv_model(kernel: usize, cfg: Conv2dConfig) -> QuantizedSequential {
    let conv = Conv2d::with_config(1, 1, [kernel, kernel], cfg, &mut StdRng::seed_from_u64(0));
    QuantizedSequential::dynamic(&[FloatLayer::Conv2d(&conv)])
}

fn saved(name: &str, model: &QuantizedSequential) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("ferrograd-quant-limits-{}-{name}.safetensors", std::process::id()));
    model.save(&path).unwrap();
    path
}

#[test]
fn a_conv_padding_of_2_pow_20_is_refused_at_load() {
    // As in the report (a 381-byte file whose first forward pass asked for 17.6 TB): one 1x1
    // conv with padding 2^20, in a few hundred bytes. (A layer built in memory is not checked:
    // only what a file makes us allocate is.)
    let cfg = Conv2dConfig { padding: [1 << 20, 1 << 20], bias: false, ..Default::default() };
    let path = saved("pad", &conv_model(1, cfg));
    assert!(std::fs::metadata(&path).unwrap().len() < 400);
    let err = QuantizedSequential::load(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(&err, NnError::Format { problem, .. } if problem.contains("layer 0") && problem.contains("padding")),
        "{err}"
    );
}

#[test]
fn a_dilation_of_2_pow_20_is_refused_at_load() {
    let cfg = Conv2dConfig { dilation: [1 << 20, 1 << 20], ..Default::default() };
    let path = saved("dilation", &conv_model(3, cfg));
    let err = QuantizedSequential::load(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(&err, NnError::Format { problem, .. } if problem.contains("dilation")), "{err}");
}

#[test]
fn large_but_sane_options_load_and_run() {
    // Padding 200 on a 5x5 kernel: a 401 x 401 padded plane, well inside the limit.
    let cfg = Conv2dConfig { padding: [200, 200], dilation: [2, 2], stride: [3, 3], ..Default::default() };
    let model = conv_model(5, cfg);
    let path = saved("sane", &model);
    let loaded = QuantizedSequential::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let x = Tensor::from_fn(&[1, 1, 4, 4], |i| i as f32 / 16.0);
    assert_eq!(loaded.forward(&x).to_vec(), model.forward(&x).to_vec());
}
