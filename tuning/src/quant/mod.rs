//! Int8 quantization: parameters and observers, a quantized tensor type, the int8 layers and
//! post-training (dynamic and static) and quantization-aware training of Linear and Conv2d
//! models. The int8 kernels (GEMM, Conv2d, quantize and min/max SIMD) live in
//! `ferrograd_tensor::quant` beside the other kernels and are re-exported here.

mod fake;
mod model;
mod observer;
mod qconv;
mod qtensor;

/// The int8 Conv2d kernel (direct VNNI and im2col), in the tensor crate beside the other kernels.
pub use ferrograd_tensor::quant::conv;
/// The int8 GEMM, moved to the tensor crate beside the other kernels (same items, same path).
pub use ferrograd_tensor::quant::gemm;
/// The SIMD quantize and min/max passes, moved to the tensor crate (same items, same path).
pub use ferrograd_tensor::quant::simd;

pub use fake::{fake_quantize, fake_quantize_mask, QatConv2d, QatLinear};
pub use model::{FloatLayer, InputQuant, QuantizedLayer, QuantizedLinear, QuantizedSequential};
pub use observer::{
    channel_min_max, percentile, MinMaxObserver, MovingAverageMinMaxObserver, Observer, ObserverConfig,
    PercentileObserver,
};
pub use qconv::QuantizedConv2d;
pub use qtensor::{QData, QDtype, QParams, QScheme, QTensor};
