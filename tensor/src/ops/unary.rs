//! Elementwise unary ops: arithmetic, transcendental functions and activations.
//!
//! Each op is a scalar function handed to [`Tensor::map`], which walks a contiguous tensor as one
//! slice (so the compiler can vectorise the loop) and any other layout run by run. Results are
//! always new contiguous tensors; the in-place variants live in `binary.rs` next to the other
//! copy-on-write writers. Activations follow PyTorch's definitions, including its edge cases.

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
        self.map(|x| -x)
    }

    /// `|x|`.
    pub fn abs(&self) -> Self {
        self.map(|x| x.abs())
    }

    /// `e^x`.
    pub fn exp(&self) -> Self {
        self.map(|x| x.exp())
    }

    /// The natural logarithm (NaN below 0, `-inf` at 0).
    pub fn log(&self) -> Self {
        self.map(|x| x.ln())
    }

    /// `ln(1 + x)`, accurate for small `x`.
    pub fn log1p(&self) -> Self {
        self.map(|x| x.ln_1p())
    }

    /// `e^x - 1`, accurate for small `x`.
    pub fn expm1(&self) -> Self {
        self.map(|x| x.exp_m1())
    }

    /// The square root (NaN below 0).
    pub fn sqrt(&self) -> Self {
        self.map(|x| x.sqrt())
    }

    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Self {
        self.map(|x| x.sqrt().recip())
    }

    /// The sine (radians).
    pub fn sin(&self) -> Self {
        self.map(|x| x.sin())
    }

    /// The cosine (radians).
    pub fn cos(&self) -> Self {
        self.map(|x| x.cos())
    }

    /// The tangent (radians).
    pub fn tan(&self) -> Self {
        self.map(|x| x.tan())
    }

    /// The hyperbolic tangent.
    pub fn tanh(&self) -> Self {
        self.map(|x| x.tanh())
    }

    /// The logistic function `1 / (1 + e^-x)`, finite and exact at both tails.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let s = Tensor::from_vec(vec![-1000.0f32, 0.0, 1000.0], &[3]).sigmoid();
    /// assert_eq!(s.to_vec(), vec![0.0, 0.5, 1.0]);
    /// ```
    pub fn sigmoid(&self) -> Self {
        self.map(sigmoid)
    }

    /// `max(x, 0)`; NaN stays NaN.
    pub fn relu(&self) -> Self {
        self.map(|x| if x < E::zero() { E::zero() } else { x })
    }

    /// The exact GELU `x * Φ(x) = x/2 * (1 + erf(x / √2))`, PyTorch's default.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let g = Tensor::from_vec(vec![-1.0f64, 0.0, 1.0], &[3]).gelu();
    /// let want = [-0.15865525393145707, 0.0, 0.8413447460685429];
    /// assert!(g.to_vec().iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-15));
    /// ```
    pub fn gelu(&self) -> Self {
        let half = E::from_f64(0.5);
        self.map(|x| half * x * (E::one() + erf(x * E::FRAC_1_SQRT_2())))
    }

    /// The tanh approximation of GELU (PyTorch's `approximate="tanh"`).
    pub fn gelu_tanh(&self) -> Self {
        let (half, k, c) = (E::from_f64(0.5), E::from_f64((2.0 / std::f64::consts::PI).sqrt()), E::from_f64(0.044715));
        self.map(|x| half * x * (E::one() + (k * (x + c * x * x * x)).tanh()))
    }

    /// SiLU (swish): `x * sigmoid(x)`.
    pub fn silu(&self) -> Self {
        self.map(|x| x * sigmoid(x))
    }

    /// `ln(1 + e^x)`, computed as `max(x, 0) + ln(1 + e^-|x|)` so it never overflows.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let s = Tensor::from_vec(vec![-1000.0f32, 1000.0], &[2]).softplus();
    /// assert_eq!(s.to_vec(), vec![0.0, 1000.0]);
    /// ```
    pub fn softplus(&self) -> Self {
        self.map(|x| {
            let pos = if x > E::zero() { x } else { E::zero() };
            pos + (-x.abs()).exp().ln_1p()
        })
    }

    /// `x * x`.
    pub fn square(&self) -> Self {
        self.map(|x| x * x)
    }

    /// `1 / x`.
    pub fn recip(&self) -> Self {
        self.map(|x| x.recip())
    }

    /// -1, 0 or 1 by the sign of `x` (0 for ±0, NaN for NaN).
    pub fn sign(&self) -> Self {
        self.map(|x| {
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
        self.map(|x| x.floor())
    }

    /// Rounds up to an integer.
    pub fn ceil(&self) -> Self {
        self.map(|x| x.ceil())
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
        self.map(|x| E::from_f64(x.to_f64().round_ties_even()))
    }

    /// `x^p` for a scalar exponent `p`.
    pub fn powf(&self, p: E) -> Self {
        self.map(|x| x.powf(p))
    }

    /// `x^n` for an integer exponent `n` (by repeated multiplication, faster than `powf`).
    pub fn powi(&self, n: i32) -> Self {
        self.map(|x| x.powi(n))
    }

    /// `x` if positive, else `slope * x`.
    pub fn leaky_relu(&self, slope: E) -> Self {
        self.map(|x| if x > E::zero() { x } else { slope * x })
    }

    /// `x` if positive, else `alpha * (e^x - 1)`.
    pub fn elu(&self, alpha: E) -> Self {
        self.map(|x| if x > E::zero() { x } else { alpha * x.exp_m1() })
    }

    /// Which elements are NaN.
    pub fn is_nan(&self) -> Tensor<bool> {
        self.map(|x| x.is_nan())
    }

    /// Which elements are neither infinite nor NaN.
    pub fn is_finite(&self) -> Tensor<bool> {
        self.map(|x| x.is_finite())
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
        self.map(|x| clamp(x, lo, hi))
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
