//! Kernels, one file per op family. Each file adds methods to [`Tensor`](crate::Tensor) and
//! holds both the fast contiguous path and the general strided one.

mod attention;
mod batch_norm;
mod binary;
mod compare;
mod concat;
mod conv;
mod index;
mod layer_norm;
mod matmul;
mod packed_gemm;
mod pad;
mod pool;
mod reduce;
mod rnn_cell;
pub(crate) mod simd_map;
mod softmax;
mod triangle;
pub(crate) mod unary;

pub use attention::{AttentionForward, AttentionGrads, AttentionMasks};
pub use batch_norm::{BatchNormForward, BatchNormGrads, LONG_ROW as BATCH_NORM_LONG_ROW};
pub use conv::*;
pub use layer_norm::{LayerNormForward, LayerNormGrads};
pub use matmul::*;
pub use pad::PadMode;
pub use pool::*;
pub use rnn_cell::{GruCellParts, LstmCellParts, LstmSequenceGrads, LstmSequenceParts};
