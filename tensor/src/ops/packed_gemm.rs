//! A small f32 matrix product for a right-hand operand that is reused many times: the
//! recurrent weights of a sequence, multiplied once per time step.
//!
//! matrixmultiply packs both operands on every call, so a `[B, H] x [H, 4H]` step product
//! re-packs the whole 256 KB weight matrix every step. Here [`PackedB`] packs the right-hand
//! operand once into column panels, each laid out as the micro-kernel reads it (`nr` columns per
//! row of the panel, zero-padded at the right edge, 64-byte aligned); every product after that
//! reads the left operand in place, row-major, broadcasting one element at a time. Kernels:
//! AVX-512F (8 rows x 32 columns, 16 zmm accumulators), AVX2 + FMA (6 x 16, 12 ymm) and plain
//! scalar code, chosen by runtime feature detection. Only `alpha = 1` and `beta` in {0, 1}, or
//! a product that starts from another buffer plus a bias row ([`Start::Sum`], a step's input
//! projections and bias, so they need no copy into the gate block first): what the recurrences
//! need.
//!
//! Packing only B pays for single products too: f32 `matmul` sends a product whose left operand
//! has contiguous rows here ([`PackedB::gemm_to`], into uninitialised output, optionally from a
//! bias row, [`Start::Bias`]), which covers a layer's forward and input-gradient products.

#![deny(unsafe_op_in_unsafe_fn)]

use std::mem::MaybeUninit;

/// A micro-kernel family; [`Kernel::best`] is the fastest one this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU can run.
    pub(crate) fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if Kernel::Avx512.available() {
                return Kernel::Avx512;
            }
            if Kernel::Avx2.available() {
                return Kernel::Avx2;
            }
        }
        Kernel::Scalar
    }

    /// Whether this CPU has the instructions the kernel uses.
    pub(crate) fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
        }
    }

    /// Rows per micro-tile, and per micro-panel of a [`PackedA`] (1 for the scalar kernel, so
    /// that its packed left operand is plain row-major).
    pub(crate) fn mr(self) -> usize {
        match self {
            Kernel::Scalar => 1,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => 6,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => 8,
        }
    }

    /// Columns per panel (the micro-tile's width).
    pub(crate) fn nr(self) -> usize {
        match self {
            Kernel::Scalar => 8,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => 16,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => 32,
        }
    }
}

/// Depth of one pass over a panel: 256 rows of a 32-wide panel are 32 KB, which stay in L1
/// while every row block of the left operand streams past them. (The scalar kernel runs the
/// whole depth at once.)
#[cfg(any(target_arch = "x86_64", test))]
const KC: usize = 256;

/// Rows of the left operand per block: every panel of a depth pass runs over one block of rows
/// before the next block starts, so the block (192 x 256 floats, 192 KB) is read from L2 by
/// each panel after the first. Without it, a `[2048, 128]` left operand was streamed from L3 once
/// per panel, and products with many panels (a 384-wide QKV projection) ran 8% slower.
#[cfg(any(target_arch = "x86_64", test))]
const MC: usize = 192;

/// One cache line of panel data; a `Vec` of these is a 64-byte aligned run of f32s.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// The f32s of a run of lines.
fn floats(lines: &[Line]) -> &[f32] {
    // SAFETY: `Line` is `repr(C)` around 16 f32s with no padding (64 bytes, align 64), so the
    // lines are 16 * len contiguous, initialised f32s.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<f32>(), lines.len() * 16) }
}

/// The f32s of a run of lines, writable.
fn floats_mut(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: as in `floats`, and the borrow of `lines` is unique.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<f32>(), lines.len() * 16) }
}

/// Where a product's accumulators start.
#[derive(Clone, Copy)]
pub(crate) enum Start<'a> {
    /// At zero: `c = a · B`.
    Zero,
    /// At `c`: `c += a · B`.
    C,
    /// At `d[i * ldd + j] + bias[j]`: `c = d + bias + a · B`, `d` another buffer.
    Sum { d: &'a [f32], ldd: usize, bias: Option<&'a [f32]> },
    /// At `bias[j]`: `c = bias + a · B`.
    Bias(&'a [f32]),
}

/// A `[k, n]` right-hand operand packed for one [`Kernel`]: panel `p` holds columns
/// `p * nr .. (p + 1) * nr`, row after row, at offset `p * k * nr`.
pub(crate) struct PackedB {
    kernel: Kernel,
    k: usize,
    n: usize,
    data: Vec<Line>,
}

impl PackedB {
    /// Packs `b[kk * rsb + j * csb]` (`kk < k`, `j < n`) for `kernel`.
    ///
    /// # Panics
    /// If `kernel` cannot run on this CPU or `b` is too short for the strides.
    pub(crate) fn new(kernel: Kernel, b: &[f32], k: usize, n: usize, rsb: usize, csb: usize) -> PackedB {
        assert!(kernel.available(), "packed_gemm: {kernel:?} kernel not supported by this CPU");
        let mut packed = PackedB { kernel, k: 0, n: 0, data: Vec::new() };
        packed.repack(b, k, n, rsb, csb);
        packed
    }

    /// Packs another `[k, n]` operand (as [`PackedB::new`]) into this one's buffer, which is
    /// only reallocated to grow.
    ///
    /// # Panics
    /// If `b` is too short for the strides.
    pub(crate) fn repack(&mut self, b: &[f32], k: usize, n: usize, rsb: usize, csb: usize) {
        assert!(
            k == 0 || n == 0 || (k - 1) * rsb + (n - 1) * csb < b.len(),
            "packed_gemm: [{k}, {n}] operand with strides ({rsb}, {csb}) does not fit {} elements",
            b.len()
        );
        let nr = self.kernel.nr();
        let len = n.div_ceil(nr) * k * nr;
        (self.k, self.n) = (k, n);
        // Every element up to `len` is written below (padding included), so stale values from
        // an earlier packing are harmless.
        self.data.resize(len.div_ceil(16), Line([0.0; 16]));
        let flat = self.flat_mut();
        for (p, panel) in flat.chunks_exact_mut((k * nr).max(1)).take(n.div_ceil(nr)).enumerate() {
            let cols = p * nr..n.min((p + 1) * nr);
            let width = cols.len();
            // Contiguous source rows copy as runs (3x faster than element by element).
            if csb == 1 {
                for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                    copy_run(row, &b[kk * rsb + cols.start..kk * rsb + cols.end]);
                }
            } else if rsb == 1 {
                // Contiguous source columns (B a transposed row-major matrix: a layer's weight,
                // `x W^T`): each column's run of depths is read in one pass and written `nr`
                // apart, a block of DEPTHS panel rows at a time so that the block being written
                // stays in L1. Row by row, each panel row gathered one value from each of `nr`
                // columns; the MLP's 784 x 128 weight packed 2.5x slower.
                const DEPTHS: usize = 64;
                for k0 in (0..k).step_by(DEPTHS) {
                    let block = &mut panel[k0 * nr..k.min(k0 + DEPTHS) * nr];
                    let depths = block.len() / nr;
                    // Whole 4 x 4 tiles (4 columns' runs of 4 depths) are transposed in
                    // registers: one 4-wide store per panel row instead of 4 scalar ones. With
                    // the prefetch below, packing the attention's kᵀ and vᵀ fell from 5.4% to
                    // 3.5% of the transformer benchmark's step.
                    const T: usize = 4;
                    let (full_cols, full_depths) = (width / T * T, depths / T * T);
                    for jj0 in (0..full_cols).step_by(T) {
                        // The next group's columns are asked for now: read 4 at a time, strided
                        // columns (the heads of a projection, in L3) left the loads waiting on
                        // memory.
                        #[cfg(target_arch = "x86_64")]
                        for jj in jj0 + T..(jj0 + 2 * T).min(width) {
                            let column = b[(cols.start + jj) * csb + k0..].as_ptr();
                            for line in (0..depths).step_by(16) {
                                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                                // SAFETY: a prefetch reads nothing and cannot fault; the address
                                // is formed with `wrapping_add`, never dereferenced.
                                unsafe { _mm_prefetch::<_MM_HINT_T0>(column.wrapping_add(line).cast()) };
                            }
                        }
                        for kk0 in (0..full_depths).step_by(T) {
                            let tile = transpose4(std::array::from_fn(|r| {
                                let at = (cols.start + jj0 + r) * csb + k0 + kk0;
                                b[at..at + T].try_into().expect("a run of 4")
                            }));
                            for (row, t) in block[kk0 * nr..(kk0 + T) * nr].chunks_exact_mut(nr).zip(tile) {
                                row[jj0..jj0 + T].copy_from_slice(&t);
                            }
                        }
                        for jj in jj0..jj0 + T {
                            let column = &b[(cols.start + jj) * csb + k0 + full_depths..];
                            for (row, &x) in block[full_depths * nr..].chunks_exact_mut(nr).zip(column) {
                                row[jj] = x;
                            }
                        }
                    }
                    for (jj, j) in cols.clone().enumerate().skip(full_cols) {
                        let column = &b[j * csb + k0..];
                        for (row, &x) in block.chunks_exact_mut(nr).zip(column) {
                            row[jj] = x;
                        }
                    }
                    for row in block.chunks_exact_mut(nr) {
                        row[width..].fill(0.0);
                    }
                }
            } else {
                for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                    for (x, j) in row.iter_mut().zip(cols.clone()) {
                        *x = b[kk * rsb + j * csb];
                    }
                    row[width..].fill(0.0);
                }
            }
        }
    }

    fn flat(&self) -> &[f32] {
        floats(&self.data)
    }

    fn flat_mut(&mut self) -> &mut [f32] {
        floats_mut(&mut self.data)
    }

    /// The kernel this operand is packed for.
    pub(crate) fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// How many f32s the packing buffer holds room for (it only grows on [`PackedB::repack`]).
    pub(crate) fn capacity(&self) -> usize {
        self.data.capacity() * 16
    }

    /// `c[m, n] = a[m, k] · B` (or `+=` if `accumulate`), `a` and `c` row-major with row
    /// strides `lda` and `ldc`.
    ///
    /// # Panics
    /// If `a` or `c` is too short for `m` rows of its stride, or `ldc < n`.
    pub(crate) fn gemm(&self, m: usize, a: &[f32], lda: usize, accumulate: bool, c: &mut [f32], ldc: usize) {
        self.gemm_from(m, a, lda, if accumulate { Start::C } else { Start::Zero }, c, ldc);
    }

    /// `c[m, n] = start + a[m, k] · B`, `a` and `c` row-major with row strides `lda` and `ldc`.
    ///
    /// # Panics
    /// If `a`, `c` or `start`'s buffers are too short for `m` rows of their strides (`n` bias
    /// values), or `ldc < n`.
    pub(crate) fn gemm_from(&self, m: usize, a: &[f32], lda: usize, start: Start, c: &mut [f32], ldc: usize) {
        let (k, n) = (self.k, self.n);
        if m == 0 || n == 0 {
            return;
        }
        assert!(
            ldc >= n && c.len() >= (m - 1) * ldc + n,
            "packed_gemm: output [{m}, {n}] with row stride {ldc} does not fit {} elements",
            c.len()
        );
        if let Start::Sum { d, ldd, bias } = start {
            assert!(
                d.len() >= (m - 1) * ldd + n && bias.is_none_or(|b| b.len() >= n),
                "packed_gemm: start [{m}, {n}] with row stride {ldd} does not fit {} elements (or bias {:?} values)",
                d.len(),
                bias.map(<[f32]>::len)
            );
        }
        if let Start::Bias(bias) = start {
            assert!(bias.len() >= n, "packed_gemm: {} bias values for {n} columns", bias.len());
        }
        if k == 0 {
            for (i, row) in c.chunks_mut(ldc).take(m).enumerate() {
                for (j, x) in row[..n].iter_mut().enumerate() {
                    *x = start_value(start, *x, i, j);
                }
            }
            return;
        }
        assert!(
            a.len() >= (m - 1) * lda + k,
            "packed_gemm: left operand [{m}, {k}] with row stride {lda} does not fit {} elements",
            a.len()
        );
        // SAFETY: the sizes are non-zero and every operand is in bounds (checked above); `c` is
        // an initialised slice borrowed uniquely.
        unsafe { self.run(m, Lhs::RowMajor { a, lda }, start, c.as_mut_ptr(), ldc) };
    }

    /// `c[m, n] = a · B` (`+=` if `accumulate`), `a` packed by [`PackedA::pack`] (`m` its
    /// rows) for the same kernel and depth, `c` row-major with row stride `ldc`.
    ///
    /// # Panics
    /// If `a` was packed for another kernel or depth, or `c` is too short for `m` rows of its
    /// stride, or `ldc < n`.
    pub(crate) fn gemm_packed_a(&self, a: &PackedA, accumulate: bool, c: &mut [f32], ldc: usize) {
        let (m, k, n) = (a.m, self.k, self.n);
        assert!(
            a.kernel == self.kernel && a.k == k,
            "packed_gemm: left operand packed for {:?} with depth {} against {:?} with depth {k}",
            a.kernel,
            a.k,
            self.kernel
        );
        if m == 0 || n == 0 {
            return;
        }
        assert!(
            ldc >= n && c.len() >= (m - 1) * ldc + n,
            "packed_gemm: output [{m}, {n}] with row stride {ldc} does not fit {} elements",
            c.len()
        );
        let start = if accumulate { Start::C } else { Start::Zero };
        if k == 0 {
            if !accumulate {
                c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
            }
            return;
        }
        // SAFETY: as in `gemm_from`; the packing holds `m` rows of depth `k` for this kernel.
        unsafe { self.run(m, Lhs::Packed(a), start, c.as_mut_ptr(), ldc) };
    }

    /// `c[i * ldc + j] = bias[j] + Σ_kk a[i * lda + kk] B[kk, j]` for `i < m`, `j < n`, written
    /// through a raw pointer into elements that need not be initialised and are never read:
    /// a product's fresh output needs no zero-filling first, and threads can each write their
    /// own columns of one output.
    ///
    /// # Safety
    /// `c + i * ldc + j` is valid for writes for every `i < m` and `j < n`, and nothing else
    /// reads or writes those elements meanwhile (other elements of the same buffer may be
    /// written by other threads).
    ///
    /// # Panics
    /// If `a` is too short for `m` rows of stride `lda`, `ldc < n`, or `bias` holds fewer than
    /// `n` values.
    pub(crate) unsafe fn gemm_to(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        bias: Option<&[f32]>,
        c: *mut f32,
        ldc: usize,
    ) {
        let (k, n) = (self.k, self.n);
        if m == 0 || n == 0 {
            return;
        }
        assert!(ldc >= n, "packed_gemm: output row stride {ldc} below its width {n}");
        assert!(
            k == 0 || a.len() >= (m - 1) * lda + k,
            "packed_gemm: left operand [{m}, {k}] with row stride {lda} does not fit {} elements",
            a.len()
        );
        assert!(
            bias.is_none_or(|b| b.len() >= n),
            "packed_gemm: {:?} bias values for {n} columns",
            bias.map(<[f32]>::len)
        );
        let start = bias.map_or(Start::Zero, Start::Bias);
        if k == 0 || self.kernel == Kernel::Scalar {
            // Row by row through slices of this call's own elements.
            for i in 0..m {
                // SAFETY: row `i`'s `n` elements are this call's to write (the contract).
                let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc).cast::<MaybeUninit<f32>>(), n) };
                row.fill(MaybeUninit::new(0.0));
                // SAFETY: just initialised; `MaybeUninit<f32>` has the layout of `f32`.
                let row = unsafe { &mut *(row as *mut [MaybeUninit<f32>] as *mut [f32]) };
                self.gemm_from(1, &a[i * lda..], lda, start, row, n);
            }
            return;
        }
        // SAFETY: sizes non-zero and operands in bounds (checked above); `c`'s rows are this
        // call's (the contract), and from `Start::Zero` or `Start::Bias` a SIMD kernel reads
        // nothing of them and writes each element of the product's rows and columns.
        unsafe { self.run(m, Lhs::RowMajor { a, lda }, start, c, ldc) };
    }

    /// The kernel loop for a checked product.
    ///
    /// # Safety
    /// `m, n, k >= 1`; `lhs` and `start` are in bounds for them; `c` addresses `m` rows of
    /// stride `ldc >= n` (`n` elements each) that nothing else accesses meanwhile, initialised
    /// unless `start` is [`Start::Zero`] and the kernel is not the scalar one.
    unsafe fn run(&self, m: usize, lhs: Lhs, start: Start, c: *mut f32, ldc: usize) {
        match self.kernel {
            Kernel::Scalar => {
                // The scalar kernel's packed left operand is row-major with stride k.
                let (a, lda) = match lhs {
                    Lhs::RowMajor { a, lda } => (a, lda),
                    Lhs::Packed(p) => (p.flat(), self.k),
                };
                // SAFETY: the contract: `m` initialised rows of stride `ldc`, `n` wide.
                let c = unsafe { std::slice::from_raw_parts_mut(c, (m - 1) * ldc + self.n) };
                self.gemm_scalar(m, a, lda, start, c, ldc)
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                let tile = |rows, t: &Tile, packed| {
                    // SAFETY: packing checked that the CPU has AVX2 and FMA; `tiled` passes tiles
                    // of at most 6 rows that meet the contract for this 16-wide packing (and
                    // `packed` says which addressing of `a` it met it for).
                    unsafe { avx2::tile(rows, t, packed) }
                };
                // SAFETY: this function's contract, passed on.
                unsafe { self.tiled(6, m, lhs, start, c, ldc, tile) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                let tile = |rows, t: &Tile, packed| {
                    // SAFETY: packing checked that the CPU has AVX-512F; `tiled` passes tiles of at
                    // most 8 rows that meet the contract for this 32-wide packing (and `packed` says
                    // which addressing of `a` it met it for).
                    unsafe { avx512::tile(rows, t, packed) }
                };
                // SAFETY: this function's contract, passed on.
                unsafe { self.tiled(8, m, lhs, start, c, ldc, tile) }
            }
        }
    }

    /// The scalar kernel: one output row at a time, one panel row of accumulators.
    fn gemm_scalar(&self, m: usize, a: &[f32], lda: usize, start: Start, c: &mut [f32], ldc: usize) {
        const NR: usize = 8;
        let (k, n, flat) = (self.k, self.n, self.flat());
        for i in 0..m {
            let a = &a[i * lda..i * lda + k];
            let c = &mut c[i * ldc..i * ldc + n];
            for (p, (panel, c)) in flat.chunks_exact(k * NR).zip(c.chunks_mut(NR)).enumerate() {
                let mut acc = [0f32; NR];
                for (j, (s, &x)) in acc.iter_mut().zip(c.iter()).enumerate() {
                    *s = start_value(start, x, i, p * NR + j);
                }
                for (&x, b) in a.iter().zip(panel.chunks_exact(NR)) {
                    for (s, &y) in acc.iter_mut().zip(b) {
                        *s += x * y;
                    }
                }
                let cols = c.len();
                c.copy_from_slice(&acc[..cols]);
            }
        }
    }

    /// Runs `tile` over every `mr x nr` tile of the output, depth `KC` at a time; `tile(rows,
    /// t, packed)` must be sound for any `t` that satisfies [`Tile`]'s contract with `rows <=
    /// mr` rows, the packing's `nr` and `a` packed (micro-panels of `mr` rows) if `packed`.
    ///
    /// # Safety
    /// As [`PackedB::run`]: the tiles it passes meet [`Tile`]'s contract only if the operands
    /// do.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tiled(
        &self,
        mr: usize,
        m: usize,
        lhs: Lhs,
        start: Start,
        c: *mut f32,
        ldc: usize,
        tile: impl Fn(usize, &Tile, bool),
    ) {
        let (k, n, nr) = (self.k, self.n, self.kernel.nr());
        let (a, lda, packed) = match lhs {
            Lhs::RowMajor { a, lda } => (a.as_ptr(), lda, false),
            Lhs::Packed(p) => (p.flat().as_ptr(), mr, true),
        };
        let b = self.flat().as_ptr();
        let null = std::ptr::null::<f32>();
        // The first pass starts from `start`, every later one from `c`.
        let (src, lds, bias) = match start {
            Start::Zero => (null, 0, null),
            Start::C => (c.cast_const(), ldc, null),
            Start::Sum { d, ldd, bias } => (d.as_ptr(), ldd, bias.map_or(null, <[f32]>::as_ptr)),
            Start::Bias(bias) => (null, 0, bias.as_ptr()),
        };
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for m0 in (0..m).step_by(MC) {
                for p in 0..n.div_ceil(nr) {
                    let j0 = p * nr;
                    for i0 in (m0..m.min(m0 + MC)).step_by(mr) {
                        // In bounds (the asserts in `gemm_from` or `gemm_packed_a` and the
                        // packings' lengths): rows i0..i0 + rows of `a` (micro-panel i0 / mr if
                        // packed) and `c`, depth k0..k0 + kc, columns j0..j0 + cols.
                        let t = Tile {
                            a: if packed { a.wrapping_add(i0 * k + k0 * mr) } else { a.wrapping_add(i0 * lda + k0) },
                            lda,
                            b: b.wrapping_add(p * k * nr + k0 * nr),
                            k: kc,
                            c: c.wrapping_add(i0 * ldc + j0),
                            ldc,
                            cols: nr.min(n - j0),
                            src: match (k0 > 0, src.is_null()) {
                                (true, _) => c.wrapping_add(i0 * ldc + j0),
                                (false, true) => null,
                                (false, false) => src.wrapping_add(i0 * lds + j0),
                            },
                            lds: if k0 > 0 { ldc } else { lds },
                            bias: if k0 > 0 || bias.is_null() { null } else { bias.wrapping_add(j0) },
                        };
                        tile(mr.min(m - i0), &t, packed);
                    }
                }
            }
        }
    }
}

/// The left operand of a product: row-major in place, or packed.
#[derive(Clone, Copy)]
enum Lhs<'a> {
    RowMajor { a: &'a [f32], lda: usize },
    Packed(&'a PackedA),
}

/// A `[m, k]` left operand packed for one [`Kernel`]: micro-panel `q` holds rows
/// `q * mr .. (q + 1) * mr`, one column of `mr` values per depth (zero-padded below the last
/// row), at offset `q * k * mr`. For a product whose left operand is read transposed: read in
/// place, its rows would be strided columns, each depth step a different cache line (and, at
/// power-of-two strides, the same few L1 sets).
pub(crate) struct PackedA {
    kernel: Kernel,
    m: usize,
    k: usize,
    data: Vec<Line>,
}

impl PackedA {
    /// An empty packing for `kernel`, to [`PackedA::pack`] into.
    ///
    /// # Panics
    /// If `kernel` cannot run on this CPU.
    pub(crate) fn new(kernel: Kernel) -> PackedA {
        assert!(kernel.available(), "packed_gemm: {kernel:?} kernel not supported by this CPU");
        PackedA { kernel, m: 0, k: 0, data: Vec::new() }
    }

    /// Packs `a[i * rsa + kk * csa]` (`i < m`, `kk < k`), reusing the buffer (only
    /// reallocated to grow).
    ///
    /// # Panics
    /// If `a` is too short for the strides.
    pub(crate) fn pack(&mut self, a: &[f32], m: usize, k: usize, rsa: usize, csa: usize) {
        assert!(
            m == 0 || k == 0 || (m - 1) * rsa + (k - 1) * csa < a.len(),
            "packed_gemm: [{m}, {k}] operand with strides ({rsa}, {csa}) does not fit {} elements",
            a.len()
        );
        let mr = self.kernel.mr();
        let len = m.div_ceil(mr) * mr * k;
        (self.m, self.k) = (m, k);
        // As in `PackedB::repack`: every element up to `len` is written below.
        self.data.resize(len.div_ceil(16), Line([0.0; 16]));
        let flat = self.flat_mut();
        if len == 0 {
            return;
        }
        if rsa == 1 {
            // Columns are contiguous (a transposed row-major matrix): each depth's column
            // copies in runs of `mr`. Eight depths at a time, so that every micro-panel gets
            // whole cache lines at once: depth by depth, the runs land `k * mr` floats apart (2
            // KB for a 64-deep operand), whose lines share a few L1 sets and were evicted, then
            // re-read to be written again (the packing ran 5x slower).
            const DEPTHS: usize = 8;
            for k0 in (0..k).step_by(DEPTHS) {
                for q in 0..m.div_ceil(mr) {
                    let rows = q * mr..m.min((q + 1) * mr);
                    for kk in k0..k.min(k0 + DEPTHS) {
                        let dst = &mut flat[q * k * mr + kk * mr..q * k * mr + (kk + 1) * mr];
                        copy_run(dst, &a[kk * csa + rows.start..kk * csa + rows.end]);
                    }
                }
            }
        } else {
            for (q, panel) in flat.chunks_exact_mut(k * mr).enumerate() {
                for (kk, dst) in panel.chunks_exact_mut(mr).enumerate() {
                    for (r, x) in dst.iter_mut().enumerate() {
                        let i = q * mr + r;
                        *x = if i < m { a[i * rsa + kk * csa] } else { 0.0 };
                    }
                }
            }
        }
    }

    fn flat(&self) -> &[f32] {
        floats(&self.data)
    }

    fn flat_mut(&mut self) -> &mut [f32] {
        floats_mut(&mut self.data)
    }
}

/// The transpose of a 4 x 4 block given by its rows: `out[c][r] = rows[r][c]`.
#[inline(always)]
fn transpose4(rows: [&[f32; 4]; 4]) -> [[f32; 4]; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE is part of the x86_64 baseline; each load reads one whole `[f32; 4]`, and
        // `__m128` has the size and bit layout of `[f32; 4]`.
        unsafe {
            let [a, b, c, d] = rows.map(|r| _mm_loadu_ps(r.as_ptr()));
            let (ab_lo, cd_lo) = (_mm_unpacklo_ps(a, b), _mm_unpacklo_ps(c, d)); // a0 b0 a1 b1, c0 d0 c1 d1
            let (ab_hi, cd_hi) = (_mm_unpackhi_ps(a, b), _mm_unpackhi_ps(c, d)); // a2 b2 a3 b3, c2 d2 c3 d3
            std::mem::transmute::<[__m128; 4], [[f32; 4]; 4]>([
                _mm_movelh_ps(ab_lo, cd_lo),
                _mm_movehl_ps(cd_lo, ab_lo),
                _mm_movelh_ps(ab_hi, cd_hi),
                _mm_movehl_ps(cd_hi, ab_hi),
            ])
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::array::from_fn(|c| std::array::from_fn(|r| rows[r][c]))
    }
}

/// `dst[..src.len()] = src`, zeros after. Full runs of the SIMD kernels' heights and widths
/// copy as fixed-size arrays: a few vector moves instead of a call to `memmove`, which for
/// such short runs costs more than the copy.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) -> bool {
        match (<&mut [f32; N]>::try_from(dst), <&[f32; N]>::try_from(src)) {
            (Ok(d), Ok(s)) => {
                *d = *s;
                true
            }
            _ => false,
        }
    }
    if !(fixed::<8>(dst, src) || fixed::<32>(dst, src) || fixed::<16>(dst, src) || fixed::<6>(dst, src)) {
        dst[..src.len()].copy_from_slice(src);
        dst[src.len()..].fill(0.0);
    }
}

/// One micro-tile's work: `c[r, j] = s[r, j] + Σ_kk a(r, kk) * b[kk * nr + j]` for
/// `r < rows`, `j < cols` and `kk < k`, where `s[r, j]` is `src[r * lds + j]` (zero if `src` is
/// null) plus `bias[j]` (if `bias` is not null).
///
/// `a`'s element `(r, kk)` is at `a + r * lda + kk`, or at `a + kk * mr + r` for a packed left
/// operand (`mr` the kernel's tile height; `lda` is then unused).
///
/// The contract a kernel relies on: element `(r, kk)` of `a` is readable for every `r < rows`
/// and `kk < k`; `b + kk * nr + j` is readable for every `kk < k` and `j < nr`, and `b` is aligned
/// to `4 * nr` bytes (at most 64); `c + r * ldc + j` is readable and writable for every
/// `r < rows` and `j < cols`, with `1 <= cols <= nr`; `c` overlaps neither `a` nor `b`; unless
/// null, `src + r * lds + j` and `bias + j` are readable for those `r` and `j` (`src` may be
/// `c` itself).
#[cfg(target_arch = "x86_64")]
struct Tile {
    a: *const f32,
    lda: usize,
    b: *const f32,
    k: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    src: *const f32,
    lds: usize,
    bias: *const f32,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Tile;

    /// A tile of `rows` (1..=8) rows and a 32-wide panel.
    ///
    /// # Safety
    /// The CPU has AVX-512F and `t` meets [`Tile`]'s contract with `rows` rows, `nr = 32` and
    /// `a` packed with `mr = 8` if `packed`.
    pub(super) unsafe fn tile(rows: usize, t: &Tile, packed: bool) {
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe {
            if packed {
                with_rows::<true>(rows, t)
            } else {
                with_rows::<false>(rows, t)
            }
        }
    }

    /// [`tile`] with the addressing of `a` fixed: the kernel for `rows` rows.
    ///
    /// # Safety
    /// As [`tile`], with `packed = PACKED`.
    unsafe fn with_rows<const PACKED: bool>(rows: usize, t: &Tile) {
        // SAFETY: the caller's contract, with `rows` rows (at most 8; 1 for anything less
        // than 2).
        unsafe {
            match rows {
                8 => rows_n::<8, PACKED>(t),
                7 => rows_n::<7, PACKED>(t),
                6 => rows_n::<6, PACKED>(t),
                5 => rows_n::<5, PACKED>(t),
                4 => rows_n::<4, PACKED>(t),
                3 => rows_n::<3, PACKED>(t),
                2 => rows_n::<2, PACKED>(t),
                _ => rows_n::<1, PACKED>(t),
            }
        }
    }

    /// `R` rows: `2 R` accumulators, two aligned panel loads and `R` broadcasts per depth step.
    ///
    /// # Safety
    /// As [`tile`], with `rows = R` and `packed = PACKED`.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_n<const R: usize, const PACKED: bool>(t: &Tile) {
        let lanes = |n: usize| if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
        let (lo, hi) = (lanes(t.cols), lanes(t.cols.saturating_sub(16)));
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if !t.src.is_null() {
            for (r, acc) in acc.iter_mut().enumerate() {
                let row = t.src.wrapping_add(r * t.lds);
                // SAFETY: the masks enable exactly the row's first `cols` elements, which the
                // contract makes readable; masked-off lanes are not accessed.
                unsafe {
                    acc[0] = _mm512_maskz_loadu_ps(lo, row);
                    acc[1] = _mm512_maskz_loadu_ps(hi, row.wrapping_add(16));
                }
            }
        }
        if !t.bias.is_null() {
            // SAFETY: as the row loads above, `cols` readable bias values.
            let bias =
                unsafe { [_mm512_maskz_loadu_ps(lo, t.bias), _mm512_maskz_loadu_ps(hi, t.bias.wrapping_add(16))] };
            for acc in acc.iter_mut() {
                acc[0] = _mm512_add_ps(acc[0], bias[0]);
                acc[1] = _mm512_add_ps(acc[1], bias[1]);
            }
        }
        for kk in 0..t.k {
            // SAFETY: panel row `kk` is 32 readable f32s at a 128-byte offset from `b`, which
            // is 64-byte aligned (the contract).
            let (b0, b1) = unsafe { (_mm512_load_ps(t.b.add(kk * 32)), _mm512_load_ps(t.b.add(kk * 32 + 16))) };
            for (r, acc) in acc.iter_mut().enumerate() {
                let at = if PACKED { kk * 8 + r } else { r * t.lda + kk };
                // SAFETY: element (r, kk) of `a` with `r < R = rows` and `kk < k`: readable by
                // the contract.
                let x = _mm512_set1_ps(unsafe { *t.a.add(at) });
                acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = t.c.wrapping_add(r * t.ldc);
            // SAFETY: as the loads above, writable by the contract.
            unsafe {
                _mm512_mask_storeu_ps(row, lo, acc[0]);
                _mm512_mask_storeu_ps(row.wrapping_add(16), hi, acc[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Tile;

    /// A tile of `rows` (1..=6) rows and a 16-wide panel.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA and `t` meets [`Tile`]'s contract with `rows` rows, `nr = 16`
    /// and `a` packed with `mr = 6` if `packed`.
    pub(super) unsafe fn tile(rows: usize, t: &Tile, packed: bool) {
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe {
            if packed {
                with_rows::<true>(rows, t)
            } else {
                with_rows::<false>(rows, t)
            }
        }
    }

    /// [`tile`] with the addressing of `a` fixed: the kernel for `rows` rows.
    ///
    /// # Safety
    /// As [`tile`], with `packed = PACKED`.
    unsafe fn with_rows<const PACKED: bool>(rows: usize, t: &Tile) {
        // SAFETY: the caller's contract, with `rows` rows (at most 6; 1 for anything less
        // than 2).
        unsafe {
            match rows {
                6 => rows_n::<6, PACKED>(t),
                5 => rows_n::<5, PACKED>(t),
                4 => rows_n::<4, PACKED>(t),
                3 => rows_n::<3, PACKED>(t),
                2 => rows_n::<2, PACKED>(t),
                _ => rows_n::<1, PACKED>(t),
            }
        }
    }

    /// `R` rows: `2 R` accumulators, two aligned panel loads and `R` broadcasts per depth step.
    ///
    /// # Safety
    /// As [`tile`], with `rows = R` and `packed = PACKED`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_n<const R: usize, const PACKED: bool>(t: &Tile) {
        // Lane j of `lo` (`hi`) is on if column j (8 + j) is inside the tile.
        let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(t.cols as i32), index);
        let hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(t.cols as i32 - 8), index);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        if !t.src.is_null() {
            for (r, acc) in acc.iter_mut().enumerate() {
                let row = t.src.wrapping_add(r * t.lds);
                // SAFETY: the masks enable exactly the row's first `cols` elements, which the
                // contract makes readable; masked-off lanes are not accessed.
                unsafe {
                    acc[0] = _mm256_maskload_ps(row, lo);
                    acc[1] = _mm256_maskload_ps(row.wrapping_add(8), hi);
                }
            }
        }
        if !t.bias.is_null() {
            // SAFETY: as the row loads above, `cols` readable bias values.
            let bias = unsafe { [_mm256_maskload_ps(t.bias, lo), _mm256_maskload_ps(t.bias.wrapping_add(8), hi)] };
            for acc in acc.iter_mut() {
                acc[0] = _mm256_add_ps(acc[0], bias[0]);
                acc[1] = _mm256_add_ps(acc[1], bias[1]);
            }
        }
        for kk in 0..t.k {
            // SAFETY: panel row `kk` is 16 readable f32s at a 64-byte offset from `b`, which
            // is 64-byte aligned (the contract).
            let (b0, b1) = unsafe { (_mm256_load_ps(t.b.add(kk * 16)), _mm256_load_ps(t.b.add(kk * 16 + 8))) };
            for (r, acc) in acc.iter_mut().enumerate() {
                let at = if PACKED { kk * 6 + r } else { r * t.lda + kk };
                // SAFETY: element (r, kk) of `a` with `r < R = rows` and `kk < k`: readable by
                // the contract.
                let x = _mm256_set1_ps(unsafe { *t.a.add(at) });
                acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = t.c.wrapping_add(r * t.ldc);
            // SAFETY: as the loads above, writable by the contract.
            unsafe {
                _mm256_maskstore_ps(row, lo, acc[0]);
                _mm256_maskstore_ps(row.wrapping_add(8), hi, acc[1]);
            }
        }
    }
}

/// Element `(i, j)` of where a product starts, `c` being the output's current value.
#[inline(always)]
fn start_value(start: Start, c: f32, i: usize, j: usize) -> f32 {
    match start {
        Start::Zero => 0.0,
        Start::C => c,
        Start::Sum { d, ldd, bias } => d[i * ldd + j] + bias.map_or(0.0, |b| b[j]),
        Start::Bias(bias) => bias[j],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn kernels() -> Vec<Kernel> {
        let all = [
            Kernel::Scalar,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512,
        ];
        all.into_iter().filter(|k| k.available()).collect()
    }

    /// Checks one product against an f64 triple loop, within the worst-case bound of f32
    /// summation in any order: `k` units of roundoff on `Σ |a b|` plus the start's magnitude.
    /// `start`: 0 zero, 1 `c`, 2 another buffer, 3 another buffer and a bias.
    fn check(kernel: Kernel, m: usize, k: usize, n: usize, start: usize, b_layout: usize, rng: &mut StdRng) {
        let (lda, ldc, ldd) = (k + rng.random_range(0..3), n + rng.random_range(0..3), n + rng.random_range(0..3));
        let mut value = || rng.random_range(-1f32..1.0);
        let a: Vec<f32> = (0..m * lda).map(|_| value()).collect();
        let b: Vec<f32> = (0..2 * k * n).map(|_| value()).collect();
        let c0: Vec<f32> = (0..m * ldc).map(|_| value()).collect();
        let d: Vec<f32> = (0..m * ldd).map(|_| value()).collect();
        let bias: Vec<f32> = (0..n).map(|_| value()).collect();
        // The [k, n] operand stored row-major, column-major, or as every other element of a
        // row-major [k, 2n] (each a different packing loop).
        let (rsb, csb) = [(n, 1), (1, k), (2 * n, 2)][b_layout];
        let packed = PackedB::new(kernel, &b, k, n, rsb, csb);
        let mut c = c0.clone();
        match start {
            0 | 1 => packed.gemm(m, &a, lda, start == 1, &mut c, ldc),
            _ => packed.gemm_from(
                m,
                &a,
                lda,
                Start::Sum { d: &d, ldd, bias: (start == 3).then_some(&bias[..]) },
                &mut c,
                ldc,
            ),
        }
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j];
                if j >= n {
                    assert_eq!(got, c0[i * ldc + j], "{kernel:?} wrote past column {n} in row {i}");
                    continue;
                }
                let s0 = match start {
                    0 => 0.0,
                    1 => c0[i * ldc + j],
                    2 => d[i * ldd + j],
                    _ => d[i * ldd + j] + bias[j],
                };
                let (mut sum, mut mag) = (s0 as f64, s0.abs() as f64);
                for kk in 0..k {
                    let p = a[i * lda + kk] as f64 * b[kk * rsb + j * csb] as f64;
                    sum += p;
                    mag += p.abs();
                }
                let tol = (k + 1) as f64 * f32::EPSILON as f64 * mag + 1e-30;
                assert!(
                    (got as f64 - sum).abs() <= tol,
                    "{kernel:?} m {m} k {k} n {n} start {start}: c[{i}, {j}] = {got}, want {sum} (tol {tol})"
                );
            }
        }
    }

    #[test]
    fn every_kernel_matches_a_triple_loop() {
        let mut rng = StdRng::seed_from_u64(7);
        // Empty, single, and either side of every tile size (6, 8, 16, 32) and of two tiles.
        let edges = [0, 1, 2, 5, 6, 7, 8, 9, 12, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70];
        for kernel in kernels() {
            for &m in &edges {
                for &n in &edges {
                    let k = edges[rng.random_range(0..edges.len())];
                    for start in 0..4 {
                        check(kernel, m, k, n, start, rng.random_range(0..3), &mut rng);
                    }
                }
            }
            for _ in 0..200 {
                let (m, k, n) = (rng.random_range(0..=70), rng.random_range(0..=70), rng.random_range(0..=70));
                check(kernel, m, k, n, rng.random_range(0..4), rng.random_range(0..3), &mut rng);
            }
            // Deeper than one pass over a panel.
            for k in [KC - 1, KC, KC + 1, 2 * KC + 45] {
                check(kernel, 9, k, 37, 0, 0, &mut rng);
                check(kernel, 13, k, 33, 1, 1, &mut rng);
                check(kernel, 5, k, 40, 3, 2, &mut rng);
            }
        }
    }

    /// Checks `c = a · b` (or `+=`) with both operands packed, into buffers `pa` and `pb`
    /// reused from earlier checks (so stale values from a larger packing must not leak in),
    /// against an f64 triple loop as in `check`. `a` is `[m, k]` stored row-major,
    /// column-major (the transposed read) or as every other element of a `[2m, k]`
    /// column-major one.
    fn check_packed_a(pa: &mut PackedA, pb: &mut PackedB, m: usize, k: usize, n: usize, rng: &mut StdRng) {
        let kernel = pb.kernel;
        let a_layout = rng.random_range(0..3);
        let accumulate = rng.random_bool(0.5);
        let pad = rng.random_range(0..3);
        let ldc = n + rng.random_range(0..3);
        let mut value = || rng.random_range(-1f32..1.0);
        let (rsa, csa) = [(k + pad, 1), (1, m + pad), (2, 2 * m + pad)][a_layout];
        let a: Vec<f32> = (0..(m + 1) * (k + 1) * 2 + 2 * pad * k).map(|_| value()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| value()).collect();
        let c0: Vec<f32> = (0..m * ldc).map(|_| value()).collect();
        pa.pack(&a, m, k, rsa, csa);
        pb.repack(&b, k, n, n, 1);
        let mut c = c0.clone();
        pb.gemm_packed_a(pa, accumulate, &mut c, ldc);
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j];
                if j >= n {
                    assert_eq!(got, c0[i * ldc + j], "{kernel:?} wrote past column {n} in row {i}");
                    continue;
                }
                let s0 = if accumulate { c0[i * ldc + j] } else { 0.0 };
                let (mut sum, mut mag) = (s0 as f64, s0.abs() as f64);
                for kk in 0..k {
                    let p = a[i * rsa + kk * csa] as f64 * b[kk * n + j] as f64;
                    sum += p;
                    mag += p.abs();
                }
                let tol = (k + 1) as f64 * f32::EPSILON as f64 * mag + 1e-30;
                assert!(
                    (got as f64 - sum).abs() <= tol,
                    "{kernel:?} packed a ({a_layout}) m {m} k {k} n {n} accumulate {accumulate}: \
                     c[{i}, {j}] = {got}, want {sum} (tol {tol})"
                );
            }
        }
    }

    #[test]
    fn a_packed_left_operand_matches_a_triple_loop() {
        let mut rng = StdRng::seed_from_u64(11);
        let edges = [0, 1, 2, 5, 6, 7, 8, 9, 12, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70];
        for kernel in kernels() {
            let (mut pa, mut pb) = (PackedA::new(kernel), PackedB::new(kernel, &[], 0, 0, 0, 1));
            // A large packing first, so that the later, smaller ones reuse dirty buffers.
            check_packed_a(&mut pa, &mut pb, 70, 300, 70, &mut rng);
            for &m in &edges {
                for &n in &edges {
                    let k = edges[rng.random_range(0..edges.len())];
                    check_packed_a(&mut pa, &mut pb, m, k, n, &mut rng);
                }
            }
            for _ in 0..200 {
                let (m, k, n) = (rng.random_range(0..=70), rng.random_range(0..=70), rng.random_range(0..=70));
                check_packed_a(&mut pa, &mut pb, m, k, n, &mut rng);
            }
            for k in [KC - 1, KC, KC + 1, 2 * KC + 45] {
                check_packed_a(&mut pa, &mut pb, 17, k, 37, &mut rng);
                check_packed_a(&mut pa, &mut pb, 64, k, 128, &mut rng);
            }
        }
    }

    #[test]
    #[should_panic(expected = "left operand packed for")]
    fn a_packed_left_operand_of_another_depth_panics() {
        let kernel = Kernel::best();
        let mut pa = PackedA::new(kernel);
        pa.pack(&[1.0; 6], 2, 3, 3, 1);
        let pb = PackedB::new(kernel, &[1.0; 8], 4, 2, 2, 1);
        pb.gemm_packed_a(&pa, false, &mut [0.0; 4], 2);
    }

    #[test]
    fn a_zero_depth_product_is_zero_or_leaves_c() {
        for kernel in kernels() {
            let packed = PackedB::new(kernel, &[], 0, 3, 3, 1);
            let mut c = vec![5f32; 6];
            packed.gemm(2, &[], 0, true, &mut c, 3);
            assert_eq!(c, [5.0; 6]);
            packed.gemm(2, &[], 0, false, &mut c, 3);
            assert_eq!(c, [0.0; 6]);
            let mut a = PackedA::new(kernel);
            a.pack(&[], 2, 0, 0, 1);
            let mut c = vec![5f32; 6];
            packed.gemm_packed_a(&a, true, &mut c, 3);
            assert_eq!(c, [5.0; 6]);
            packed.gemm_packed_a(&a, false, &mut c, 3);
            assert_eq!(c, [0.0; 6]);
        }
    }
}
