//! Int8 quantization: parameters and observers, a quantized tensor type, an int8 GEMM,
//! post-training (dynamic and static) and quantization-aware training of Linear models.

mod conv;
mod fake;
mod model;
mod observer;
mod qtensor;

pub mod gemm;
pub mod simd;

pub use conv::QuantizedConv2d;
pub use fake::{fake_quantize, fake_quantize_mask, QatLinear};
pub use model::{FloatLayer, InputQuant, QuantizedLayer, QuantizedLinear, QuantizedSequential};
pub use observer::{
    channel_min_max, percentile, MinMaxObserver, MovingAverageMinMaxObserver, Observer, ObserverConfig,
    PercentileObserver,
};
pub use qtensor::{QData, QDtype, QParams, QScheme, QTensor};
