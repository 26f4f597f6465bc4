//! Elementwise unary ops: arithmetic, transcendental functions and activations.
//!
//! Each op is a scalar function handed to [`Tensor::map`], which walks a contiguous tensor as one
//! slice (so the compiler can vectorise the loop) and any other layout run by run. Results are
//! always new contiguous tensors; the in-place variants live in `binary.rs` next to the other
//! copy-on-write writers. Activations follow PyTorch's definitions, including its edge cases.

use super::matmul::{elementwise_min_per_thread, parallel_for_each, parts_for, threads_for, unit_chunks};
use super::simd_map::{collect_with, zip3_into};
use crate::element::{DType, Float, Num};
use crate::tensor::Tensor;

/// `erf` through libm in the element's own precision (std has no stable `erf`).
#[inline]
fn erf<E: Float>(x: E) -> E {
    match E::DTYPE {
        DType::F32 => E::from_f64(libm::erff(x.to_f64() as f32) as f64),
        _ => E::from_f64(libm::erf(x.to_f64())),
    }
}

/// `erf` for f32 as a rational function (Eigen's `generic_fast_erf_float`: odd numerator of
/// degree 13 over an even denominator of degree 8); exactly ±1 beyond `|x| > 3.9`, where erf
/// rounds to ±1 in f32. Branch-free (the selects become blends), so loops over it vectorise;
/// within a few ulp of libm's `erff`.
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    let xc = x.clamp(-4.0, 4.0);
    let x2 = xc * xc;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_473_9e-2;
    let r = xc * p / q;
    if x.abs() > 3.9 {
        1.0f32.copysign(x)
    } else {
        r
    }
}

/// `e^x` for f32, branch-free so loops over it vectorise: `x = n ln2 + r` with `n` rounded by
/// the 1.5·2^23 trick, `e^r` by a degree-6 Taylor polynomial on `|r| <= ln2/2`, and `2^n`
/// written into the exponent bits. The input is clamped to `[-87.3, 88.3]` (no subnormals, no
/// overflow); relative error about 2 ulp.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.3, 88.3);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4; // ln2 split in a high and a low part
    let mut p = 1.0f32 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let bits = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    p * f32::from_bits(((bits + 127) << 23) as u32)
}

/// `x Φ(x)` for f32 through [`erf_f32`].
#[inline(always)]
fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `d/dx x Φ(x) = Φ(x) + x φ(x)` for f32 through [`erf_f32`] and [`exp_f32`].
#[inline(always)]
fn gelu_grad_f32(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
    cdf + x * exp_f32(-0.5 * x * x) * 0.398_942_3
}

/// `d/dx x Φ(x)` for f32 from the forward's output `y = x Φ(x)` ([`gelu_f32`]'s): `Φ(x) = y / x`
/// needs no `erf`. Where that quotient would not be `Φ`, `Φ` is what [`gelu_grad_f32`] computes:
/// `1/2` for `|x| < 1e-20` (where `y / x` divides by a subnormal or zero), and exactly 1 or 0
/// beyond `|x| > 5.6`, where `erf_f32` is exactly ±1 (there `y / x` agrees except at ±inf).
#[inline(always)]
fn gelu_grad_from_output_f32(x: f32, y: f32) -> f32 {
    let a = x.abs();
    let big = if x > 0.0 { 1.0 } else { 0.0 };
    let cdf = if a > 5.6 {
        big
    } else if a < 1e-20 {
        0.5
    } else {
        y / x
    };
    cdf + x * exp_f32(-0.5 * x * x) * 0.398_942_3
}

/// `d/dx x Φ(x)` in f64 through libm.
#[inline]
fn gelu_grad_f64(v: f64) -> f64 {
    let cdf = 0.5 * (1.0 + libm::erf(v * std::f64::consts::FRAC_1_SQRT_2));
    cdf + v * (-0.5 * v * v).exp() * 0.398_942_280_401_432_7
}

/// The logistic function, evaluated so that `exp` never overflows.
#[inline]
fn sigmoid<E: Float>(x: E) -> E {
    if x >= E::zero() {
        E::one() / (E::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (E::one() + e)
    }
}

impl<E: Float> Tensor<E> {
    /// `-x`.
    pub fn neg(&self) -> Self {
        self.map_sync(|x| -x)
    }

    /// `|x|`.
    pub fn abs(&self) -> Self {
        self.map_sync(|x| x.abs())
    }

    /// `e^x`.
    pub fn exp(&self) -> Self {
        self.map_sync(|x| x.exp())
    }

    /// The natural logarithm (NaN below 0, `-inf` at 0).
    pub fn log(&self) -> Self {
        self.map_sync(|x| x.ln())
    }

    /// `ln(1 + x)`, accurate for small `x`.
    pub fn log1p(&self) -> Self {
        self.map_sync(|x| x.ln_1p())
    }

    /// `e^x - 1`, accurate for small `x`.
    pub fn expm1(&self) -> Self {
        self.map_sync(|x| x.exp_m1())
    }

    /// The square root (NaN below 0).
    pub fn sqrt(&self) -> Self {
        self.map_sync(|x| x.sqrt())
    }

    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Self {
        self.map_sync(|x| x.sqrt().recip())
    }

    /// The sine (radians).
    pub fn sin(&self) -> Self {
        self.map_sync(|x| x.sin())
    }

    /// The cosine (radians).
    pub fn cos(&self) -> Self {
        self.map_sync(|x| x.cos())
    }

    /// The tangent (radians).
    pub fn tan(&self) -> Self {
        self.map_sync(|x| x.tan())
    }

    /// The hyperbolic tangent.
    pub fn tanh(&self) -> Self {
        self.map_sync(|x| x.tanh())
    }

    /// The logistic function `1 / (1 + e^-x)`, finite and exact at both tails.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let s = Tensor::from_vec(vec![-1000.0f32, 0.0, 1000.0], &[3]).sigmoid();
    /// assert_eq!(s.to_vec(), vec![0.0, 0.5, 1.0]);
    /// ```
    pub fn sigmoid(&self) -> Self {
        self.map_sync(sigmoid)
    }

    /// `max(x, 0)`; NaN stays NaN.
    pub fn relu(&self) -> Self {
        self.map_sync(|x| if x < E::zero() { E::zero() } else { x })
    }

    /// The exact GELU `x * Φ(x) = x/2 * (1 + erf(x / √2))`, PyTorch's default.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let g = Tensor::from_vec(vec![-1.0f64, 0.0, 1.0], &[3]).gelu();
    /// let want = [-0.15865525393145707, 0.0, 0.8413447460685429];
    /// assert!(g.to_vec().iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-15));
    /// ```
    ///
    /// f32 goes through a branch-free rational `erf` (a few ulp from libm's, and the loop
    /// vectorises); f64 through libm.
    pub fn gelu(&self) -> Self {
        match E::DTYPE {
            DType::F32 => self.map_sync(|x| E::from_f64(gelu_f32(x.to_f64() as f32) as f64)),
            _ => {
                let half = E::from_f64(0.5);
                self.map_sync(|x| half * x * (E::one() + erf(x * E::FRAC_1_SQRT_2())))
            }
        }
    }

    /// The gradient of [`gelu`](Self::gelu) at `self` times `grad`: `grad * (Φ(x) + x φ(x))`, in
    /// one pass (f32 through branch-free `erf` and `exp` that vectorise, f64 through libm).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![0.0f64, 1.0], &[2]);
    /// let g = x.gelu_backward(&Tensor::from_vec(vec![2.0, 1.0], &[2]));
    /// assert!((g.to_vec()[0] - 1.0).abs() < 1e-15); // 2 * Φ(0)
    /// assert!((g.to_vec()[1] - 1.0833154705876864).abs() < 1e-15);
    /// ```
    ///
    /// # Panics
    /// If `grad` does not have the shape of `self`.
    #[track_caller]
    pub fn gelu_backward(&self, grad: &Tensor<E>) -> Self {
        assert_eq!(self.shape(), grad.shape(), "gelu_backward: input {:?} and grad {:?}", self.shape(), grad.shape());
        match E::DTYPE {
            DType::F32 => grad.zip_map_sync(self, "gelu_backward", |g, x| {
                E::from_f64((g.to_f64() as f32 * gelu_grad_f32(x.to_f64() as f32)) as f64)
            }),
            _ => grad.zip_map(self, "gelu_backward", |g, x| g * E::from_f64(gelu_grad_f64(x.to_f64()))),
        }
    }

    /// [`gelu_backward`](Self::gelu_backward) given also the forward's output `out`, which must
    /// be `self.gelu()`: in f32, `Φ(x)` is then `out / x`, so the pass computes one exponential
    /// per element and no `erf` (its gradient pass took half again the time of this one). The
    /// values agree with `gelu_backward`'s to a few ulp. f64, other layouts and broadcast
    /// shapes take `gelu_backward`.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![-1.5f32, 0.0, 0.7, 3.0], &[4]);
    /// let g = Tensor::from_vec(vec![1.0f32, 2.0, -1.0, 0.5], &[4]);
    /// let fast = x.gelu_backward_with_output(&x.gelu(), &g).to_vec();
    /// let plain = x.gelu_backward(&g).to_vec();
    /// assert!(fast.iter().zip(&plain).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0)));
    /// ```
    ///
    /// # Panics
    /// If `out` or `grad` does not have the shape of `self`.
    #[track_caller]
    pub fn gelu_backward_with_output(&self, out: &Tensor<E>, grad: &Tensor<E>) -> Self {
        assert!(
            self.shape() == out.shape() && self.shape() == grad.shape(),
            "gelu_backward_with_output: input {:?}, output {:?} and grad {:?}",
            self.shape(),
            out.shape(),
            grad.shape()
        );
        let (DType::F32, Some(xs), Some(ys), Some(gs)) = (E::DTYPE, self.as_slice(), out.as_slice(), grad.as_slice())
        else {
            return self.gelu_backward(grad);
        };
        let f = |g: E, x: E, y: E| {
            E::from_f64((g.to_f64() as f32 * gelu_grad_from_output_f32(x.to_f64() as f32, y.to_f64() as f32)) as f64)
        };
        let len = xs.len();
        let threads = threads_for(len, elementwise_min_per_thread());
        let d = collect_with(len, |dst| {
            let parts = unit_chunks(dst, len, 1, parts_for(threads, len));
            parallel_for_each(parts, &|(r, d)| zip3_into((&gs[r.clone()], &xs[r.clone()], &ys[r]), d, &f));
        });
        Tensor::from_vec(d, self.shape())
    }

    /// The tanh approximation of GELU (PyTorch's `approximate="tanh"`).
    pub fn gelu_tanh(&self) -> Self {
        let (half, k, c) = (E::from_f64(0.5), E::from_f64((2.0 / std::f64::consts::PI).sqrt()), E::from_f64(0.044715));
        self.map_sync(|x| half * x * (E::one() + (k * (x + c * x * x * x)).tanh()))
    }

    /// SiLU (swish): `x * sigmoid(x)`.
    pub fn silu(&self) -> Self {
        self.map_sync(|x| x * sigmoid(x))
    }

    /// `ln(1 + e^x)`, computed as `max(x, 0) + ln(1 + e^-|x|)` so it never overflows.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let s = Tensor::from_vec(vec![-1000.0f32, 1000.0], &[2]).softplus();
    /// assert_eq!(s.to_vec(), vec![0.0, 1000.0]);
    /// ```
    pub fn softplus(&self) -> Self {
        self.map_sync(|x| {
            let pos = if x > E::zero() { x } else { E::zero() };
            pos + (-x.abs()).exp().ln_1p()
        })
    }

    /// `x * x`.
    pub fn square(&self) -> Self {
        self.map_sync(|x| x * x)
    }

    /// `1 / x`.
    pub fn recip(&self) -> Self {
        self.map_sync(|x| x.recip())
    }

    /// -1, 0 or 1 by the sign of `x` (0 for ±0, NaN for NaN).
    pub fn sign(&self) -> Self {
        self.map_sync(|x| {
            if x > E::zero() {
                E::one()
            } else if x < E::zero() {
                -E::one()
            } else if x.is_nan() {
                x
            } else {
                E::zero()
            }
        })
    }

    /// Rounds down to an integer.
    pub fn floor(&self) -> Self {
        self.map_sync(|x| x.floor())
    }

    /// Rounds up to an integer.
    pub fn ceil(&self) -> Self {
        self.map_sync(|x| x.ceil())
    }

    /// Rounds to the nearest integer, halves to even (like `torch.round`, unlike `f32::round`).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let r = Tensor::from_vec(vec![0.5f32, 1.5, 2.5, -2.5, 2.6], &[5]).round();
    /// assert_eq!(r.to_vec(), vec![0.0, 2.0, 2.0, -2.0, 3.0]);
    /// ```
    pub fn round(&self) -> Self {
        // Both element types convert to f64 and back exactly, and f64 has a ties-to-even round.
        self.map_sync(|x| E::from_f64(x.to_f64().round_ties_even()))
    }

    /// `x^p` for a scalar exponent `p`.
    pub fn powf(&self, p: E) -> Self {
        self.map_sync(|x| x.powf(p))
    }

    /// `x^n` for an integer exponent `n` (by repeated multiplication, faster than `powf`).
    pub fn powi(&self, n: i32) -> Self {
        self.map_sync(|x| x.powi(n))
    }

    /// `x` if positive, else `slope * x`.
    pub fn leaky_relu(&self, slope: E) -> Self {
        self.map_sync(|x| if x > E::zero() { x } else { slope * x })
    }

    /// `x` if positive, else `alpha * (e^x - 1)`.
    pub fn elu(&self, alpha: E) -> Self {
        self.map_sync(|x| if x > E::zero() { x } else { alpha * x.exp_m1() })
    }

    /// Which elements are NaN.
    pub fn is_nan(&self) -> Tensor<bool> {
        self.map_sync(|x| x.is_nan())
    }

    /// Which elements are neither infinite nor NaN.
    pub fn is_finite(&self) -> Tensor<bool> {
        self.map_sync(|x| x.is_finite())
    }
}

impl<E: Num> Tensor<E> {
    /// Limits every element to `[lo, hi]` (NaN stays NaN; if `lo > hi` every element becomes
    /// `hi`, as in PyTorch).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let c = Tensor::from_vec(vec![-5i32, 0, 5], &[3]).clamp(-1, 1);
    /// assert_eq!(c.to_vec(), vec![-1, 0, 1]);
    /// ```
    pub fn clamp(&self, lo: E, hi: E) -> Self {
        self.map_sync(|x| clamp(x, lo, hi))
    }
}

/// The scalar clamp shared by `clamp` and `clamp_`: comparisons with NaN are false, so NaN passes.
#[inline]
pub(crate) fn clamp<E: Num>(x: E, lo: E, hi: E) -> E {
    let x = if x < lo { lo } else { x };
    if x > hi {
        hi
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 97th f32 in `[-lim, lim]` (a dense sweep that still takes milliseconds).
    fn sweep(lim: f32) -> impl Iterator<Item = f32> {
        let top = lim.to_bits();
        (0..top).step_by(97).flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
    }

    #[test]
    fn erf_f32_is_within_a_few_ulp_of_libm() {
        for x in sweep(6.0) {
            let (got, want) = (erf_f32(x) as f64, libm::erf(x as f64));
            // relative to the value, with an absolute floor for the odd function near 0
            let tol = 4.0 * f32::EPSILON as f64 * want.abs().max(1e-30);
            assert!((got - want).abs() <= tol.max(1e-44), "erf_f32({x}) = {got}, libm {want}");
        }
        assert_eq!((erf_f32(10.0), erf_f32(-10.0), erf_f32(0.0)), (1.0, -1.0, 0.0));
    }

    #[test]
    fn exp_f32_is_within_a_few_ulp_of_std() {
        for x in sweep(87.0).filter(|x| *x < 88.3) {
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            assert!((got - want).abs() <= 3.0 * f32::EPSILON as f64 * want, "exp_f32({x}) = {got}, want {want}");
        }
        assert!(exp_f32(-1000.0) >= 0.0 && exp_f32(-1000.0) < 1e-37);
        assert!(exp_f32(1000.0).is_finite());
    }

    #[test]
    fn gelu_f32_paths_match_the_f64_reference() {
        let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 2.5e-3).collect();
        let t = Tensor::from_vec(xs.clone(), &[xs.len()]);
        let g = Tensor::from_vec(xs.iter().map(|&x| 1.0 - 0.1 * x).collect(), &[xs.len()]);
        for ((&x, y), d) in xs.iter().zip(t.gelu().to_vec()).zip(t.gelu_backward(&g).to_vec()) {
            let v = x as f64;
            let want = 0.5 * v * (1.0 + libm::erf(v * std::f64::consts::FRAC_1_SQRT_2));
            // f32's `1 + erf` cancels for negative x, as in PyTorch: an absolute floor of 1e-6
            assert!((y as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "gelu({x}) = {y}, want {want}");
            let want_d = (1.0 - 0.1 * v as f32) as f64 * gelu_grad_f64(v);
            assert!((d as f64 - want_d).abs() <= 2e-6 * want_d.abs().max(1.0), "gelu' at {x}: {d} vs {want_d}");
        }
    }

    #[test]
    fn gelu_backward_from_the_output_matches_the_f64_reference() {
        // A dense sweep of [-8, 8] (both sides of the |x| = 5.6 switch), tiny and huge values.
        let mut xs: Vec<f32> = (-8000..=8000).map(|i| i as f32 * 1e-3).collect();
        xs.extend([1e-21, -1e-21, 3e-20, -3e-20, 1e-30, f32::MIN_POSITIVE, 1e-39, 5.6, -5.6, 5.61, -5.61, 40.0, -40.0]);
        let t = Tensor::from_vec(xs.clone(), &[xs.len()]);
        let g = Tensor::from_vec(xs.iter().map(|&x| 1.0 - 0.1 * x.clamp(-8.0, 8.0)).collect(), &[xs.len()]);
        let got = t.gelu_backward_with_output(&t.gelu(), &g).to_vec();
        for ((&x, &d), gv) in xs.iter().zip(&got).zip(g.to_vec()) {
            let want = gv as f64 * gelu_grad_f64(x as f64);
            assert!((d as f64 - want).abs() <= 2e-6 * want.abs().max(1.0), "gelu' at {x}: {d} vs {want}");
        }
        // Where the quotient is replaced, the bits of `gelu_backward`: 0, infinities, NaN.
        let special = Tensor::from_vec(vec![0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 7.0, -7.0], &[7]);
        let ones = Tensor::ones(&[7]);
        let (fast, plain) =
            (special.gelu_backward_with_output(&special.gelu(), &ones).to_vec(), special.gelu_backward(&ones).to_vec());
        for (a, b) in fast.iter().zip(&plain) {
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{fast:?} vs {plain:?}");
        }
        // Other layouts and f64 take `gelu_backward` itself.
        let m = Tensor::from_vec(xs[..120].to_vec(), &[10, 12]).t();
        let gm = Tensor::from_vec((0..120).map(|i| i as f32 * 0.01).collect(), &[12, 10]);
        assert_eq!(m.gelu_backward_with_output(&m.gelu(), &gm).to_vec(), m.gelu_backward(&gm).to_vec());
        let d = Tensor::from_vec(vec![-1.0f64, 0.5, 2.0], &[3]);
        assert_eq!(d.gelu_backward_with_output(&d.gelu(), &d).to_vec(), d.gelu_backward(&d).to_vec());
    }

    #[test]
    #[should_panic(expected = "gelu_backward_with_output: input [3], output [2] and grad [3]")]
    fn gelu_backward_with_output_names_the_shapes() {
        let x = Tensor::<f32>::ones(&[3]);
        x.gelu_backward_with_output(&Tensor::ones(&[2]), &x);
    }
}
