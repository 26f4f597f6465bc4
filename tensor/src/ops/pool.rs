//! 2-D max and average pooling over `[N, C, H, W]` (or `[C, H, W]`) inputs and their gradients.
//!
//! Each `(n, c)` plane is pooled on its own. Max pooling records, for every output, the index of
//! its maximum in the flattened `H * W` plane (as PyTorch's `return_indices`), and its backward
//! scatters the output gradient back through those indices; average pooling spreads each output
//! gradient evenly over its window. Autograd builds the pooling layers' backward on these.

use super::conv::dense;
use crate::element::Float;
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
        let fail = |why: String| -> ! { panic!("{op}: input {shape:?} with {opts:?}: {why}") };
        if shape.len() != 3 && shape.len() != 4 {
            fail("expected an [N, C, H, W] or [C, H, W] input".into());
        }
        let r = shape.len();
        let (planes, h, w) = (shape[..r - 2].iter().product(), shape[r - 2], shape[r - 1]);
        let Pool2dOptions { kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw], .. } = *opts;
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            fail("kernel and stride must be positive".into());
        }
        if 2 * ph > kh || 2 * pw > kw {
            fail("padding must be at most half the kernel".into());
        }
        if h + 2 * ph < kh || w + 2 * pw < kw {
            fail("kernel is larger than the padded input".into());
        }
        let (ho, wo) = ((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1);
        PoolGeometry { planes, h, w, kh, kw, sh, sw, ph, pw, ho, wo }
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

    /// Calls `f(plane, output index within the plane, window)` for every output position.
    fn for_each_window(&self, mut f: impl FnMut(usize, usize, &Window)) {
        let windows: Vec<Window> = (0..self.ho)
            .flat_map(|oh| (0..self.wo).map(move |ow| (oh, ow)))
            .map(|(oh, ow)| self.window(oh, ow))
            .collect();
        for plane in 0..self.planes {
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
        let hw = geo.h * geo.w;
        let n_out = geo.planes * geo.ho * geo.wo;
        let (mut y, mut idx) = (Vec::with_capacity(n_out), Vec::with_capacity(n_out));
        geo.for_each_window(|plane, _, win| {
            let xp = &x[plane * hw..][..hw];
            let (mut best, mut arg) = (E::neg_infinity(), win.h0 * geo.w + win.w0);
            for ih in win.h0..win.h1 {
                let row = &xp[ih * geo.w..][..geo.w];
                for (iw, &v) in row.iter().enumerate().take(win.w1).skip(win.w0) {
                    // A NaN replaces any maximum and sticks, as in PyTorch.
                    if v > best || v.is_nan() {
                        best = v;
                        arg = ih * geo.w + iw;
                    }
                }
            }
            y.push(best);
            idx.push(arg as i64);
        });
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
        let mut gx = vec![E::zero(); input_shape.iter().product()];
        for plane in 0..planes {
            let xp = &mut gx[plane * hw..][..hw];
            let range = plane * per_plane..(plane + 1) * per_plane;
            for (&gv, &i) in g[range.clone()].iter().zip(&idx[range]) {
                let slot = usize::try_from(i).ok().and_then(|i| xp.get_mut(i)).unwrap_or_else(|| {
                    panic!("max_pool2d_backward: index {i} is outside the {hw}-element plane of input {input_shape:?}")
                });
                *slot += gv;
            }
        }
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
        let hw = geo.h * geo.w;
        let mut y = Vec::with_capacity(geo.planes * geo.ho * geo.wo);
        geo.for_each_window(|plane, _, win| {
            let xp = &x[plane * hw..][..hw];
            let mut sum = E::zero();
            for ih in win.h0..win.h1 {
                sum += xp[ih * geo.w + win.w0..ih * geo.w + win.w1].iter().fold(E::zero(), |a, &v| a + v);
            }
            y.push(sum / E::from_f64(divisor(win, opts) as f64));
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
        let mut gx = vec![E::zero(); input_shape.iter().product()];
        geo.for_each_window(|plane, i, win| {
            let share = g[plane * per_plane + i] / E::from_f64(divisor(win, opts) as f64);
            let xp = &mut gx[plane * hw..][..hw];
            for ih in win.h0..win.h1 {
                xp[ih * geo.w + win.w0..ih * geo.w + win.w1].iter_mut().for_each(|v| *v += share);
            }
        });
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
