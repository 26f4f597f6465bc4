//! Int8 quantization: parameters and observers, a quantized tensor type, an int8 GEMM,
//! post-training (dynamic and static) and quantization-aware training of Linear and Conv2d models.

mod conv;
mod fake;
mod model;
mod observer;
mod qtensor;

pub mod gemm;
pub mod simd;

pub use conv::QuantizedConv2d;
pub use fake::{fake_quantize, fake_quantize_mask, QatConv2d, QatLinear};
pub use model::{FloatLayer, InputQuant, QuantizedLayer, QuantizedLinear, QuantizedSequential};
pub use observer::{
    channel_min_max, percentile, MinMaxObserver, MovingAverageMinMaxObserver, Observer, ObserverConfig,
    PercentileObserver,
};
pub use qtensor::{QData, QDtype, QParams, QScheme, QTensor};
