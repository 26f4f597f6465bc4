//! The int8 GEMM: `C[m, n] = Σ_k A[m, k] · B[n, k]` with `A` u8 (activations), `B` i8 (weights,
//! `[out, in]` as a Linear stores them) and exact i32 accumulation, then a requantize step.
//!
//! `B` is packed once ([`PackedB`]) into panels of [`NR`] columns where each group of 4
//! consecutive `k` of a column is 4 adjacent bytes, the layout of the VNNI `vpdpbusd`
//! instruction (u8 x i8, 4 products summed into each i32 lane). Three kernels share that layout
//! and the driver: AVX-512 VNNI, AVX2 (bytes widened to i16 and `vpmaddwd`, exact too) and a
//! portable scalar one. Integer arithmetic is exact, so all three give identical results
//! (as long as a sum fits in i32: `255 * 128 * k < 2³¹`, `k` up to 65 793).
//!
//! A quantized layer uses the fused path: [`PackedA::quantize`] writes its f32 input, quantized,
//! straight into the padded layout the kernels read, and [`gemm_dequantize`] turns each
//! [`MR`] x [`NR`] tile of accumulators into f32 outputs (bias, optional ReLU) as it leaves
//! the kernel, so neither a separate u8 copy nor an i32 matrix is made. A quantized Conv2d
//! writes `A` itself, [`MR`] rows at a time, from its input (im2col in cache), and requantizes
//! each tile straight into its output. A panel with at most `NR / 2` valid columns (a
//! convolution with few output channels) runs a kernel of half the width.
//!
//! ```
//! use ferrograd_tensor::quant::gemm::{gemm_u8i8, PackedB};
//! let a = [1u8, 2, 3, 4, 5, 6]; // 2 x 3
//! let b = [1i8, 0, -1, 2, 2, 2]; // 2 x 3 (n x k)
//! let c = gemm_u8i8(&a, 2, &PackedB::new(&b, 2, 3));
//! assert_eq!(c, vec![1 - 3, 2 * (1 + 2 + 3), 4 - 6, 2 * (4 + 5 + 6)]);
//! ```

use super::simd::quantize_u8_into;

/// Columns of `B` per packed panel (and of the output tile).
pub const NR: usize = 32;
/// Rows of `A` per output tile.
pub const MR: usize = 8;

/// A GEMM implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512 with VNNI (`vpdpbusd` on 512-bit registers).
    Avx512Vnni,
}

impl Kernel {
    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest kernel this CPU runs.
    pub fn best() -> Kernel {
        [Kernel::Avx512Vnni, Kernel::Avx2].into_iter().find(|k| k.is_available()).unwrap_or(Kernel::Scalar)
    }
}

/// `B` (`n x k`, row-major i8) packed for the kernels, with its row sums (for the activation
/// zero-point correction).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedB {
    n: usize,
    k: usize,
    groups: usize,
    data: Vec<i8>,
    row_sums: Vec<i32>,
}

impl PackedB {
    /// Packs `b` (`n x k`, row-major).
    ///
    /// # Panics
    /// If `b.len() != n * k`.
    pub fn new(b: &[i8], n: usize, k: usize) -> Self {
        assert_eq!(b.len(), n * k, "PackedB::new: {} values for a {n} x {k} matrix", b.len());
        let groups = k.div_ceil(4);
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels * groups * NR * 4];
        for row in 0..n {
            let (p, j) = (row / NR, row % NR);
            for kk in 0..k {
                data[(p * groups + kk / 4) * NR * 4 + j * 4 + kk % 4] = b[row * k + kk];
            }
        }
        let row_sums = (0..n).map(|r| b[r * k..(r + 1) * k].iter().map(|&v| i32::from(v)).sum()).collect();
        PackedB { n, k, groups, data, row_sums }
    }

    /// Rows of `B` (output columns).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns of `B` (the reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// `Σ_k B[n, k]` for each row.
    pub fn row_sums(&self) -> &[i32] {
        &self.row_sums
    }
}

/// `A` (`m x k`, u8, row-major) laid out for the kernels: rows padded with zeros to a multiple
/// of 4 bytes and the row count to a multiple of [`MR`]. A quantized layer fills one straight
/// from its f32 input ([`PackedA::quantize`]), reusing the buffer from call to call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackedA {
    m: usize,
    k: usize,
    data: Vec<u8>,
}

impl PackedA {
    /// Packs `a` (`m x k`, row-major).
    ///
    /// # Panics
    /// If `a.len() != m * k`.
    pub fn new(a: &[u8], m: usize, k: usize) -> Self {
        assert_eq!(a.len(), m * k, "PackedA::new: {} values for a {m} x {k} matrix", a.len());
        let mut p = PackedA::default();
        p.fill(m, k, |all| all.copy_from_slice(a), |r, row| row.copy_from_slice(&a[r * k..(r + 1) * k]));
        p
    }

    /// Replaces the contents with `x` (`m x k` f32, row-major) quantized to uint8 by
    /// [`quantize_u8_into`] with `scale` and `zero_point`, written straight into the padded layout.
    ///
    /// # Panics
    /// If `x.len() != m * k`.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize, scale: f32, zero_point: i32) {
        assert_eq!(x.len(), m * k, "PackedA::quantize: {} values for a {m} x {k} matrix", x.len());
        self.fill(
            m,
            k,
            |all| quantize_u8_into(x, scale, zero_point, all),
            |r, row| quantize_u8_into(&x[r * k..(r + 1) * k], scale, zero_point, row),
        );
    }

    /// Sizes the buffer for `m x k` and writes the rows, with `all` (the `m * k` bytes) when rows
    /// need no padding or with `row` one at a time; zeros the padding. Only the padding is
    /// cleared, as the rows are overwritten anyway.
    fn fill(&mut self, m: usize, k: usize, all: impl FnOnce(&mut [u8]), mut row: impl FnMut(usize, &mut [u8])) {
        let (kp, mp) = (k.div_ceil(4) * 4, m.div_ceil(MR) * MR);
        (self.m, self.k) = (m, k);
        self.data.resize(mp * kp, 0);
        if kp == k {
            all(&mut self.data[..m * k]);
        } else {
            for (r, dst) in self.data.chunks_exact_mut(kp).take(m).enumerate() {
                row(r, &mut dst[..k]);
                dst[k..].fill(0);
            }
        }
        self.data[m * kp..].fill(0);
    }

    /// Rows of `A`.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Columns of `A` (the reduction length).
    pub fn k(&self) -> usize {
        self.k
    }
}

/// `A · Bᵀ` in i32 with the fastest kernel; `a` is `m x k` row-major.
///
/// # Panics
/// If `a.len() != m * b.k()`.
pub fn gemm_u8i8(a: &[u8], m: usize, b: &PackedB) -> Vec<i32> {
    gemm_u8i8_with(Kernel::best(), a, m, b)
}

/// [`gemm_u8i8`] with a chosen kernel.
///
/// # Panics
/// If the kernel is not available on this CPU, or `a.len() != m * b.k()`.
pub fn gemm_u8i8_with(kernel: Kernel, a: &[u8], m: usize, b: &PackedB) -> Vec<i32> {
    assert_eq!(a.len(), m * b.k, "gemm_u8i8: A has {} values, expected {m} x {}", a.len(), b.k);
    let n = b.n;
    let mut c = vec![0i32; m * n];
    gemm_tiles(kernel, &PackedA::new(a, m, b.k), b, |r, j0, tile| {
        let dst = &mut c[r * n + j0..r * n + n.min(j0 + NR)];
        // A fixed-length copy for whole panels: a variable-length one is a `memcpy` call.
        match <&mut [i32; NR]>::try_from(&mut *dst) {
            Ok(dst) => *dst = *tile,
            Err(_) => dst.copy_from_slice(&tile[..dst.len()]),
        }
    });
    c
}

/// The dequantize step fused into [`gemm_dequantize`]: real outputs from the i32 accumulators,
/// `y[m, n] = (acc[m, n] - a_zero * Σ_k B[n, k]) * (a_scale * w_scale[n]) + bias[n]`, then
/// `max(y, 0)` if `relu`; the same f32 operations as [`dequantize_accumulators`].
#[derive(Clone, Copy, Debug)]
pub struct Dequantize<'a> {
    /// Scale of the activations.
    pub a_scale: f32,
    /// Zero point of the activations.
    pub a_zero: i32,
    /// Scale of each weight row (output column).
    pub w_scale: &'a [f32],
    /// Bias per output column.
    pub bias: Option<&'a [f32]>,
    /// Whether a ReLU follows.
    pub relu: bool,
}

/// `A · Bᵀ` dequantized to f32 into `out` (`m x n`, row-major) tile by tile, with the fastest
/// kernel: no i32 matrix is materialised.
///
/// ```
/// use ferrograd_tensor::quant::gemm::{gemm_dequantize, Dequantize, PackedA, PackedB};
/// let mut a = PackedA::default();
/// a.quantize(&[0.0, 1.0, 2.0, 3.0], 2, 2, 1.0, 0); // exact: [[0, 1], [2, 3]]
/// let b = PackedB::new(&[1, -1], 1, 2);
/// let stage = Dequantize { a_scale: 1.0, a_zero: 0, w_scale: &[0.5], bias: Some(&[0.25]), relu: true };
/// let mut y = [0.0f32; 2];
/// gemm_dequantize(&a, &b, &stage, &mut y);
/// assert_eq!(y, [0.0, 0.0]); // 0.5 * (0 - 1) + 0.25 and 0.5 * (2 - 3) + 0.25, through ReLU
/// ```
///
/// # Panics
/// If the shapes of `a`, `b`, the stage's vectors and `out` do not agree.
pub fn gemm_dequantize(a: &PackedA, b: &PackedB, stage: &Dequantize, out: &mut [f32]) {
    gemm_dequantize_with(Kernel::best(), a, b, stage, out);
}

/// [`gemm_dequantize`] with a chosen kernel.
///
/// # Panics
/// If the kernel is not available on this CPU, or the shapes do not agree.
pub fn gemm_dequantize_with(kernel: Kernel, a: &PackedA, b: &PackedB, stage: &Dequantize, out: &mut [f32]) {
    let (m, n) = (a.m, b.n);
    assert!(
        stage.w_scale.len() == n && stage.bias.is_none_or(|v| v.len() == n) && out.len() == m * n,
        "gemm_dequantize: {} scales, {:?} biases and {} outputs for a {m} x {n} product",
        stage.w_scale.len(),
        stage.bias.map(<[f32]>::len),
        out.len()
    );
    // Per column, padded to whole panels so that the per-tile loop has a fixed length.
    let np = n.div_ceil(NR) * NR;
    let (mut scales, mut offsets, mut bias) = (vec![0.0f32; np], vec![0i32; np], vec![0.0f32; np]);
    for j in 0..n {
        scales[j] = stage.w_scale[j] * stage.a_scale;
        offsets[j] = stage.a_zero * b.row_sums[j];
        bias[j] = stage.bias.map_or(0.0, |v| v[j]);
    }
    let relu = stage.relu;
    let dequantize = |tile: &[i32; NR], j0: usize, y: &mut [f32; NR]| {
        let (s, o, c) = (&scales[j0..j0 + NR], &offsets[j0..j0 + NR], &bias[j0..j0 + NR]);
        for j in 0..NR {
            let v = (tile[j] - o[j]) as f32 * s[j] + c[j];
            y[j] = if relu { v.max(0.0) } else { v };
        }
    };
    gemm_tiles(kernel, a, b, |r, j0, tile| {
        let dst = &mut out[r * n + j0..r * n + n.min(j0 + NR)];
        // A whole panel is written in place with a fixed length (a variable-length copy from
        // a temporary was a `memcpy` call per tile row).
        match <&mut [f32; NR]>::try_from(&mut *dst) {
            Ok(dst) => dequantize(tile, j0, dst),
            Err(_) => {
                let mut y = [0.0f32; NR];
                dequantize(tile, j0, &mut y);
                dst.copy_from_slice(&y[..dst.len()]);
            }
        }
    });
}

/// Runs the kernel over every `MR x NR` tile of `A · Bᵀ` and hands each valid row of a tile to
/// `store(row, first column, NR accumulators)` (columns past `n` hold zeros).
fn gemm_tiles(kernel: Kernel, a: &PackedA, b: &PackedB, mut store: impl FnMut(usize, usize, &[i32; NR])) {
    assert!(kernel.is_available(), "gemm_u8i8: kernel {kernel:?} is not available on this CPU");
    assert_eq!(a.k, b.k, "gemm_u8i8: A is {} x {} but B is {} x {}", a.m, a.k, b.n, b.k);
    let (m, groups) = (a.m, b.groups);
    let kp = groups * 4;
    let mp = m.div_ceil(MR) * MR;
    let mut tile = [0i32; MR * NR];
    for p in 0..b.n.div_ceil(NR) {
        let panel = &b.data[p * groups * NR * 4..(p + 1) * groups * NR * 4];
        let width = Width::of_panel(b.n, p);
        for r0 in (0..mp).step_by(MR) {
            let rows = &a.data[r0 * kp..(r0 + MR) * kp];
            run_kernel(kernel, rows, panel, groups, width, &mut tile);
            for r in r0..(r0 + MR).min(m) {
                let t: &[i32; NR] = tile[(r - r0) * NR..(r - r0 + 1) * NR].try_into().expect("NR accumulators");
                store(r, p * NR, t);
            }
        }
    }
}

/// The driver under the GEMMs, for an `A` (`m x b.k()`) that the caller writes [`MR`] rows at a
/// time: for each block of rows `r0..r0 + MR`, `fill(r0, rows, kp)` writes rows `r0..min(r0 +
/// MR, m)` at a stride of `kp` bytes (`b.k()` rounded up to 4) into `rows` (`MR * kp + slack`
/// bytes; what it leaves, or writes, in the padding of a row and in rows past `m` is never
/// counted, as `B` is zero there), then every `MR x NR` tile of that block goes to
/// `store(r0, first column, tile)`, rows past `m` included (columns past `n` hold zeros).
///
/// The im2col algorithm of [`super::conv`] fills the rows from its input (a block at a time, in
/// cache), so that no patch matrix is made. Panels with at most 16 valid columns run a kernel of half the width.
pub fn gemm_blocks(
    kernel: Kernel,
    m: usize,
    b: &PackedB,
    slack: usize,
    mut fill: impl FnMut(usize, &mut [u8], usize),
    mut store: impl FnMut(usize, usize, &[i32; MR * NR]),
) {
    assert!(kernel.is_available(), "gemm_u8i8: kernel {kernel:?} is not available on this CPU");
    let groups = b.groups;
    let kp = groups * 4;
    let mut rows = vec![0u8; MR * kp + slack];
    let mut tile = [0i32; MR * NR];
    for r0 in (0..m).step_by(MR) {
        fill(r0, &mut rows, kp);
        for p in 0..b.n.div_ceil(NR) {
            let panel = &b.data[p * groups * NR * 4..(p + 1) * groups * NR * 4];
            let width = Width::of_panel(b.n, p);
            run_kernel(kernel, &rows[..MR * kp], panel, groups, width, &mut tile);
            store(r0, p * NR, &tile);
        }
    }
}

/// How many columns of a panel a kernel computes: all [`NR`], or the first `NR / 2` (the rest
/// of the tile is zeroed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Width {
    Full,
    Half,
}

impl Width {
    /// The width for panel `p` of `n` columns.
    fn of_panel(n: usize, p: usize) -> Width {
        if n - p * NR <= NR / 2 {
            Width::Half
        } else {
            Width::Full
        }
    }
}

/// One `MR x NR` tile: `rows` is `MR` rows of `4 * groups` bytes, `panel` `groups * NR * 4` bytes.
fn run_kernel(kernel: Kernel, rows: &[u8], panel: &[i8], groups: usize, width: Width, tile: &mut [i32; MR * NR]) {
    // Checked in every build: the AVX-512 kernel reads through raw pointers within these bounds.
    assert!(rows.len() == MR * groups * 4 && panel.len() == groups * NR * 4, "gemm_u8i8: tile slices");
    let halves = if width == Width::Full { 2 } else { 1 };
    match kernel {
        Kernel::Scalar => kernel_scalar(rows, panel, groups, halves, tile),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `gemm_blocks` checked that the CPU has AVX2; the slice lengths are as the
        // kernel reads them (asserted above).
        Kernel::Avx2 => unsafe { x86::kernel_avx2(rows, panel, groups, halves, tile) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX-512F and AVX-512 VNNI.
        Kernel::Avx512Vnni if width == Width::Full => unsafe { x86::kernel_avx512vnni::<2>(rows, panel, groups, tile) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Avx512Vnni => unsafe { x86::kernel_avx512vnni::<1>(rows, panel, groups, tile) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("gemm_u8i8: kernel availability was checked"),
    }
}

/// The first `16 * halves` columns of a tile (the others zeroed).
fn kernel_scalar(rows: &[u8], panel: &[i8], groups: usize, halves: usize, tile: &mut [i32; MR * NR]) {
    tile.fill(0);
    let kp = groups * 4;
    for g in 0..groups {
        let bg = &panel[g * NR * 4..(g + 1) * NR * 4];
        for r in 0..MR {
            let a = &rows[r * kp + g * 4..r * kp + g * 4 + 4];
            for j in 0..halves * NR / 2 {
                let b = &bg[j * 4..j * 4 + 4];
                tile[r * NR + j] += (0..4).map(|t| i32::from(a[t]) * i32::from(b[t])).sum::<i32>();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// The first `16 * halves` columns of a tile (the others zeroed).
    ///
    /// # Safety
    /// The CPU must support AVX2; `rows.len() == MR * 4 * groups`, `panel.len() == groups * NR * 4`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn kernel_avx2(
        rows: &[u8],
        panel: &[i8],
        groups: usize,
        halves: usize,
        tile: &mut [i32; MR * NR],
    ) {
        let kp = groups * 4;
        // Per row and per 4-column chunk, 8 lanes: (col, even pair) and (col, odd pair) partials.
        let mut partial = [[0i32; 8]; MR * NR / 4];
        for r in 0..MR {
            for half in 0..halves {
                let mut acc = [_mm256_setzero_si256(); 4];
                for g in 0..groups {
                    let a4 = i32::from_le_bytes(rows[r * kp + g * 4..r * kp + g * 4 + 4].try_into().unwrap());
                    // [a0, a1, a2, a3] repeated, widened to i16.
                    let a = _mm256_cvtepu8_epi16(_mm_set1_epi32(a4));
                    let base = g * NR * 4 + half * 64;
                    for (c, acc_c) in acc.iter_mut().enumerate() {
                        let chunk = &panel[base + c * 16..base + c * 16 + 16];
                        // SAFETY: `chunk` is 16 readable bytes; loadu has no alignment requirement.
                        let b16 = unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) };
                        // i16 x i16 products summed in pairs into i32: exact for u8 x i8.
                        *acc_c = _mm256_add_epi32(*acc_c, _mm256_madd_epi16(a, _mm256_cvtepi8_epi16(b16)));
                    }
                }
                for (c, acc_c) in acc.iter().enumerate() {
                    let out = &mut partial[r * NR / 4 + half * 4 + c];
                    // SAFETY: `out` is 8 writable i32; storeu has no alignment requirement.
                    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), *acc_c) };
                }
            }
        }
        for r in 0..MR {
            for j in 0..NR {
                let p = &partial[r * NR / 4 + j / 4];
                tile[r * NR + j] = p[(j % 4) * 2] + p[(j % 4) * 2 + 1];
            }
        }
    }

    /// The first `16 * HALVES` columns of a tile (the others zeroed), `HALVES` 1 or 2.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512 VNNI; lengths as for [`kernel_avx2`].
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn kernel_avx512vnni<const HALVES: usize>(
        rows: &[u8],
        panel: &[i8],
        groups: usize,
        tile: &mut [i32; MR * NR],
    ) {
        let kp = groups * 4;
        let mut acc = [[_mm512_setzero_si512(); HALVES]; MR];
        // Raw pointers: slice indexing in this loop left bounds checks that cost as much as the
        // arithmetic.
        let (a, b) = (rows.as_ptr(), panel.as_ptr());
        for g in 0..groups {
            let mut bh = [_mm512_setzero_si512(); HALVES];
            for (h, bh) in bh.iter_mut().enumerate() {
                // SAFETY: `g < groups` and `h < 2`, so the 64 bytes from `g * NR * 4 + 64 * h`
                // are inside `panel`; loadu has no alignment requirement.
                *bh = unsafe { _mm512_loadu_si512(b.add(g * NR * 4 + 64 * h).cast()) };
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: `r < MR` and `g < groups`, so the 4 bytes from `r * kp + 4 * g` are
                // inside `rows`; read_unaligned has no alignment requirement.
                let a4 = unsafe { a.add(r * kp + g * 4).cast::<i32>().read_unaligned() };
                let a = _mm512_set1_epi32(a4);
                // u8 x i8, four products summed into each i32 lane, without saturation.
                for (acc_h, &bh) in acc_r.iter_mut().zip(&bh) {
                    *acc_h = _mm512_dpbusd_epi32(*acc_h, a, bh);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let out = &mut tile[r * NR..(r + 1) * NR];
            for h in 0..2 {
                let v = if h < HALVES { acc_r[h] } else { _mm512_setzero_si512() };
                // SAFETY: `out[16 * h..]` has 16 writable i32 (`h < 2`); storeu is unaligned.
                unsafe { _mm512_storeu_si512(out[16 * h..].as_mut_ptr().cast(), v) };
            }
        }
    }
}

/// The requantize step of a quantized Linear: real outputs from the i32 accumulators,
/// `y[m, n] = a_scale * w_scale[n] * (acc[m, n] - a_zero * Σ_k B[n, k]) + bias[n]`.
///
/// # Panics
/// If the lengths do not match `m x b.n()`.
pub fn dequantize_accumulators(
    acc: &[i32],
    b: &PackedB,
    a_scale: f32,
    a_zero: i32,
    w_scale: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let n = b.n;
    assert!(
        n > 0 && acc.len().is_multiple_of(n) && w_scale.len() == n && bias.is_none_or(|v| v.len() == n),
        "dequantize_accumulators: {} accumulators, {} scales for {n} columns",
        acc.len(),
        w_scale.len()
    );
    let scales: Vec<f32> = w_scale.iter().map(|s| s * a_scale).collect();
    let offsets: Vec<i32> = b.row_sums.iter().map(|s| a_zero * s).collect();
    let zeros = vec![0.0f32; n];
    let bias = bias.unwrap_or(&zeros);
    let mut out = Vec::with_capacity(acc.len());
    for row in acc.chunks(n) {
        // Zipped iterators (not indexed pushes) so that the loop vectorizes.
        let cols = row.iter().zip(&offsets).zip(&scales).zip(bias);
        out.extend(cols.map(|(((&a, &o), &s), &c)| (a - o) as f32 * s + c));
    }
    out
}

/// Requantizes i32 accumulators to uint8 outputs with real multipliers per column:
/// `clamp(round(acc[m, n] * multiplier[n]) + zero_point, 0, 255)`.
///
/// # Panics
/// If `multiplier` is empty or does not divide `acc` into rows.
pub fn requantize_u8(acc: &[i32], multiplier: &[f32], zero_point: i32) -> Vec<u8> {
    let n = multiplier.len();
    assert!(n > 0 && acc.len().is_multiple_of(n), "requantize_u8: {} accumulators for {n} columns", acc.len());
    acc.iter()
        .enumerate()
        .map(|(i, &v)| ((v as f32 * multiplier[i % n]).round_ties_even() as i32 + zero_point).clamp(0, 255) as u8)
        .collect()
}
