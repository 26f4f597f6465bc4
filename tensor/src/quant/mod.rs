//! Int8 kernels: the u8 x i8 GEMM with exact i32 accumulation ([`gemm`]: AVX-512 VNNI, AVX2
//! and scalar kernels behind one packed layout), the int8 Conv2d with its dequantize, ReLU and
//! max pooling fused in ([`conv`]: direct VNNI and im2col + GEMM) and the SIMD quantize and
//! min/max passes ([`simd`]). They sit here beside the float kernels; `ferrograd_tuning::quant` builds the
//! observers, fake quantization, post-training and quantization-aware passes and the quantized
//! layers on top of them, and re-exports both modules under its own path.

pub mod conv;
pub mod gemm;
pub mod simd;
