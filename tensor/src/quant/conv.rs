//! The int8 Conv2d kernel: uint8 activations (one scale and zero point) times int8 weights (one
//! scale per output channel) with exact i32 accumulation, dequantized to f32 with the bias, a
//! ReLU and a max pooling fused in. `ferrograd_tuning::quant::QuantizedConv2d` is the layer on
//! top: it quantizes the weights once ([`PackedConv2d`]), picks the input's scale and zero
//! point and calls [`conv2d_dequantize`].
//!
//! Two algorithms give bit-identical outputs (integer sums are exact whatever their order, and
//! the dequantize step is the same f32 operations):
//!
//! - [`ConvAlgorithm::Direct`], for stride 1 (any padding, dilation and groups), one image at a
//!   time: the image is quantized into zero-point-padded planes, then copied into up to three
//!   "4-tap" layouts where the 32-bit word at position `i` holds the bytes at `i`, `i + s`,
//!   `i + 2s`, `i + 3s` (`s` one step along the width, the height or the channels). A group of
//!   4 kernel taps that lie `s` apart is then, for 16 consecutive output positions, one 64-byte
//!   load, multiplied by the 4 weights of each output channel with one VNNI `vpdpbusd`.
//!   Output positions are counted over the padded width (`oy * wp + ox`), so a run of positions
//!   crosses rows without a break; the few columns past the output's width are computed and
//!   dropped. Output channels sit in registers, positions in the vector lanes: the accumulators
//!   of an output channel are its output plane, dequantized and stored 16 values at a time, then
//!   pooled or copied into place. No patch matrix, no transposition.
//! - [`ConvAlgorithm::Im2col`], for any options and every GEMM kernel: patches are unfolded
//!   [`MR`] output positions at a time, just before the GEMM kernel reads them, and each tile of
//!   accumulators is dequantized straight into the output.
//!
//! ```
//! use ferrograd_tensor::quant::conv::{conv2d_dequantize, PackedConv2d};
//! use ferrograd_tensor::quant::gemm::Dequantize;
//! use ferrograd_tensor::{Conv2dOptions, Tensor};
//! // One 2 x 2 output channel of weights 1, -1, 2, 0; inputs quantized exactly (scale 1).
//! let w = PackedConv2d::new(&[1, -1, 2, 0], [1, 1, 2, 2], Conv2dOptions::default());
//! let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[1, 1, 2, 3]);
//! let stage = Dequantize { a_scale: 1.0, a_zero: 0, w_scale: &[0.5], bias: Some(&[1.0]), relu: false };
//! let y = conv2d_dequantize(&x, &w, &stage, None);
//! assert_eq!(y.shape(), &[1, 1, 1, 2]);
//! assert_eq!(y.to_vec(), [0.5 * (1.0 - 2.0 + 8.0) + 1.0, 0.5 * (2.0 - 3.0 + 10.0) + 1.0]);
//! ```

use std::cell::RefCell;
use std::ops::Range;

use super::gemm::{gemm_blocks, Dequantize, Kernel, PackedB, MR, NR};
use super::simd::quantize_u8_into;
use crate::{Conv2dOptions, Pool2dOptions, Tensor};

/// How [`conv2d_dequantize_with`] lays out the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// 4-tap layouts of each image and positions in the vector lanes (stride 1; the scalar and
    /// AVX-512 VNNI kernels).
    Direct,
    /// Patches unfolded a few rows at a time into the int8 GEMM (any options, every kernel).
    Im2col,
}

impl ConvAlgorithm {
    /// Whether the algorithm runs `kernel` on this CPU for a convolution with `options`.
    pub fn supports(self, kernel: Kernel, options: &Conv2dOptions) -> bool {
        kernel.is_available()
            && match self {
                ConvAlgorithm::Im2col => true,
                ConvAlgorithm::Direct => {
                    options.stride == [1, 1] && matches!(kernel, Kernel::Scalar | Kernel::Avx512Vnni)
                }
            }
    }

    /// The fastest algorithm and kernel for `options` on this CPU.
    pub fn best(options: &Conv2dOptions) -> (ConvAlgorithm, Kernel) {
        if ConvAlgorithm::Direct.supports(Kernel::Avx512Vnni, options) {
            (ConvAlgorithm::Direct, Kernel::Avx512Vnni)
        } else {
            (ConvAlgorithm::Im2col, Kernel::best())
        }
    }
}

/// Which neighbours a 4-tap group takes: along the width, the height or the channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Along {
    Width = 0,
    Height = 1,
    Channels = 2,
}

/// Four kernel taps `(c, ky, kx)`, `(c, ky, kx) + step`, ... one step apart along `along`
/// (taps past the kernel carry zero weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TapGroup {
    along: Along,
    c: usize,
    ky: usize,
    kx: usize,
}

/// An int8 conv weight `[out, in / groups, kh, kw]` prepared once for both algorithms.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedConv2d {
    shape: [usize; 4],
    options: Conv2dOptions,
    /// For the im2col algorithm, one per group.
    packed: Vec<PackedB>,
    /// `Σ_k w` per output channel.
    row_sums: Vec<i32>,
    /// For the direct algorithm: the tap groups of one channel group ...
    taps: Vec<TapGroup>,
    /// ... and their weights `[groups][taps][out / groups]`, 4 bytes to a word.
    tap_weights: Vec<i32>,
}

impl PackedConv2d {
    /// Packs `weight` (`[out, in / groups, kh, kw]` = `shape`, row-major).
    ///
    /// # Panics
    /// If `weight.len()` does not match `shape` or the options are invalid (see
    /// [`check_conv2d_options`]).
    #[track_caller]
    pub fn new(weight: &[i8], shape: [usize; 4], options: Conv2dOptions) -> Self {
        let [out, cg, kh, kw] = shape;
        assert_eq!(weight.len(), out * cg * kh * kw, "PackedConv2d::new: {} values for shape {shape:?}", weight.len());
        if let Err(problem) = check_conv2d_options(&shape, &options) {
            panic!("PackedConv2d::new: {problem}");
        }
        let groups = options.groups;
        let (og, per_out) = (out / groups, cg * kh * kw);
        let packed =
            (0..groups).map(|g| PackedB::new(&weight[g * og * per_out..(g + 1) * og * per_out], og, per_out)).collect();
        let row_sums = weight.chunks_exact(per_out).map(|r| r.iter().map(|&v| i32::from(v)).sum()).collect();
        let taps = tap_groups(cg, kh, kw);
        let w = |j: usize, c: usize, ky: usize, kx: usize| {
            if ky < kh && kx < kw && c < cg {
                weight[((j * cg + c) * kh + ky) * kw + kx]
            } else {
                0
            }
        };
        let mut tap_weights = Vec::with_capacity(groups * taps.len() * og);
        for g in 0..groups {
            for t in &taps {
                for j in g * og..(g + 1) * og {
                    let bytes: [i8; 4] = std::array::from_fn(|i| match t.along {
                        Along::Width => w(j, t.c, t.ky, t.kx + i),
                        Along::Height => w(j, t.c, t.ky + i, t.kx),
                        Along::Channels => w(j, t.c + i, t.ky, t.kx),
                    });
                    tap_weights.push(i32::from_le_bytes(bytes.map(|b| b as u8)));
                }
            }
        }
        PackedConv2d { shape, options, packed, row_sums, taps, tap_weights }
    }

    /// The weight's shape `[out, in / groups, kh, kw]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Stride, padding, dilation and groups.
    pub fn options(&self) -> Conv2dOptions {
        self.options
    }

    /// `Σ w` over each output channel's weights (for the zero-point correction).
    pub fn row_sums(&self) -> &[i32] {
        &self.row_sums
    }

    /// The output's height and width for an input of `h x w`, or `None` if the input (with
    /// its padding) is smaller than the (dilated) kernel.
    pub fn output_size(&self, h: usize, w: usize) -> Option<[usize; 2]> {
        let o = &self.options;
        let span = |size: usize, k: usize, d: usize, s: usize, p: usize| {
            let eff = d * (k - 1) + 1;
            (size + 2 * p >= eff).then(|| (size + 2 * p - eff) / s + 1)
        };
        Some([
            span(h, self.shape[2], o.dilation[0], o.stride[0], o.padding[0])?,
            span(w, self.shape[3], o.dilation[1], o.stride[1], o.padding[1])?,
        ])
    }
}

/// The 4-tap groups covering a `cg x kh x kw` kernel: 1 x 1 kernels four channels at a time;
/// otherwise each kernel row four columns at a time, and the columns left over (`kw % 4`) four
/// rows at a time.
fn tap_groups(cg: usize, kh: usize, kw: usize) -> Vec<TapGroup> {
    let mut taps = Vec::new();
    if kh * kw == 1 {
        for c in (0..cg).step_by(4) {
            taps.push(TapGroup { along: Along::Channels, c, ky: 0, kx: 0 });
        }
        return taps;
    }
    let full = kw / 4 * 4;
    for c in 0..cg {
        for ky in 0..kh {
            for kx in (0..full).step_by(4) {
                taps.push(TapGroup { along: Along::Width, c, ky, kx });
            }
        }
        for kx in full..kw {
            for ky in (0..kh).step_by(4) {
                taps.push(TapGroup { along: Along::Height, c, ky, kx });
            }
        }
    }
    taps
}

/// `x [n, in, h, w]` quantized to uint8 with `stage.a_scale` and `stage.a_zero`, convolved
/// with `weight`, dequantized, `(acc - a_zero * Σ w) * (a_scale * w_scale) + bias` per output
/// channel, then `max(y, 0)` if `stage.relu` and max pooling if `max_pool` is given; the
/// fastest algorithm and kernel for this CPU ([`ConvAlgorithm::best`]).
///
/// # Panics
/// If `x` is not `[n, in, h, w]` with the weight's input channels, is smaller than the kernel,
/// the stage's lengths differ from the output channels, or the pooling does not fit the output.
#[track_caller]
pub fn conv2d_dequantize(
    x: &Tensor<f32>,
    weight: &PackedConv2d,
    stage: &Dequantize,
    max_pool: Option<&Pool2dOptions>,
) -> Tensor<f32> {
    let (algorithm, kernel) = ConvAlgorithm::best(&weight.options);
    conv2d_dequantize_with(algorithm, kernel, x, weight, stage, max_pool)
}

/// The output height and width of a max pooling over an `h x w` plane, or why it does not fit
/// (a kernel larger than the padded plane, padding over half the kernel, a zero size).
pub fn max_pool_output(options: &Pool2dOptions, h: usize, w: usize) -> Result<[usize; 2], String> {
    PlanePool::new(*options, h, w).map(|p| [p.ho, p.wo])
}

/// [`conv2d_dequantize`] with a chosen algorithm and kernel.
///
/// # Panics
/// As [`conv2d_dequantize`], and if `algorithm` does not support `kernel` and the options on
/// this CPU ([`ConvAlgorithm::supports`]).
#[track_caller]
pub fn conv2d_dequantize_with(
    algorithm: ConvAlgorithm,
    kernel: Kernel,
    x: &Tensor<f32>,
    weight: &PackedConv2d,
    stage: &Dequantize,
    max_pool: Option<&Pool2dOptions>,
) -> Tensor<f32> {
    let [out, cg, kh, kw] = weight.shape;
    let o = weight.options;
    let cin = cg * o.groups;
    assert!(
        x.rank() == 4 && x.shape()[1] == cin,
        "conv2d_dequantize: input shape {:?} does not match weight shape {:?} with {} groups",
        x.shape(),
        weight.shape,
        o.groups
    );
    assert!(
        algorithm.supports(kernel, &o),
        "conv2d_dequantize: {algorithm:?} with the {kernel:?} kernel is not available for {o:?} on this CPU"
    );
    assert!(
        stage.w_scale.len() == out && stage.bias.is_none_or(|b| b.len() == out),
        "conv2d_dequantize: {} scales and {:?} biases for {out} output channels",
        stage.w_scale.len(),
        stage.bias.map(<[f32]>::len)
    );
    let (n, h, w) = (x.shape()[0], x.shape()[2], x.shape()[3]);
    let Some([oh, ow]) = weight.output_size(h, w) else {
        panic!("conv2d_dequantize: input {:?} smaller than the kernel {:?}", x.shape(), weight.shape);
    };
    let pool = match max_pool {
        Some(p) => match PlanePool::new(*p, oh, ow) {
            Ok(pool) => Some(pool),
            Err(problem) => panic!("conv2d_dequantize: {problem}"),
        },
        None => None,
    };
    let x = x.contiguous();
    let xs = x.as_slice().expect("a contiguous tensor has a slice");
    let geometry = Geometry { n, cin, h, w, oh, ow, kh, kw, options: o };
    // The dequantize step per output channel: `(acc - offset) * multiplier + bias`.
    let epilogue = Epilogue {
        offsets: weight.row_sums.iter().map(|s| stage.a_zero * s).collect(),
        multipliers: stage.w_scale.iter().map(|s| stage.a_scale * s).collect(),
        biases: stage.bias.map_or_else(|| vec![0.0; out], <[f32]>::to_vec),
        relu: stage.relu,
    };
    let (yh, yw) = pool.as_ref().map_or((oh, ow), |p| (p.ho, p.wo));
    let mut y = Vec::with_capacity(n * out * yh * yw);
    match algorithm {
        ConvAlgorithm::Direct => {
            direct(kernel, &geometry, weight, xs, stage, &epilogue, pool.as_ref(), &mut y);
        }
        ConvAlgorithm::Im2col => {
            im2col(kernel, &geometry, weight, xs, stage, &epilogue, pool.as_ref(), &mut y);
        }
    }
    debug_assert_eq!(y.len(), n * out * yh * yw);
    Tensor::from_vec(y, &[n, out, yh, yw])
}

/// The dequantize step of each output channel.
struct Epilogue {
    offsets: Vec<i32>,
    multipliers: Vec<f32>,
    biases: Vec<f32>,
    relu: bool,
}

impl Epilogue {
    /// The real output of channel `c` for accumulator `acc`.
    #[inline(always)]
    fn apply(&self, acc: i32, c: usize) -> f32 {
        let v = (acc - self.offsets[c]) as f32 * self.multipliers[c] + self.biases[c];
        if self.relu {
            v.max(0.0)
        } else {
            v
        }
    }
}

thread_local! {
    /// The unpooled output of the im2col algorithm, reused from call to call (a fresh one
    /// costs a page fault per 4 KiB written).
    static UNPOOLED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The quantized, padded input of the im2col algorithm, reused from call to call.
    static PADDED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The buffers of the direct algorithm.
    static DIRECT: RefCell<DirectScratch> = RefCell::new(DirectScratch::default());
}

/// The im2col algorithm: see the module documentation.
#[allow(clippy::too_many_arguments)]
fn im2col(
    kernel: Kernel,
    geometry: &Geometry,
    weight: &PackedConv2d,
    xs: &[f32],
    stage: &Dequantize,
    epilogue: &Epilogue,
    pool: Option<&PlanePool>,
    y: &mut Vec<f32>,
) {
    let Geometry { n, oh, ow, .. } = *geometry;
    let [out, cg, ..] = weight.shape;
    let (og, positions) = (out / weight.options.groups, oh * ow);
    let m = n * positions;
    PADDED.with_borrow_mut(|padded| {
        geometry.pad_quantized(xs, stage.a_scale, stage.a_zero, padded);
        UNPOOLED.with_borrow_mut(|unpooled| {
            let target: &mut Vec<f32> = if pool.is_some() { &mut *unpooled } else { &mut *y };
            target.resize(n * out * positions, 0.0);
            let rows = geometry.kernel_rows(cg);
            for (g, packed) in weight.packed.iter().enumerate() {
                let fill = |r0: usize, buf: &mut [u8], kp: usize| {
                    geometry.fill_rows(padded, &rows, g * cg, r0..(r0 + MR).min(m), buf, kp)
                };
                gemm_blocks(kernel, m, packed, WORD, fill, |r0, j0, tile| {
                    let channels = j0..og.min(j0 + NR);
                    let (b, p) = (r0 / positions, r0 % positions);
                    let plane = |b: usize, j: usize| (b * out + g * og + j) * positions;
                    if p + MR <= positions {
                        // The whole tile is in one image: MR consecutive positions per channel.
                        for j in channels {
                            let dst: &mut [f32; MR] =
                                (&mut target[plane(b, j) + p..][..MR]).try_into().expect("MR outputs");
                            for (i, d) in dst.iter_mut().enumerate() {
                                *d = epilogue.apply(tile[i * NR + j - j0], g * og + j);
                            }
                        }
                    } else {
                        let (mut b, mut p) = (b, p);
                        for acc in tile.chunks_exact(NR).take(m - r0) {
                            for j in channels.clone() {
                                target[plane(b, j) + p] = epilogue.apply(acc[j - j0], g * og + j);
                            }
                            (b, p) = if p + 1 == positions { (b + 1, 0) } else { (b, p + 1) };
                        }
                    }
                });
            }
            if let Some(pool) = pool {
                for plane in unpooled.chunks_exact(positions) {
                    pool.apply(plane, ow, y);
                }
            }
        });
    });
}

/// Output positions per vector (i32 lanes of a 512-bit register).
const LANES: usize = 16;
/// Vectors of positions per kernel call, at most.
const VECS: usize = 4;
/// Output channels per kernel call, at most (`VECS * CHANNELS` accumulators in registers).
const CHANNELS: usize = 6;

/// The buffers of the direct algorithm, kept from call to call.
#[derive(Default)]
struct DirectScratch {
    /// One image, quantized, in zero-point-padded planes.
    padded: Vec<u8>,
    /// Its 4-tap layouts along the width, the height and the channels (those in use).
    spread: [Vec<u32>; 3],
    /// The dequantized outputs of one channel group, `[out / groups][positions]` over the
    /// padded width.
    staging: Vec<f32>,
}

/// What one kernel call reads: the 4-tap layouts of an image, the tap groups of a channel group
/// (which layout, and the offset from an output position), and their weights
/// `[taps][channels]`. Built by [`Block::new`], which checks that every tap of every position
/// below `positions` reads inside its layout: the kernels rely on it.
struct Block<'a> {
    spread: [&'a [u32]; 3],
    taps: &'a [(usize, usize)],
    weights: &'a [i32],
    channels: usize,
    positions: usize,
}

impl<'a> Block<'a> {
    #[track_caller]
    fn new(
        spread: [&'a [u32]; 3],
        taps: &'a [(usize, usize)],
        weights: &'a [i32],
        channels: usize,
        positions: usize,
    ) -> Self {
        assert!(
            taps.iter().all(|&(along, off)| along < 3 && off + positions <= spread[along].len())
                && weights.len() == taps.len() * channels
                && positions.is_multiple_of(LANES),
            "conv2d_dequantize: direct block out of bounds"
        );
        Block { spread, taps, weights, channels, positions }
    }
}

/// The direct algorithm: see the module documentation.
#[allow(clippy::too_many_arguments)]
fn direct(
    kernel: Kernel,
    geometry: &Geometry,
    weight: &PackedConv2d,
    xs: &[f32],
    stage: &Dequantize,
    epilogue: &Epilogue,
    pool: Option<&PlanePool>,
    y: &mut Vec<f32>,
) {
    let Geometry { n, cin, h, w, oh, ow, options: o, .. } = *geometry;
    let ([ph, pw], [dy, dx]) = (o.padding, o.dilation);
    let (hp, wp) = geometry.padded();
    let plane = hp * wp;
    let [out, cg, ..] = weight.shape;
    let og = out / o.groups;
    // Positions over the padded width, rounded up to whole vectors.
    let positions = (oh * wp).div_ceil(LANES) * LANES;
    let steps = [dx, dy * wp, plane];
    let offsets = |g: usize| -> Vec<(usize, usize)> {
        let base = g * cg * plane;
        weight.taps.iter().map(|t| (t.along as usize, base + t.c * plane + t.ky * dy * wp + t.kx * dx)).collect()
    };
    let group_taps: Vec<Vec<(usize, usize)>> = (0..o.groups).map(offsets).collect();
    let used: [bool; 3] = std::array::from_fn(|a| weight.taps.iter().any(|t| t.along as usize == a));
    // Every layout covers the furthest tap of the last position; the padded image covers what
    // its last word reads.
    let reach = group_taps.iter().flatten().map(|&(_, off)| off).max().unwrap_or(0) + positions;
    let max_step = (0..3).filter(|&a| used[a]).map(|a| steps[a]).max().unwrap_or(0);
    let padded_len = (cin * plane).max(reach + 3 * max_step);
    let per_group = weight.taps.len() * og;
    DIRECT.with_borrow_mut(|scratch| {
        let DirectScratch { padded, spread, staging } = scratch;
        staging.resize(og * positions, 0.0);
        for b in 0..n {
            let image = &xs[b * cin * h * w..(b + 1) * cin * h * w];
            padded.clear();
            padded.resize(padded_len, stage.a_zero as u8);
            if (ph, pw) == (0, 0) {
                quantize_u8_into(image, stage.a_scale, stage.a_zero, &mut padded[..image.len()]);
            } else {
                for (c, src) in image.chunks_exact(h * w).enumerate() {
                    for (r, row) in src.chunks_exact(w).enumerate() {
                        let at = c * plane + (r + ph) * wp + pw;
                        quantize_u8_into(row, stage.a_scale, stage.a_zero, &mut padded[at..at + w]);
                    }
                }
            }
            for a in (0..3).filter(|&a| used[a]) {
                spread_taps(padded, steps[a], reach, &mut spread[a]);
            }
            let layouts: [&[u32]; 3] = std::array::from_fn(|a| &spread[a][..]);
            for (g, taps) in group_taps.iter().enumerate() {
                let block =
                    Block::new(layouts, taps, &weight.tap_weights[g * per_group..(g + 1) * per_group], og, positions);
                let channels = &epilogue.slice(g * og..(g + 1) * og);
                for q0 in (0..positions).step_by(LANES * VECS) {
                    let vecs = VECS.min((positions - q0) / LANES);
                    for j0 in (0..og).step_by(CHANNELS) {
                        let rows = CHANNELS.min(og - j0);
                        run_direct(kernel, &block, q0, vecs, j0, rows, channels, staging);
                    }
                }
                for plane in staging.chunks_exact(positions) {
                    match pool {
                        Some(pool) => pool.apply(plane, wp, y),
                        None => {
                            for row in plane.chunks(wp).take(oh) {
                                y.extend_from_slice(&row[..ow]);
                            }
                        }
                    }
                }
            }
        }
    });
}

/// Replaces `out` with the first `len` words of the 4-tap layout of `padded` for step `s`:
/// word `i` holds bytes `i`, `i + s`, `i + 2s`, `i + 3s` (lowest first).
fn spread_taps(padded: &[u8], s: usize, len: usize, out: &mut Vec<u32>) {
    assert!(padded.len() >= len + 3 * s, "spread_taps: {} bytes for {len} words of step {s}", padded.len());
    // 16 words at a time with SSE2 (always there on x86-64), the rest one by one. Every word is
    // overwritten: the buffer is only cut or grown to size, not cleared (for each image).
    let whole = if cfg!(target_arch = "x86_64") { len / 16 * 16 } else { 0 };
    out.truncate(whole);
    out.resize(whole, 0);
    #[cfg(target_arch = "x86_64")]
    for (i, dst) in out.chunks_exact_mut(16).enumerate() {
        let src: [&[u8]; 4] = std::array::from_fn(|t| &padded[16 * i + t * s..][..16]);
        x86::spread16(src, dst.try_into().expect("16 words"));
    }
    let taps = padded[whole..len]
        .iter()
        .zip(&padded[whole + s..s + len])
        .zip(&padded[whole + 2 * s..2 * s + len])
        .zip(&padded[whole + 3 * s..]);
    out.extend(taps.map(|(((&a, &b), &c), &d)| u32::from_le_bytes([a, b, c, d])));
}

/// The dequantize step of a run of output channels.
struct Channels<'a> {
    offsets: &'a [i32],
    multipliers: &'a [f32],
    biases: &'a [f32],
    relu: bool,
}

impl Channels<'_> {
    /// The real output of channel `c` (of the run) for accumulator `acc`, as [`Epilogue::apply`].
    #[inline(always)]
    fn apply(&self, acc: i32, c: usize) -> f32 {
        let v = (acc - self.offsets[c]) as f32 * self.multipliers[c] + self.biases[c];
        if self.relu {
            v.max(0.0)
        } else {
            v
        }
    }
}

impl Epilogue {
    fn slice(&self, c: Range<usize>) -> Channels<'_> {
        Channels {
            offsets: &self.offsets[c.clone()],
            multipliers: &self.multipliers[c.clone()],
            biases: &self.biases[c],
            relu: self.relu,
        }
    }
}

/// Output channels `j0..j0 + rows` of the channel group at positions `q0..q0 + 16 * vecs`,
/// dequantized into `staging` (`[channels][block.positions]`).
#[allow(clippy::too_many_arguments)]
fn run_direct(
    kernel: Kernel,
    block: &Block,
    q0: usize,
    vecs: usize,
    j0: usize,
    rows: usize,
    channels: &Channels,
    staging: &mut [f32],
) {
    // Checked in every build: the AVX-512 kernel reads and writes through raw pointers within
    // these bounds (and those `Block::new` checked).
    assert!(
        (1..=VECS).contains(&vecs)
            && (1..=CHANNELS).contains(&rows)
            && q0 + LANES * vecs <= block.positions
            && j0 + rows <= block.channels
            && channels.offsets.len() == block.channels
            && staging.len() == block.channels * block.positions,
        "conv2d_dequantize: direct tile out of bounds"
    );
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => {
            // SAFETY: `ConvAlgorithm::supports` checked the CPU's AVX-512F and VNNI; the bounds
            // are checked above and in `Block::new`.
            unsafe { x86::direct_dispatch(block, q0, vecs, j0, rows, channels, staging) }
        }
        _ => direct_scalar(block, q0, vecs, j0, rows, channels, staging),
    }
}

/// The portable direct kernel, the reference for the others.
fn direct_scalar(
    block: &Block,
    q0: usize,
    vecs: usize,
    j0: usize,
    rows: usize,
    channels: &Channels,
    staging: &mut [f32],
) {
    for j in j0..j0 + rows {
        for q in q0..q0 + LANES * vecs {
            let mut acc = 0i32;
            for (t, &(along, off)) in block.taps.iter().enumerate() {
                let a = block.spread[along][off + q].to_le_bytes();
                let w = block.weights[t * block.channels + j].to_le_bytes();
                acc += (0..4).map(|i| i32::from(a[i]) * i32::from(w[i] as i8)).sum::<i32>();
            }
            staging[j * block.positions + q] = channels.apply(acc, j);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Block, Channels, LANES};

    /// `dst[i] = src[0][i] | src[1][i] << 8 | src[2][i] << 16 | src[3][i] << 24` for 16 words.
    pub(super) fn spread16(src: [&[u8]; 4], dst: &mut [u32; 16]) {
        let rows: [&[u8; 16]; 4] = src.map(|r| r.try_into().expect("16 bytes"));
        // SAFETY: each row is 16 readable bytes and `dst` 64 writable ones; loadu and storeu have
        // no alignment requirement; SSE2 is part of x86-64.
        unsafe {
            let [a, b, c, d] = rows.map(|r| _mm_loadu_si128(r.as_ptr().cast()));
            let (ab_lo, ab_hi) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
            let (cd_lo, cd_hi) = (_mm_unpacklo_epi8(c, d), _mm_unpackhi_epi8(c, d));
            let words = [
                _mm_unpacklo_epi16(ab_lo, cd_lo),
                _mm_unpackhi_epi16(ab_lo, cd_lo),
                _mm_unpacklo_epi16(ab_hi, cd_hi),
                _mm_unpackhi_epi16(ab_hi, cd_hi),
            ];
            for (k, w) in words.into_iter().enumerate() {
                _mm_storeu_si128(dst.as_mut_ptr().add(4 * k).cast(), w);
            }
        }
    }

    /// `v` where it is greater than `m` or NaN, else `m`: the max of `Tensor::max_pool2d`.
    #[target_feature(enable = "avx512f")]
    fn max_nan(m: __m512, v: __m512) -> __m512 {
        let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, m) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_mask_blend_ps(take, m, v)
    }

    /// 2 x 2 max pooling of the rows `r0` and `r1` into `out`, 16 outputs at a time, visiting
    /// each window as the scalar path does (top left, top right, bottom left, bottom right).
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `r0` and `r1` hold at least `2 * out.len()` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pool2x2_rows(r0: &[f32], r1: &[f32], out: &mut [f32]) {
        assert!(r0.len() >= 2 * out.len() && r1.len() >= 2 * out.len(), "pool2x2_rows: rows too short");
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let mask = |n: usize| -> __mmask16 {
            if n >= 16 {
                0xffff
            } else {
                (1u16 << n) - 1
            }
        };
        for i in (0..out.len()).step_by(16) {
            let k = (out.len() - i).min(16);
            let (lo, hi) = (mask(2 * k), mask((2 * k).saturating_sub(16)));
            // Masked loads of the `2k` values of each row from `2i` (the high half only when
            // there is one, so that no pointer goes past the row).
            let load = |r: &[f32]| -> (__m512, __m512) {
                // SAFETY: lanes set in `lo` and `hi` are below `2 * i + 2k <= r.len()`, and the
                // pointer of the high half is formed only if some of its lanes are.
                unsafe {
                    let p = r.as_ptr().add(2 * i);
                    let high = if hi != 0 { _mm512_maskz_loadu_ps(hi, p.add(16)) } else { _mm512_setzero_ps() };
                    (_mm512_maskz_loadu_ps(lo, p), high)
                }
            };
            let ((a_lo, a_hi), (b_lo, b_hi)) = (load(r0), load(r1));
            let pick = |lo: __m512, idx: __m512i, hi: __m512| _mm512_permutex2var_ps(lo, idx, hi);
            let mut m = pick(a_lo, even, a_hi);
            m = max_nan(m, pick(a_lo, odd, a_hi));
            m = max_nan(m, pick(b_lo, even, b_hi));
            m = max_nan(m, pick(b_lo, odd, b_hi));
            // SAFETY: lanes below `k` are inside `out` (`i + k <= out.len()`).
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), mask(k), m) };
        }
    }

    /// The AVX-512 VNNI kernel for `rows` (1 to 6) channels and `vecs` (1 to 4) vectors.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512 VNNI; the bounds checked by `run_direct` hold.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn direct_dispatch(
        block: &Block,
        q0: usize,
        vecs: usize,
        j0: usize,
        rows: usize,
        channels: &Channels,
        staging: &mut [f32],
    ) {
        macro_rules! by_vecs {
            ($r:literal) => {
                // SAFETY: as for this function.
                unsafe {
                    match vecs {
                        1 => tile::<$r, 1>(block, q0, j0, channels, staging),
                        2 => tile::<$r, 2>(block, q0, j0, channels, staging),
                        3 => tile::<$r, 3>(block, q0, j0, channels, staging),
                        _ => tile::<$r, 4>(block, q0, j0, channels, staging),
                    }
                }
            };
        }
        match rows {
            1 => by_vecs!(1),
            2 => by_vecs!(2),
            3 => by_vecs!(3),
            4 => by_vecs!(4),
            5 => by_vecs!(5),
            _ => by_vecs!(6),
        }
    }

    /// Channels `j0..j0 + R` at positions `q0..q0 + 16 V`: `R x V` accumulators, one 64-byte
    /// load per tap group and vector, one broadcast weight word per tap group and channel.
    ///
    /// # Safety
    /// As [`direct_dispatch`], with `R = rows` and `V = vecs`.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn tile<const R: usize, const V: usize>(
        block: &Block,
        q0: usize,
        j0: usize,
        channels: &Channels,
        staging: &mut [f32],
    ) {
        let mut acc = [[_mm512_setzero_si512(); V]; R];
        let weights = block.weights.as_ptr();
        for (t, &(along, off)) in block.taps.iter().enumerate() {
            let src = block.spread[along].as_ptr();
            let mut a = [_mm512_setzero_si512(); V];
            for (v, a) in a.iter_mut().enumerate() {
                // SAFETY: `Block::new` checked `off + positions <= spread[along].len()` and
                // `run_direct` `q0 + 16 V <= positions`, so the 16 words are inside the layout.
                *a = unsafe { _mm512_loadu_si512(src.add(off + q0 + LANES * v).cast()) };
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: `t < taps.len()` and `j0 + r < channels`, and `Block::new` checked
                // `weights.len() == taps.len() * channels`.
                let w = _mm512_set1_epi32(unsafe { weights.add(t * block.channels + j0 + r).read() });
                for (acc, &a) in acc_r.iter_mut().zip(&a) {
                    // u8 x i8, four products summed into each i32 lane, without saturation.
                    *acc = _mm512_dpbusd_epi32(*acc, a, w);
                }
            }
        }
        // `(acc - offset) as f32 * multiplier + bias` (a multiply then an add, as the scalar
        // kernel: no fused multiply-add), then the ReLU.
        for (r, acc_r) in acc.iter().enumerate() {
            let c = j0 + r;
            let offset = _mm512_set1_epi32(channels.offsets[c]);
            let multiplier = _mm512_set1_ps(channels.multipliers[c]);
            let bias = _mm512_set1_ps(channels.biases[c]);
            let dst = &mut staging[c * block.positions + q0..][..LANES * V];
            for (v, &acc) in acc_r.iter().enumerate() {
                let real = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, offset));
                let mut y = _mm512_add_ps(_mm512_mul_ps(real, multiplier), bias);
                if channels.relu {
                    y = _mm512_max_ps(y, _mm512_setzero_ps());
                }
                // SAFETY: `dst` has `16 V` writable f32 and `v < V`; storeu is unaligned.
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(LANES * v), y) };
            }
        }
    }
}
/// Max pooling of one `h x w` plane, as `Tensor::max_pool2d` (padding never wins).
struct PlanePool {
    options: Pool2dOptions,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl PlanePool {
    fn new(options: Pool2dOptions, h: usize, w: usize) -> Result<Self, String> {
        let Pool2dOptions { kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw], .. } = options;
        let fits = kh > 0
            && kw > 0
            && sh > 0
            && sw > 0
            && 2 * ph <= kh
            && 2 * pw <= kw
            && h + 2 * ph >= kh
            && w + 2 * pw >= kw;
        if !fits {
            return Err(format!("max pooling {options:?} does not fit an output of {h} x {w}"));
        }
        Ok(PlanePool { options, h, w, ho: (h + 2 * ph - kh) / sh + 1, wo: (w + 2 * pw - kw) / sw + 1 })
    }

    /// Appends the `ho x wo` maxima of `plane` (`h` rows of `w` values, `stride` apart) to `out`.
    fn apply(&self, plane: &[f32], stride: usize, out: &mut Vec<f32>) {
        let Pool2dOptions { kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw], .. } = self.options;
        // NaN wins, as in `Tensor::max_pool2d`.
        let max = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
        if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0) {
            // LeNet's pooling, in the general path's order of visits.
            #[cfg(target_arch = "x86_64")]
            let simd = is_x86_feature_detected!("avx512f");
            for py in 0..self.ho {
                let (r0, r1) =
                    (&plane[2 * py * stride..][..2 * self.wo], &plane[(2 * py + 1) * stride..][..2 * self.wo]);
                #[cfg(target_arch = "x86_64")]
                if simd {
                    let start = out.len();
                    out.resize(start + self.wo, 0.0);
                    // SAFETY: the CPU has AVX-512F; `r0` and `r1` hold `2 * wo` values.
                    unsafe { x86::pool2x2_rows(r0, r1, &mut out[start..]) };
                    continue;
                }
                out.extend(
                    r0.chunks_exact(2).zip(r1.chunks_exact(2)).map(|(a, b)| max(max(max(a[0], a[1]), b[0]), b[1])),
                );
            }
            return;
        }
        // The window of output `i` clipped to the plane; never empty since padding <= kernel / 2.
        let window =
            |i: usize, s: usize, p: usize, k: usize, size: usize| (i * s).saturating_sub(p)..(i * s + k - p).min(size);
        for py in 0..self.ho {
            let rows = window(py, sh, ph, kh, self.h);
            for px in 0..self.wo {
                let cols = window(px, sw, pw, kw, self.w);
                let mut m = f32::NEG_INFINITY;
                for r in rows.clone() {
                    m = plane[r * stride + cols.start..r * stride + cols.end].iter().fold(m, |m, &v| max(m, v));
                }
                out.push(m);
            }
        }
    }
}

/// Checks an int8 conv weight shape `[out, in / groups, kh, kw]` against its options: positive
/// stride, dilation and groups, kernel dims and `out` positive, and `groups` dividing `out`.
pub fn check_conv2d_options(weight_shape: &[usize], o: &Conv2dOptions) -> Result<(), String> {
    if o.stride.contains(&0) || o.dilation.contains(&0) || o.groups == 0 {
        return Err(format!(
            "stride {:?}, dilation {:?} and groups {} must be positive",
            o.stride, o.dilation, o.groups
        ));
    }
    if weight_shape.contains(&0) {
        return Err(format!("weight shape {weight_shape:?} has an empty dimension"));
    }
    if !weight_shape[0].is_multiple_of(o.groups) {
        return Err(format!("{} groups do not divide {} output channels", o.groups, weight_shape[0]));
    }
    Ok(())
}

/// Sizes of one convolution.
#[derive(Clone, Copy)]
struct Geometry {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    options: Conv2dOptions,
}

/// Bytes copied at once by [`Geometry::fill_rows`]; buffers carry this much slack at their end.
const WORD: usize = 8;

impl Geometry {
    /// Padded plane height and width.
    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.options.padding[0], self.w + 2 * self.options.padding[1])
    }

    /// Replaces `out` with the input `[n, cin, h, w]` quantized to uint8, each plane surrounded
    /// by its padding, filled with the zero point (which stands exactly for 0.0), plus [`WORD`]
    /// bytes of slack.
    fn pad_quantized(&self, x: &[f32], scale: f32, zero_point: i32, out: &mut Vec<u8>) {
        let (hp, wp) = self.padded();
        let [ph, pw] = self.options.padding;
        out.clear();
        out.resize(self.n * self.cin * hp * wp + WORD, zero_point as u8);
        if (ph, pw) == (0, 0) {
            quantize_u8_into(x, scale, zero_point, &mut out[..x.len()]);
            return;
        }
        for (plane, src) in x.chunks_exact(self.h * self.w).enumerate() {
            for (y, row) in src.chunks_exact(self.w).enumerate() {
                quantize_u8_into(row, scale, zero_point, &mut out[(plane * hp + y + ph) * wp + pw..][..self.w]);
            }
        }
    }

    /// Where each kernel row `(c, ky)` of a group of `channels` input channels starts, relative
    /// to a patch's top-left corner in the group's first channel of the padded input.
    fn kernel_rows(&self, channels: usize) -> Vec<usize> {
        let (hp, wp) = self.padded();
        let dy = self.options.dilation[0];
        (0..channels).flat_map(|c| (0..self.kh).map(move |ky| c * hp * wp + ky * dy * wp)).collect()
    }

    /// Patches of the padded input for output positions `positions` (of `n * oh * ow`), one
    /// row of `buf` each at a stride of `kp` bytes, columns in the weight's `(in, kh, kw)` order
    /// from input channel `first` on; `rows` from [`Geometry::kernel_rows`].
    ///
    /// Without dilation along the width, the `kw` taps of a kernel row are contiguous in the
    /// padded input and are copied [`WORD`] bytes at a time: a copy may run up to `WORD - 1`
    /// bytes past its segment, into the place of the next segment or the row's padding, which
    /// is written after it or never counted (`buf` has `WORD` bytes of slack for the last row).
    fn fill_rows(
        &self,
        padded: &[u8],
        rows: &[usize],
        first: usize,
        positions: Range<usize>,
        buf: &mut [u8],
        kp: usize,
    ) {
        let Geometry { cin, oh, ow, kw, options: o, .. } = *self;
        let (hp, wp) = self.padded();
        let ([sy, sx], dx) = (o.stride, o.dilation[1]);
        // The coordinates of the first position, then stepped (a division per row cost as much
        // as the copies).
        let (mut b, mut oy, mut ox) = (positions.start / (oh * ow), positions.start / ow % oh, positions.start % ow);
        // What the copies of one position may touch past its corner and its row of `buf`.
        let src_span = rows.iter().max().map_or(0, |&r| r + WORD);
        let dst_span = rows.len().saturating_sub(1) * kw + WORD;
        for i in 0..positions.len() {
            let corner = (b * cin + first) * hp * wp + oy * sy * wp + ox * sx;
            ox += 1;
            if ox == ow {
                ox = 0;
                oy += 1;
                if oy == oh {
                    oy = 0;
                    b += 1;
                }
            }
            let mut dst = i * kp;
            if dx == 1 && kw <= WORD {
                // One copy per kernel row (LeNet's 5 x 5), bounds checked once per position: with
                // a check per copy, the checks took as long as the copies.
                let src = &padded[corner..corner + src_span];
                let dst = &mut buf[dst..dst + dst_span];
                for (t, &row) in rows.iter().enumerate() {
                    // SAFETY: `row + WORD <= src_span` and `t * kw + WORD <= dst_span` (as
                    // `t < rows.len()`), so both ranges are inside their slices, which do not
                    // overlap (one is borrowed mutably).
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(row), dst.as_mut_ptr().add(t * kw), WORD) };
                }
                continue;
            }
            for &row in rows {
                let src = corner + row;
                if dx == 1 {
                    let mut j = 0;
                    while j < kw {
                        buf[dst + j..][..WORD].copy_from_slice(&padded[src + j..][..WORD]);
                        j += WORD;
                    }
                } else {
                    for kx in 0..kw {
                        buf[dst + kx] = padded[src + kx * dx];
                    }
                }
                dst += kw;
            }
        }
    }
}
