//! 2-D max and average pooling over `[N, C, H, W]` (or `[C, H, W]`) inputs and their gradients.
//!
//! Each `(n, c)` plane is pooled on its own. Max pooling records, for every output, the index of
//! its maximum in the flattened `H * W` plane (as PyTorch's `return_indices`), and its backward
//! scatters the output gradient back through those indices; average pooling spreads each output
//! gradient evenly over its window. Autograd builds the pooling layers' backward on these.
//!
//! Planes are independent, so large poolings cut them into blocks of whole planes, a few per
//! thread of the matmul pool ([`crate::num_threads`], [`crate::parts_for`]), which the threads
//! claim as they become free: every output is computed exactly as on one thread, so results are
//! bit-identical whatever the thread count.

use std::ops::Range;
use std::sync::Mutex;

use super::conv::dense;
use std::mem::MaybeUninit;

use super::matmul::{fill_uninit, min_work_per_thread, parallel_for_each, parts_for, threads_for, unit_chunks};
use crate::element::Float;
#[cfg(target_arch = "x86_64")]
use crate::element::{retype, retype_ref};
use crate::tensor::Tensor;

/// Options of 2-D pooling: `[height, width]` pairs, as PyTorch's `nn.MaxPool2d`/`nn.AvgPool2d`.
///
/// ```
/// use ferrograd_tensor::Pool2dOptions;
/// let opts = Pool2dOptions { padding: [1, 1], ..Pool2dOptions::new([3, 3]) };
/// assert_eq!(opts.stride, [3, 3]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dOptions {
    /// Window size along height and width.
    pub kernel: [usize; 2],
    /// Step between windows along height and width.
    pub stride: [usize; 2],
    /// Implicit padding on both sides (at most half the kernel): `-inf` for max pooling, zeros
    /// for average pooling.
    pub padding: [usize; 2],
    /// Average pooling only: whether padded positions count in the divisor.
    pub count_include_pad: bool,
}

impl Pool2dOptions {
    /// Windows of `kernel` with stride equal to the kernel, no padding and padding counted in
    /// averages (PyTorch's defaults).
    pub fn new(kernel: [usize; 2]) -> Self {
        Pool2dOptions { kernel, stride: kernel, padding: [0, 0], count_include_pad: true }
    }
}

/// Sizes of one pooling, validated: `planes` planes of `h x w` pooled to `ho x wo`.
#[derive(Clone, Copy, Debug)]
struct PoolGeometry {
    planes: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    ho: usize,
    wo: usize,
}

/// One output's window: rows `h0..h1` and columns `w0..w1` of the plane (clipped to it), and
/// the window's area clipped to the padded plane instead.
struct Window {
    h0: usize,
    h1: usize,
    w0: usize,
    w1: usize,
    padded_area: usize,
}

impl PoolGeometry {
    /// Validates a rank-3 or rank-4 input shape against `opts`, panicking with `op`.
    #[track_caller]
    fn new(op: &str, shape: &[usize], opts: &Pool2dOptions) -> Self {
        // A `match`, not a closure: a panic inside a closure would lose the caller's location.
        match Self::check(shape, opts) {
            Ok(geo) => geo,
            Err(why) => panic!("{op}: input {shape:?} with {opts:?}: {why}"),
        }
    }

    /// The geometry, or why the shape and options do not make a pooling.
    fn check(shape: &[usize], opts: &Pool2dOptions) -> Result<Self, &'static str> {
        if shape.len() != 3 && shape.len() != 4 {
            return Err("expected an [N, C, H, W] or [C, H, W] input");
        }
        let r = shape.len();
        let (planes, h, w) = (shape[..r - 2].iter().product(), shape[r - 2], shape[r - 1]);
        let Pool2dOptions { kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw], .. } = *opts;
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            return Err("kernel and stride must be positive");
        }
        if 2 * ph > kh || 2 * pw > kw {
            return Err("padding must be at most half the kernel");
        }
        if h + 2 * ph < kh || w + 2 * pw < kw {
            return Err("kernel is larger than the padded input");
        }
        let (ho, wo) = ((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1);
        Ok(PoolGeometry { planes, h, w, kh, kw, sh, sw, ph, pw, ho, wo })
    }

    /// The output shape: the input's with `H, W` replaced by `ho, wo`.
    fn out_shape(&self, input_shape: &[usize]) -> Vec<usize> {
        let mut s = input_shape.to_vec();
        let r = s.len();
        s[r - 2] = self.ho;
        s[r - 1] = self.wo;
        s
    }

    fn window(&self, oh: usize, ow: usize) -> Window {
        let (hs, ws) = ((oh * self.sh) as isize - self.ph as isize, (ow * self.sw) as isize - self.pw as isize);
        let he = (hs + self.kh as isize).min((self.h + self.ph) as isize);
        let we = (ws + self.kw as isize).min((self.w + self.pw) as isize);
        Window {
            h0: hs.max(0) as usize,
            h1: he.min(self.h as isize) as usize,
            w0: ws.max(0) as usize,
            w1: we.min(self.w as isize) as usize,
            padded_area: ((he - hs) * (we - ws)) as usize,
        }
    }

    /// Whether every window lies inside the plane, so the kernels can skip clipping (and the
    /// offsets within a window are small enough to be exact in an `f32`).
    fn unpadded(&self) -> bool {
        self.ph == 0 && self.pw == 0 && self.kh * self.w <= 1 << 24
    }

    /// Calls `f(plane, output index within the plane, window)` for every output position of
    /// planes `0..planes`.
    fn for_each_window(&self, planes: usize, mut f: impl FnMut(usize, usize, &Window)) {
        let windows: Vec<Window> = (0..self.ho)
            .flat_map(|oh| (0..self.wo).map(move |ow| (oh, ow)))
            .map(|(oh, ow)| self.window(oh, ow))
            .collect();
        for plane in 0..planes {
            for (i, win) in windows.iter().enumerate() {
                f(plane, i, win);
            }
        }
    }
}

/// Checks that `grad_out` has the pooled shape of `input_shape`.
#[track_caller]
fn check_grad_out(op: &str, geo: &PoolGeometry, grad_out: &[usize], input_shape: &[usize]) {
    let expected = geo.out_shape(input_shape);
    assert!(
        grad_out == expected.as_slice(),
        "{op}: grad_out {grad_out:?} does not match the pooled shape {expected:?} of input {input_shape:?}"
    );
}

/// Multiply-adds that one input element of a pooling counts for against
/// [`min_work_per_thread`]: at the default 2^19, a thread gets at least 2^14 elements (10-20 µs
/// of work, against ~8 µs to wake a parked worker); 0 splits every pooling of two planes or more.
const WORK_PER_ELEMENT: usize = 32;

/// Planes pooled together by [`max_planes_unpadded`]: LeNet's second pooling has 25 outputs
/// per plane, where the fixed cost of a call outweighed the work.
const MAX_BLOCK_OUTPUTS: usize = 1 << 13;

/// Parts (runs of planes) for a pooling over `planes` planes touching `elems` elements of the
/// larger side: [`parts_for`] the threads the work pays for.
fn pool_parts(planes: usize, elems: usize) -> usize {
    parts_for(threads_for(elems, min_work_per_thread() / WORK_PER_ELEMENT).min(planes).max(1), planes)
}

impl<E: Float> Tensor<E> {
    /// 2-D max pooling of an `[N, C, H, W]` (or `[C, H, W]`) input; padding counts as `-inf`
    /// and NaN propagates.
    ///
    /// # Panics
    /// If the rank is not 3 or 4, the kernel or stride is zero, the padding exceeds half the
    /// kernel, or the kernel is larger than the padded input.
    ///
    /// ```
    /// use ferrograd_tensor::{Pool2dOptions, Tensor};
    /// let x = Tensor::<f32>::arange(0.0, 16.0, 1.0).reshape(&[1, 1, 4, 4]);
    /// let y = x.max_pool2d(&Pool2dOptions::new([2, 2]));
    /// assert_eq!(y.to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
    /// ```
    #[track_caller]
    pub fn max_pool2d(&self, opts: &Pool2dOptions) -> Tensor<E> {
        self.max_pool2d_impl("max_pool2d", opts).0
    }

    /// [`Tensor::max_pool2d`] and, for each output, the index of its maximum in the flattened
    /// `H * W` plane of its `(n, c)` (as PyTorch's `return_indices=True`); the first maximum in
    /// row-major order wins, a NaN wins over numbers.
    ///
    /// # Panics
    /// As [`Tensor::max_pool2d`].
    ///
    /// ```
    /// use ferrograd_tensor::{Pool2dOptions, Tensor};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 4.0, 3.0, 2.0], &[1, 1, 2, 2]);
    /// let (y, idx) = x.max_pool2d_with_indices(&Pool2dOptions::new([2, 2]));
    /// assert_eq!((y.to_vec(), idx.to_vec()), (vec![4.0], vec![1]));
    /// ```
    #[track_caller]
    pub fn max_pool2d_with_indices(&self, opts: &Pool2dOptions) -> (Tensor<E>, Tensor<i64>) {
        self.max_pool2d_impl("max_pool2d_with_indices", opts)
    }

    #[track_caller]
    fn max_pool2d_impl(&self, op: &str, opts: &Pool2dOptions) -> (Tensor<E>, Tensor<i64>) {
        let geo = PoolGeometry::new(op, self.shape(), opts);
        let x = dense(self);
        let (hw, per_plane) = (geo.h * geo.w, geo.ho * geo.wo);
        let n_out = geo.planes * per_plane;
        // Filled on the threads (`-inf` and 0) and set in full there.
        let (mut y, mut idx) = (Vec::with_capacity(n_out), Vec::with_capacity(n_out));
        let parts = pool_parts(geo.planes, geo.planes * hw);
        let items: Vec<_> = unit_chunks(&mut y.spare_capacity_mut()[..n_out], geo.planes, per_plane, parts)
            .into_iter()
            .zip(unit_chunks(&mut idx.spare_capacity_mut()[..n_out], geo.planes, per_plane, parts))
            .map(|((r, y), (_, i))| (r, y, i))
            .collect();
        parallel_for_each(items, &|(planes, y, idx): (
            Range<usize>,
            &mut [MaybeUninit<E>],
            &mut [MaybeUninit<i64>],
        )| {
            let x = &x[planes.start * hw..planes.end * hw];
            if geo.unpadded() && (geo.kh, geo.kw, geo.sh, geo.sw) == (2, 2, 2, 2) {
                // Every output is written (no window is clipped, and `hw > 0`): no fill first.
                for ((xp, yp), ip) in
                    x.chunks_exact(hw).zip(y.chunks_exact_mut(per_plane)).zip(idx.chunks_exact_mut(per_plane))
                {
                    max_plane_2x2(&geo, xp, yp, ip);
                }
                return;
            }
            let (y, idx) = (fill_uninit(y, E::neg_infinity()), fill_uninit(idx, 0));
            if geo.unpadded() {
                // No window is clipped (and `hw > 0`): pool blocks of planes, whole output rows
                // at a time.
                let block = (MAX_BLOCK_OUTPUTS / per_plane.max(1)).max(1);
                let mut scratch = MaxScratch::new(block * per_plane);
                let blocks =
                    x.chunks(block * hw).zip(y.chunks_mut(block * per_plane)).zip(idx.chunks_mut(block * per_plane));
                for ((xb, yb), ib) in blocks {
                    max_planes_unpadded(&geo, xb, yb, ib, &mut scratch);
                }
                return;
            }
            geo.for_each_window(planes.len(), |plane, i, win| {
                let xp = &x[plane * hw..][..hw];
                let (mut best, mut arg) = (E::neg_infinity(), win.h0 * geo.w + win.w0);
                for ih in win.h0..win.h1 {
                    let row = &xp[ih * geo.w..][win.w0..win.w1];
                    for (iw, &v) in (win.w0..).zip(row) {
                        // A NaN replaces any maximum and sticks, as in PyTorch.
                        if v > best || v.is_nan() {
                            best = v;
                            arg = ih * geo.w + iw;
                        }
                    }
                }
                y[plane * per_plane + i] = best;
                idx[plane * per_plane + i] = arg as i64;
            });
        });
        // SAFETY: the parts cover `0..n_out` of both buffers, and each part was written in full:
        // by `max_plane_2x2` (every window of every plane of the part), or by `fill_uninit`.
        unsafe {
            y.set_len(n_out);
            idx.set_len(n_out);
        }
        let shape = geo.out_shape(self.shape());
        (Tensor::from_vec(y, &shape), Tensor::from_vec(idx, &shape))
    }

    /// The gradient of [`Tensor::max_pool2d`] w.r.t. its input: each element of `grad_out` is
    /// added at its recorded index in its `(n, c)` plane of a zero tensor of `input_shape`.
    ///
    /// # Panics
    /// If `grad_out` and `indices` differ in shape, do not share `input_shape`'s leading dims
    /// (N, C and rank 3 or 4), or an index falls outside the `H * W` plane.
    ///
    /// ```
    /// use ferrograd_tensor::{Pool2dOptions, Tensor};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 4.0, 3.0, 2.0], &[1, 1, 2, 2]);
    /// let (_, idx) = x.max_pool2d_with_indices(&Pool2dOptions::new([2, 2]));
    /// let gx = Tensor::max_pool2d_backward(&Tensor::<f32>::ones(&[1, 1, 1, 1]), &idx, x.shape());
    /// assert_eq!(gx.to_vec(), vec![0.0, 1.0, 0.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn max_pool2d_backward(grad_out: &Tensor<E>, indices: &Tensor<i64>, input_shape: &[usize]) -> Tensor<E> {
        let (gs, r) = (grad_out.shape(), input_shape.len());
        assert!(
            gs == indices.shape() && (r == 3 || r == 4) && gs.len() == r && gs[..r - 2] == input_shape[..r - 2],
            "max_pool2d_backward: grad_out {gs:?} and indices {:?} do not fit input {input_shape:?}",
            indices.shape()
        );
        let hw = input_shape[r - 2] * input_shape[r - 1];
        let per_plane = gs[r - 2] * gs[r - 1];
        let planes: usize = gs[..r - 2].iter().product();
        let (g, idx) = (dense(grad_out), dense(indices));
        let n_in: usize = input_shape.iter().product();
        // Zeroed on the threads.
        let mut gx = Vec::with_capacity(n_in);
        let parts = pool_parts(planes, n_in);
        let items = unit_chunks(&mut gx.spare_capacity_mut()[..n_in], planes, hw, parts);
        // Indices are checked on the threads (a serial pass over them took 2% of a 2-thread
        // LeNet step); a bad one is reported here, so the panic names the caller's location.
        let bad = Mutex::new(None);
        parallel_for_each(items, &|(planes, gx): (Range<usize>, &mut [MaybeUninit<E>])| {
            let gx = fill_uninit(gx, E::zero());
            for (plane, xp) in planes.zip(gx.chunks_exact_mut(hw)) {
                let range = plane * per_plane..(plane + 1) * per_plane;
                for (&gv, &i) in g[range.clone()].iter().zip(&idx[range]) {
                    match usize::try_from(i).ok().and_then(|i| xp.get_mut(i)) {
                        Some(x) => *x += gv,
                        None => {
                            bad.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(i);
                        }
                    }
                }
            }
        });
        if let Some(i) = bad.into_inner().unwrap_or_else(|e| e.into_inner()) {
            panic!("max_pool2d_backward: index {i} is outside the {hw}-element plane of input {input_shape:?}")
        }
        // SAFETY: the parts cover `0..n_in` and `fill_uninit` wrote each of them.
        unsafe { gx.set_len(n_in) };
        Tensor::from_vec(gx, input_shape)
    }

    /// 2-D average pooling of an `[N, C, H, W]` (or `[C, H, W]`) input; padding counts as zero,
    /// and in the divisor only if `count_include_pad`.
    ///
    /// # Panics
    /// As [`Tensor::max_pool2d`].
    ///
    /// ```
    /// use ferrograd_tensor::{Pool2dOptions, Tensor};
    /// let x = Tensor::<f32>::arange(0.0, 16.0, 1.0).reshape(&[1, 4, 4]);
    /// let y = x.avg_pool2d(&Pool2dOptions::new([2, 2]));
    /// assert_eq!(y.to_vec(), vec![2.5, 4.5, 10.5, 12.5]);
    /// ```
    #[track_caller]
    pub fn avg_pool2d(&self, opts: &Pool2dOptions) -> Tensor<E> {
        let geo = PoolGeometry::new("avg_pool2d", self.shape(), opts);
        let x = dense(self);
        let (hw, per_plane) = (geo.h * geo.w, geo.ho * geo.wo);
        let mut y = vec![E::zero(); geo.planes * per_plane];
        let parts = pool_parts(geo.planes, geo.planes * hw);
        let items = unit_chunks(&mut y, geo.planes, per_plane, parts);
        parallel_for_each(items, &|(planes, y): (Range<usize>, &mut [E])| {
            let x = &x[planes.start * hw..planes.end * hw];
            if geo.unpadded() {
                for (xp, yp) in x.chunks_exact(hw).zip(y.chunks_exact_mut(per_plane)) {
                    avg_plane_unpadded(&geo, xp, yp);
                }
                return;
            }
            geo.for_each_window(planes.len(), |plane, i, win| {
                let xp = &x[plane * hw..][..hw];
                let mut sum = E::zero();
                for ih in win.h0..win.h1 {
                    sum += xp[ih * geo.w + win.w0..ih * geo.w + win.w1].iter().fold(E::zero(), |a, &v| a + v);
                }
                y[plane * per_plane + i] = sum / E::from_f64(divisor(win, opts) as f64);
            });
        });
        Tensor::from_vec(y, &geo.out_shape(self.shape()))
    }

    /// The gradient of [`Tensor::avg_pool2d`] w.r.t. its input: each element of `grad_out`,
    /// divided by its window's divisor, is added over its window in a zero tensor of
    /// `input_shape`.
    ///
    /// # Panics
    /// As [`Tensor::avg_pool2d`] for `input_shape`, or if `grad_out` does not have the pooled shape.
    ///
    /// ```
    /// use ferrograd_tensor::{Pool2dOptions, Tensor};
    /// let gy = Tensor::<f32>::ones(&[1, 1, 1, 1]);
    /// let gx = Tensor::avg_pool2d_backward(&gy, &[1, 1, 2, 2], &Pool2dOptions::new([2, 2]));
    /// assert_eq!(gx.to_vec(), vec![0.25; 4]);
    /// ```
    #[track_caller]
    pub fn avg_pool2d_backward(grad_out: &Tensor<E>, input_shape: &[usize], opts: &Pool2dOptions) -> Tensor<E> {
        let op = "avg_pool2d_backward";
        let geo = PoolGeometry::new(op, input_shape, opts);
        check_grad_out(op, &geo, grad_out.shape(), input_shape);
        let g = dense(grad_out);
        let (hw, per_plane) = (geo.h * geo.w, geo.ho * geo.wo);
        let n_in: usize = input_shape.iter().product();
        // Zeroed on the threads.
        let mut gx = Vec::with_capacity(n_in);
        let parts = pool_parts(geo.planes, n_in);
        let items = unit_chunks(&mut gx.spare_capacity_mut()[..n_in], geo.planes, hw, parts);
        parallel_for_each(items, &|(planes, gx): (Range<usize>, &mut [MaybeUninit<E>])| {
            let gx = fill_uninit(gx, E::zero());
            let g = &g[planes.start * per_plane..planes.end * per_plane];
            if geo.unpadded() {
                for (gp, xp) in g.chunks_exact(per_plane).zip(gx.chunks_exact_mut(hw)) {
                    avg_backward_plane_unpadded(&geo, gp, xp);
                }
                return;
            }
            geo.for_each_window(planes.len(), |plane, i, win| {
                let share = g[plane * per_plane + i] / E::from_f64(divisor(win, opts) as f64);
                let xp = &mut gx[plane * hw..][..hw];
                for ih in win.h0..win.h1 {
                    xp[ih * geo.w + win.w0..ih * geo.w + win.w1].iter_mut().for_each(|v| *v += share);
                }
            });
        });
        // SAFETY: the parts cover `0..n_in` and `fill_uninit` wrote each of them.
        unsafe { gx.set_len(n_in) };
        Tensor::from_vec(gx, input_shape)
    }
}

/// The number an average-pooling window's sum is divided by.
fn divisor(win: &Window, opts: &Pool2dOptions) -> usize {
    if opts.count_include_pad {
        win.padded_area
    } else {
        (win.h1 - win.h0) * (win.w1 - win.w0)
    }
}

// Unpadded planes: every window lies inside the plane, so none is clipped. The kernels sweep
// one kernel offset `(ki, kj)` at a time, in row-major order, over many windows at once (a
// row of them, or for max pooling the whole plane), so the inner loops run over output
// columns; each window still sees its elements in row-major order, as in the clipped path.

/// Scratch rows of [`max_planes_unpadded`], allocated once per thread of the kernel.
struct MaxScratch<E> {
    /// One kernel offset's inputs for every window of the plane.
    taps: Vec<E>,
    /// For each window, the in-plane offset from its first element to its maximum so far, as
    /// an `E` so that it is selected in the same vector lanes as the values.
    winner: Vec<E>,
    /// The next `winner`, written beside it rather than over it.
    next: Vec<E>,
}

impl<E: Float> MaxScratch<E> {
    /// Scratch for up to `outputs` windows.
    fn new(outputs: usize) -> Self {
        let plane = vec![E::zero(); outputs];
        MaxScratch { taps: plane.clone(), winner: plane.clone(), next: plane }
    }
}

/// Max pooling of the `h x w` planes `xs` into `ys` (filled with `-inf`) and the indices `is`
/// (indices within each plane).
///
/// The output rows of all planes are handled as one tall plane: for each kernel offset in
/// row-major order, its input under every window is gathered into one contiguous row and
/// [`max_step`] folds that row into the running maxima with vector selects and no branch: on
/// random data a branch per comparison mispredicts half the time. The winner's offset within
/// its window is kept as an `E` in the same lanes and turned into an index at the end.
fn max_planes_unpadded<E: Float>(geo: &PoolGeometry, xs: &[E], ys: &mut [E], is: &mut [i64], s: &mut MaxScratch<E>) {
    let (w, sh, sw, ho, wo) = (geo.w, geo.sh, geo.sw, geo.ho, geo.wo);
    let hw = geo.h * w;
    let n = ys.len();
    let (taps, mut winner, mut next) = (&mut s.taps[..n], &mut s.winner[..n], &mut s.next[..n]);
    winner.fill(E::zero());
    for ki in 0..geo.kh {
        for kj in 0..geo.kw {
            for (r, t) in taps.chunks_exact_mut(wo).enumerate() {
                let (plane, oh) = (r / ho, r % ho);
                let row = &xs[plane * hw + (oh * sh + ki) * w + kj..];
                t.iter_mut().zip(row.iter().step_by(sw)).for_each(|(t, &v)| *t = v);
            }
            max_step(ys, next, winner, taps, E::from_f64((ki * w + kj) as f64));
            std::mem::swap(&mut winner, &mut next);
        }
    }
    for (r, (ir, wr)) in is.chunks_exact_mut(wo).zip(winner.chunks_exact(wo)).enumerate() {
        let first = ((r % ho) * sh * w) as i64;
        for (ow, (i, &k)) in ir.iter_mut().zip(wr).enumerate() {
            *i = first + (ow * sw) as i64 + k.to_f64() as i64;
        }
    }
}

/// Max pooling of one plane with 2x2 windows at stride 2 (LeNet's, and most CNNs'): the four
/// taps of each window are compared in row-major order in one pass, with selects rather than
/// branches (on random data a branch per comparison mispredicts half the time), which LLVM
/// turns into vector code; the generic kernel's four gathers and folds took 1.9 ns per input
/// element. Same rule as [`max_step`]: a larger value or a NaN takes over.
///
/// Never inlined: inlined into its caller, LLVM vectorised this loop worse (1.5x slower, after
/// an unrelated change elsewhere in the crate moved its inlining decision).
#[inline(never)]
fn max_plane_2x2<E: Float>(geo: &PoolGeometry, xp: &[E], yp: &mut [MaybeUninit<E>], ip: &mut [MaybeUninit<i64>]) {
    let (w, wo) = (geo.w, geo.wo);
    for (oh, (yr, ir)) in yp.chunks_exact_mut(wo).zip(ip.chunks_exact_mut(wo)).enumerate() {
        let top = &xp[2 * oh * w..][..2 * wo];
        let bottom = &xp[(2 * oh + 1) * w..][..2 * wo];
        let first = (2 * oh * w) as i64;
        let (w1, wi) = (w as i64, w as i64 + 1);
        for (ow, (((y, i), t), b)) in
            yr.iter_mut().zip(ir.iter_mut()).zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)).enumerate()
        {
            let take = |v: E, best: E| v > best || v.is_nan();
            let (mut best, mut k) = (t[0], 0i64);
            // `t[0]` beats the initial `-inf` unless it is `-inf` itself, where offset 0 stays.
            if take(t[1], best) {
                (best, k) = (t[1], 1);
            }
            if take(b[0], best) {
                (best, k) = (b[0], w1);
            }
            if take(b[1], best) {
                (best, k) = (b[1], wi);
            }
            y.write(best);
            i.write(first + 2 * ow as i64 + k);
        }
    }
}

/// One kernel offset `k` of a plane of windows: where `src[i] > best[i]` or `src[i]` is NaN (a
/// NaN replaces any maximum and sticks, as in PyTorch), `best[i] = src[i]` and `next[i] = k`;
/// elsewhere `next[i] = winner[i]`. All four slices have the same length.
///
/// The portable loop compiles to a compare and branch per element, which on random data
/// mispredicts half the time (LLVM does not vectorise it); with AVX, f32 and f64 use blends.
fn max_step<E: Float>(best: &mut [E], next: &mut [E], winner: &[E], src: &[E], k: E) {
    let n = best.len();
    assert!(next.len() == n && winner.len() == n && src.len() == n, "max_step: rows of different lengths");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx") {
        if let (Some(b), Some(nx), Some(w), Some(x)) = (retype(best), retype(next), retype_ref(winner), retype_ref(src))
        {
            // SAFETY: the CPU runs AVX, and the lengths are equal (asserted above).
            unsafe { simd::max_step_f32(b, nx, w, x, k.to_f64() as f32) };
            return;
        }
        if let (Some(b), Some(nx), Some(w), Some(x)) = (retype(best), retype(next), retype_ref(winner), retype_ref(src))
        {
            // SAFETY: as above.
            unsafe { simd::max_step_f64(b, nx, w, x, k.to_f64()) };
            return;
        }
    }
    max_step_portable(best, next, winner, src, k);
}

/// [`max_step`] without SIMD.
fn max_step_portable<E: Float>(best: &mut [E], next: &mut [E], winner: &[E], src: &[E], k: E) {
    for (((b, nx), &w), &v) in best.iter_mut().zip(next.iter_mut()).zip(winner).zip(src) {
        let take = v > *b || v.is_nan();
        *nx = if take { k } else { w };
        if take {
            *b = v;
        }
    }
}

/// [`max_step`] with AVX blends, a vector of f32 or f64 at a time; the last partial vector is
/// loaded and stored under a mask.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Eight `-1`s then eight `0`s: the 8 (or 4 for f64) words from `MASK[8 - r]` enable the
    /// first `r` lanes.
    static MASK: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

    /// # Safety
    /// The CPU must run AVX, and all four slices must have the same length.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn max_step_f32(best: &mut [f32], next: &mut [f32], winner: &[f32], src: &[f32], k: f32) {
        let n = best.len();
        let kv = _mm256_set1_ps(k);
        let mut i = 0;
        while i < n {
            let r = (n - i).min(8);
            // SAFETY: `8 - r + 8 <= 16` words of `MASK`; the mask enables lanes `i..i + r`,
            // all inside the slices, so masked loads and stores touch nothing past their ends.
            unsafe {
                let m = _mm256_loadu_si256(MASK.as_ptr().add(8 - r).cast());
                let v = _mm256_maskload_ps(src.as_ptr().add(i), m);
                let b = _mm256_maskload_ps(best.as_ptr().add(i), m);
                let w = _mm256_maskload_ps(winner.as_ptr().add(i), m);
                let take = _mm256_or_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, b), _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                _mm256_maskstore_ps(best.as_mut_ptr().add(i), m, _mm256_blendv_ps(b, v, take));
                _mm256_maskstore_ps(next.as_mut_ptr().add(i), m, _mm256_blendv_ps(w, kv, take));
            }
            i += r;
        }
    }

    /// # Safety
    /// As [`max_step_f32`].
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn max_step_f64(best: &mut [f64], next: &mut [f64], winner: &[f64], src: &[f64], k: f64) {
        let n = best.len();
        let kv = _mm256_set1_pd(k);
        let mut i = 0;
        while i < n {
            let r = (n - i).min(4);
            // SAFETY: as in `max_step_f32`; each enabled 64-bit lane reads two `-1` words.
            unsafe {
                let m = _mm256_loadu_si256(MASK.as_ptr().add(8 - 2 * r).cast());
                let v = _mm256_maskload_pd(src.as_ptr().add(i), m);
                let b = _mm256_maskload_pd(best.as_ptr().add(i), m);
                let w = _mm256_maskload_pd(winner.as_ptr().add(i), m);
                let take = _mm256_or_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(v, b), _mm256_cmp_pd::<_CMP_UNORD_Q>(v, v));
                _mm256_maskstore_pd(best.as_mut_ptr().add(i), m, _mm256_blendv_pd(b, v, take));
                _mm256_maskstore_pd(next.as_mut_ptr().add(i), m, _mm256_blendv_pd(w, kv, take));
            }
            i += r;
        }
    }
}

/// Average pooling of one `h x w` plane `xp` into `yp` (filled with zeros); with no padding the
/// divisor is the kernel's area whether or not padding counts.
fn avg_plane_unpadded<E: Float>(geo: &PoolGeometry, xp: &[E], yp: &mut [E]) {
    let (w, sw) = (geo.w, geo.sw);
    let area = E::from_f64((geo.kh * geo.kw) as f64);
    for (oh, yr) in yp.chunks_exact_mut(geo.wo).enumerate() {
        for ih in oh * geo.sh..oh * geo.sh + geo.kh {
            let row = &xp[ih * w..][..w];
            for kj in 0..geo.kw {
                yr.iter_mut().zip(row[kj..].iter().step_by(sw)).for_each(|(s, &v)| *s += v);
            }
        }
        yr.iter_mut().for_each(|s| *s /= area);
    }
}

/// The gradient of [`avg_plane_unpadded`]: spreads the plane's output gradient `gp` over the
/// windows of `xp` (zeros on entry).
fn avg_backward_plane_unpadded<E: Float>(geo: &PoolGeometry, gp: &[E], xp: &mut [E]) {
    let (w, sw) = (geo.w, geo.sw);
    let area = E::from_f64((geo.kh * geo.kw) as f64);
    let mut share = vec![E::zero(); geo.wo];
    for (oh, gr) in gp.chunks_exact(geo.wo).enumerate() {
        share.iter_mut().zip(gr).for_each(|(s, &g)| *s = g / area);
        for ih in oh * geo.sh..oh * geo.sh + geo.kh {
            let row = &mut xp[ih * w..][..w];
            for kj in 0..geo.kw {
                row[kj..].iter_mut().step_by(sw).zip(&share).for_each(|(v, &s)| *v += s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of every length up to three vectors, from a fixed pseudo-random stream over a few
    /// values (ties), `-inf` and NaN, in `best`, `winner` and `src` alike.
    fn rows<E: Float>() -> Vec<[Vec<E>; 3]> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match state % 10 {
                0 => E::nan(),
                1 => E::neg_infinity(),
                r => E::from_f64(r as f64 - 5.0),
            }
        };
        (0..=24).map(|n| [(); 3].map(|_| (0..n).map(|_| next()).collect())).collect()
    }

    fn same_bits<E: Float>(a: &[E], b: &[E]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| x == y || (x.is_nan() && y.is_nan()))
    }

    fn check_dispatch_matches_portable<E: Float>() {
        for [best, winner, src] in rows::<E>() {
            let k = E::from_f64(7.0);
            let (mut b1, mut n1) = (best.clone(), vec![E::zero(); best.len()]);
            let (mut b2, mut n2) = (best.clone(), vec![E::zero(); best.len()]);
            max_step(&mut b1, &mut n1, &winner, &src, k);
            max_step_portable(&mut b2, &mut n2, &winner, &src, k);
            assert!(
                same_bits(&b1, &b2) && same_bits(&n1, &n2),
                "length {}: {b1:?} {n1:?} vs {b2:?} {n2:?}",
                best.len()
            );
        }
    }

    /// On a CPU with AVX this compares the vector kernels (with their masked tails) against the
    /// portable loop; elsewhere both sides are the portable loop.
    #[test]
    fn max_step_simd_matches_portable() {
        check_dispatch_matches_portable::<f32>();
        check_dispatch_matches_portable::<f64>();
    }
}
