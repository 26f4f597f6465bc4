//! Int8 quantization: parameters and observers, a quantized tensor type, the int8 GEMM (its
//! kernels live in `ferrograd_tensor::quant`, re-exported here), post-training (dynamic and static) and quantization-aware training of Linear and Conv2d models.

mod conv;
mod fake;
mod model;
mod observer;
mod qtensor;

/// The int8 GEMM, moved to the tensor crate beside the other kernels (same items, same path).
pub use ferrograd_tensor::quant::gemm;
/// The SIMD quantize and min/max passes, moved to the tensor crate (same items, same path).
pub use ferrograd_tensor::quant::simd;

pub use conv::QuantizedConv2d;
pub use fake::{fake_quantize, fake_quantize_mask, QatConv2d, QatLinear};
pub use model::{FloatLayer, InputQuant, QuantizedLayer, QuantizedLinear, QuantizedSequential};
pub use observer::{
    channel_min_max, percentile, MinMaxObserver, MovingAverageMinMaxObserver, Observer, ObserverConfig,
    PercentileObserver,
};
pub use qtensor::{QData, QDtype, QParams, QScheme, QTensor};
