//! Elementwise functions and activations. Each op is its forward on tensors and its derivative
//! written with `Var` ops of the input `x` and, where cheaper, of the output `y`.

use std::ops::Range;

use ferrograd_tensor::{elementwise_min_per_thread, parallel_collect, Float, Tensor};
use smallvec::smallvec;

use super::arith::positive;
use super::mask;
use crate::var::BackwardCtx;
use crate::Var;

fn c<F: Float>(v: f64) -> F {
    F::from(v).expect("constant fits the float type")
}

impl<F: Float> Var<F> {
    /// An elementwise op whose gradient is `g * d(x, y)`, with the derivative given twice: as
    /// `Var` ops (`d`), which `create_graph` records for higher orders, and as a scalar
    /// function (`ds`), which a plain backward fuses into one pass over `g`, `x` and `y`.
    #[track_caller]
    fn unary(
        &self,
        op: &'static str,
        out: Tensor<F>,
        d: impl Fn(&Var<F>, &Var<F>) -> Var<F> + Send + Sync + 'static,
        ds: impl Fn(F, F) -> F + Send + Sync + 'static,
    ) -> Var<F> {
        let x = self.clone();
        let saved = out.clone();
        Var::record(op, out, &[self], move |ctx: &BackwardCtx<'_, F>, g| {
            if ctx.create_graph() {
                return smallvec![Some(g.mul(&d(&x, &ctx.output(&saved))))];
            }
            let grad = match (g.data.as_slice(), x.data.as_slice(), saved.as_slice()) {
                // Large gradients are split over threads (bit-identical: elementwise).
                (Some(gs), Some(xs), Some(ys)) => Tensor::from_vec(
                    parallel_collect(gs.len(), elementwise_min_per_thread(), &|r: Range<usize>| {
                        gs[r.clone()].iter().zip(&xs[r.clone()]).zip(&ys[r]).map(|((&g, &x), &y)| g * ds(x, y))
                    }),
                    saved.shape(),
                ),
                _ => Tensor::mul(&g.data, &x.data.zip_map(&saved, op, &ds)),
            };
            smallvec![Some(Var::constant(grad))]
        })
    }

    /// `e^x`.
    #[track_caller]
    pub fn exp(&self) -> Var<F> {
        self.unary("exp", self.data.exp(), |_, y| y.clone(), |_, y| y)
    }

    /// Natural logarithm.
    #[track_caller]
    pub fn log(&self) -> Var<F> {
        self.unary("log", self.data.log(), |x, _| x.recip(), |x, _| x.recip())
    }

    /// `ln(1 + x)`, accurate near 0.
    #[track_caller]
    pub fn log1p(&self) -> Var<F> {
        self.unary("log1p", self.data.log1p(), |x, _| x.add_scalar(F::one()).recip(), |x, _| (x + F::one()).recip())
    }

    /// `e^x - 1`, accurate near 0.
    #[track_caller]
    pub fn expm1(&self) -> Var<F> {
        self.unary("expm1", self.data.expm1(), |_, y| y.add_scalar(F::one()), |_, y| y + F::one())
    }

    /// Square root.
    #[track_caller]
    pub fn sqrt(&self) -> Var<F> {
        self.unary("sqrt", self.data.sqrt(), |_, y| y.recip().mul_scalar(c(0.5)), |_, y| c::<F>(0.5) / y)
    }

    /// `1 / sqrt(x)`.
    #[track_caller]
    pub fn rsqrt(&self) -> Var<F> {
        self.unary("rsqrt", self.data.rsqrt(), |_, y| y.powi(3).mul_scalar(c(-0.5)), |_, y| c::<F>(-0.5) * y * y * y)
    }

    /// Sine.
    #[track_caller]
    pub fn sin(&self) -> Var<F> {
        self.unary("sin", self.data.sin(), |x, _| x.cos(), |x, _| x.cos())
    }

    /// Cosine.
    #[track_caller]
    pub fn cos(&self) -> Var<F> {
        self.unary("cos", self.data.cos(), |x, _| x.sin().neg(), |x, _| -x.sin())
    }

    /// Tangent.
    #[track_caller]
    pub fn tan(&self) -> Var<F> {
        self.unary("tan", self.data.tan(), |_, y| y.square().add_scalar(F::one()), |_, y| F::one() + y * y)
    }

    /// Hyperbolic tangent.
    #[track_caller]
    pub fn tanh(&self) -> Var<F> {
        self.unary("tanh", self.data.tanh(), |_, y| y.square().rsub_scalar(F::one()), |_, y| F::one() - y * y)
    }

    /// The logistic function `1 / (1 + e^-x)`.
    #[track_caller]
    pub fn sigmoid(&self) -> Var<F> {
        self.unary("sigmoid", self.data.sigmoid(), |_, y| y.mul(&y.rsub_scalar(F::one())), |_, y| y * (F::one() - y))
    }

    /// `max(x, 0)`; the gradient at 0 is 0, as in PyTorch.
    #[track_caller]
    pub fn relu(&self) -> Var<F> {
        self.unary(
            "relu",
            self.data.relu(),
            |x, _| positive(x),
            |x, _| if x > F::zero() { F::one() } else { F::zero() },
        )
    }

    /// `x` for positive `x`, `slope * x` otherwise.
    #[track_caller]
    pub fn leaky_relu(&self, slope: F) -> Var<F> {
        self.unary(
            "leaky_relu",
            self.data.leaky_relu(slope),
            move |x, _| Var::constant(x.data.map(|v| if v > F::zero() { F::one() } else { slope })),
            move |x, _| if x > F::zero() { F::one() } else { slope },
        )
    }

    /// `x` for positive `x`, `alpha * (e^x - 1)` otherwise.
    #[track_caller]
    pub fn elu(&self, alpha: F) -> Var<F> {
        self.unary(
            "elu",
            self.data.elu(alpha),
            move |x, y| {
                let p = positive(x);
                p.add(&p.rsub_scalar(F::one()).mul(&y.add_scalar(alpha)))
            },
            move |x, y| if x > F::zero() { F::one() } else { y + alpha },
        )
    }

    /// The Gauss error function (differentiable, used by exact GELU).
    #[track_caller]
    pub fn erf(&self) -> Var<F> {
        let out = self.data.map(|v| F::from(libm::erf(v.to_f64())).expect("erf fits"));
        self.unary(
            "erf",
            out,
            |x, _| x.square().neg().exp().mul_scalar(c(std::f64::consts::FRAC_2_SQRT_PI)),
            |x, _| c::<F>(std::f64::consts::FRAC_2_SQRT_PI) * (-x * x).exp(),
        )
    }

    /// Exact GELU, `x * Φ(x)`, PyTorch's default.
    #[track_caller]
    pub fn gelu(&self) -> Var<F> {
        let x = self.clone();
        let out = self.data.gelu();
        let saved = out.clone();
        Var::record("gelu", out, &[self], move |ctx: &BackwardCtx<'_, F>, g| {
            if ctx.create_graph() {
                // d/dx x Φ(x) = Φ(x) + x φ(x), in Var ops so it differentiates again.
                let cdf =
                    x.mul_scalar(c(std::f64::consts::FRAC_1_SQRT_2)).erf().add_scalar(F::one()).mul_scalar(c(0.5));
                let pdf = x.square().mul_scalar(c(-0.5)).exp().mul_scalar(c(0.398_942_280_401_432_7));
                return smallvec![Some(g.mul(&cdf.add(&x.mul(&pdf))))];
            }
            // Φ(x) from the saved output (no erf in f32); `unary`'s ops save theirs the same way.
            smallvec![Some(Var::constant(x.data.gelu_backward_with_output(&saved, &g.data)))]
        })
    }

    /// GELU with the tanh approximation (PyTorch's `approximate="tanh"`).
    #[track_caller]
    pub fn gelu_tanh(&self) -> Var<F> {
        self.unary(
            "gelu_tanh",
            self.data.gelu_tanh(),
            |x, _| {
                let k = c::<F>(0.797_884_560_802_865_4); // sqrt(2 / pi)
                let u = x.add(&x.powi(3).mul_scalar(c(0.044_715))).mul_scalar(k);
                let t = u.tanh();
                let du = x.square().mul_scalar(c(3.0 * 0.044_715)).add_scalar(F::one()).mul_scalar(k);
                let half = c::<F>(0.5);
                t.add_scalar(F::one())
                    .mul_scalar(half)
                    .add(&x.mul(&t.square().rsub_scalar(F::one())).mul(&du).mul_scalar(half))
            },
            |x, _| gelu_tanh_derivative(x),
        )
    }

    /// SiLU (swish), `x * sigmoid(x)`.
    #[track_caller]
    pub fn silu(&self) -> Var<F> {
        self.unary(
            "silu",
            self.data.silu(),
            |x, _| {
                let s = x.sigmoid();
                s.mul(&x.mul(&s.rsub_scalar(F::one())).add_scalar(F::one()))
            },
            |x, _| {
                let s = F::one() / (F::one() + (-x).exp());
                s * (F::one() + x * (F::one() - s))
            },
        )
    }

    /// `ln(1 + e^x)`, computed stably.
    #[track_caller]
    pub fn softplus(&self) -> Var<F> {
        self.unary("softplus", self.data.softplus(), |x, _| x.sigmoid(), |x, _| F::one() / (F::one() + (-x).exp()))
    }

    /// `x²`.
    #[track_caller]
    pub fn square(&self) -> Var<F> {
        self.unary("square", self.data.square(), |x, _| x.mul_scalar(c(2.0)), |x, _| x + x)
    }

    /// `1 / x`.
    #[track_caller]
    pub fn recip(&self) -> Var<F> {
        self.unary("recip", self.data.recip(), |_, y| y.square().neg(), |_, y| -y * y)
    }

    /// `|x|`; the gradient at 0 is 0.
    #[track_caller]
    pub fn abs(&self) -> Var<F> {
        self.unary(
            "abs",
            self.data.abs(),
            |x, _| Var::constant(x.data.sign()),
            |x, _| {
                if x > F::zero() {
                    F::one()
                } else if x < F::zero() {
                    -F::one()
                } else {
                    F::zero()
                }
            },
        )
    }

    /// `x^p` for a constant real power.
    #[track_caller]
    pub fn powf(&self, p: F) -> Var<F> {
        self.unary(
            "powf",
            self.data.powf(p),
            move |x, _| x.powf(p - F::one()).mul_scalar(p),
            move |x, _| p * x.powf(p - F::one()),
        )
    }

    /// `x^n` for a constant integer power.
    #[track_caller]
    pub fn powi(&self, n: i32) -> Var<F> {
        self.unary(
            "powi",
            self.data.powi(n),
            move |x, _| {
                if n == 0 {
                    Var::constant(Tensor::zeros(x.shape()))
                } else {
                    x.powi(n - 1).mul_scalar(c(n as f64))
                }
            },
            move |x, _| if n == 0 { F::zero() } else { c::<F>(n as f64) * x.powi(n - 1) },
        )
    }

    /// Clamps into `[lo, hi]`; the gradient flows where `lo <= x <= hi`, as in PyTorch.
    #[track_caller]
    pub fn clamp(&self, lo: F, hi: F) -> Var<F> {
        self.unary(
            "clamp",
            self.data.clamp(lo, hi),
            move |x, _| mask(&x.data.ge_scalar(lo).logical_and(&x.data.le_scalar(hi))),
            move |x, _| if x >= lo && x <= hi { F::one() } else { F::zero() },
        )
    }

    /// The sign (-1, 0 or 1); its gradient is zero.
    #[track_caller]
    pub fn sign(&self) -> Var<F> {
        self.unary("sign", self.data.sign(), |x, _| Var::constant(Tensor::zeros(x.shape())), |_, _| F::zero())
    }

    /// Rounds down; its gradient is zero.
    #[track_caller]
    pub fn floor(&self) -> Var<F> {
        self.unary("floor", self.data.floor(), |x, _| Var::constant(Tensor::zeros(x.shape())), |_, _| F::zero())
    }

    /// Rounds up; its gradient is zero.
    #[track_caller]
    pub fn ceil(&self) -> Var<F> {
        self.unary("ceil", self.data.ceil(), |x, _| Var::constant(Tensor::zeros(x.shape())), |_, _| F::zero())
    }

    /// Rounds to the nearest integer; its gradient is zero.
    #[track_caller]
    pub fn round(&self) -> Var<F> {
        self.unary("round", self.data.round(), |x, _| Var::constant(Tensor::zeros(x.shape())), |_, _| F::zero())
    }
}

/// d/dx of the tanh approximation of GELU.
fn gelu_tanh_derivative<F: Float>(x: F) -> F {
    let v = x.to_f64();
    let k = 0.797_884_560_802_865_4;
    let t = (k * (v + 0.044_715 * v * v * v)).tanh();
    c(0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044_715 * v * v))
}
