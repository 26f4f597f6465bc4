//! Arithmetic with NumPy broadcasting: `+ - * /`, powers, maximum/minimum and scalar forms.
//! Gradients of broadcast operands are summed back to their shapes with `sum_to`.

use std::ops::{Add, Div, Mul, Neg, Sub};

use ferrograd_tensor::{Float, Shape, Tensor};
use smallvec::smallvec;

use super::mask;
use crate::Var;

fn shape_of<F: Float>(v: &Var<F>) -> Shape {
    Shape::from_slice(v.shape())
}

impl<F: Float> Var<F> {
    /// `self + other` with broadcasting.
    #[track_caller]
    pub fn add(&self, other: &Var<F>) -> Var<F> {
        let (sa, sb) = (shape_of(self), shape_of(other));
        Var::record("add", Tensor::add(&self.data, &other.data), &[self, other], move |ctx, g| {
            smallvec![ctx.needs_input_grad(0).then(|| g.sum_to(&sa)), ctx.needs_input_grad(1).then(|| g.sum_to(&sb))]
        })
    }

    /// `self - other` with broadcasting.
    #[track_caller]
    pub fn sub(&self, other: &Var<F>) -> Var<F> {
        let (sa, sb) = (shape_of(self), shape_of(other));
        Var::record("sub", Tensor::sub(&self.data, &other.data), &[self, other], move |ctx, g| {
            smallvec![
                ctx.needs_input_grad(0).then(|| g.sum_to(&sa)),
                ctx.needs_input_grad(1).then(|| g.neg().sum_to(&sb))
            ]
        })
    }

    /// `self * other` (elementwise) with broadcasting.
    #[track_caller]
    pub fn mul(&self, other: &Var<F>) -> Var<F> {
        let (a, b) = (self.clone(), other.clone());
        Var::record("mul", Tensor::mul(&self.data, &other.data), &[self, other], move |ctx, g| {
            smallvec![
                ctx.needs_input_grad(0).then(|| g.mul(&b).sum_to(a.shape())),
                ctx.needs_input_grad(1).then(|| g.mul(&a).sum_to(b.shape()))
            ]
        })
    }

    /// `self / other` (elementwise) with broadcasting.
    #[track_caller]
    pub fn div(&self, other: &Var<F>) -> Var<F> {
        let (a, b) = (self.clone(), other.clone());
        Var::record("div", Tensor::div(&self.data, &other.data), &[self, other], move |ctx, g| {
            let ga = g.div(&b);
            let gb = ctx.needs_input_grad(1).then(|| Var::mul(&ga, &a).div(&b).neg().sum_to(b.shape()));
            smallvec![ctx.needs_input_grad(0).then(|| ga.sum_to(a.shape())), gb]
        })
    }

    /// `self ^ exponent` (elementwise) with broadcasting. The gradient with respect to the
    /// exponent uses `ln(self)`, so it is only finite for positive bases.
    #[track_caller]
    pub fn pow(&self, exponent: &Var<F>) -> Var<F> {
        let (a, b) = (self.clone(), exponent.clone());
        let out = self.data.pow(&exponent.data);
        let saved = out.clone();
        Var::record("pow", out, &[self, exponent], move |ctx, g| {
            let ga = ctx.needs_input_grad(0).then(|| g.mul(&b).mul(&a.pow(&b.sub_scalar(F::one()))).sum_to(a.shape()));
            let gb = ctx.needs_input_grad(1).then(|| g.mul(&ctx.output(&saved)).mul(&a.log()).sum_to(b.shape()));
            smallvec![ga, gb]
        })
    }

    /// Elementwise maximum with broadcasting; on ties the gradient is split evenly, as PyTorch does.
    #[track_caller]
    pub fn maximum(&self, other: &Var<F>) -> Var<F> {
        self.extremum("maximum", other, self.data.maximum(&other.data), true)
    }

    /// Elementwise minimum with broadcasting; on ties the gradient is split evenly.
    #[track_caller]
    pub fn minimum(&self, other: &Var<F>) -> Var<F> {
        self.extremum("minimum", other, self.data.minimum(&other.data), false)
    }

    #[track_caller]
    fn extremum(&self, op: &'static str, other: &Var<F>, out: Tensor<F>, max: bool) -> Var<F> {
        let (a, b) = (self.clone(), other.clone());
        Var::record(op, out, &[self, other], move |ctx, g| {
            let half = F::from(0.5).expect("0.5 fits every float");
            let wins = if max { a.data.gt(&b.data) } else { a.data.lt(&b.data) };
            let ties = a.data.eq(&b.data);
            let share_a = wins.zip_map(&ties, op, |w, t| {
                if w {
                    F::one()
                } else if t {
                    half
                } else {
                    F::zero()
                }
            });
            let share_a = Var::constant(share_a);
            let ga = ctx.needs_input_grad(0).then(|| g.mul(&share_a).sum_to(a.shape()));
            let gb = ctx.needs_input_grad(1).then(|| g.mul(&share_a.rsub_scalar(F::one())).sum_to(b.shape()));
            smallvec![ga, gb]
        })
    }

    /// `-self`.
    #[track_caller]
    pub fn neg(&self) -> Var<F> {
        Var::record("neg", Tensor::neg(&self.data), &[self], |_, g| smallvec![Some(g.neg())])
    }

    /// `self + s`.
    #[track_caller]
    pub fn add_scalar(&self, s: F) -> Var<F> {
        Var::record("add_scalar", self.data.add_scalar(s), &[self], |_, g| smallvec![Some(g.clone())])
    }

    /// `self - s`.
    #[track_caller]
    pub fn sub_scalar(&self, s: F) -> Var<F> {
        Var::record("sub_scalar", self.data.sub_scalar(s), &[self], |_, g| smallvec![Some(g.clone())])
    }

    /// `s - self`.
    #[track_caller]
    pub fn rsub_scalar(&self, s: F) -> Var<F> {
        Var::record("rsub_scalar", self.data.rsub_scalar(s), &[self], |_, g| smallvec![Some(g.neg())])
    }

    /// `self * s`.
    #[track_caller]
    pub fn mul_scalar(&self, s: F) -> Var<F> {
        Var::record("mul_scalar", self.data.mul_scalar(s), &[self], move |_, g| smallvec![Some(g.mul_scalar(s))])
    }

    /// `self / s`.
    #[track_caller]
    pub fn div_scalar(&self, s: F) -> Var<F> {
        Var::record("div_scalar", self.data.div_scalar(s), &[self], move |_, g| smallvec![Some(g.div_scalar(s))])
    }

    /// `s / self`.
    #[track_caller]
    pub fn rdiv_scalar(&self, s: F) -> Var<F> {
        self.recip().mul_scalar(s)
    }
}

/// A constant 0/1 mask of where `x > 0`, shared by relu-like ops.
pub(crate) fn positive<F: Float>(x: &Var<F>) -> Var<F> {
    mask(&x.data.gt_scalar(F::zero()))
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident) => {
        impl<F: Float> $trait<&Var<F>> for &Var<F> {
            type Output = Var<F>;
            #[track_caller]
            fn $method(self, rhs: &Var<F>) -> Var<F> {
                Var::$method(self, rhs)
            }
        }
        impl<F: Float> $trait<Var<F>> for Var<F> {
            type Output = Var<F>;
            #[track_caller]
            fn $method(self, rhs: Var<F>) -> Var<F> {
                Var::$method(&self, &rhs)
            }
        }
        impl<F: Float> $trait<&Var<F>> for Var<F> {
            type Output = Var<F>;
            #[track_caller]
            fn $method(self, rhs: &Var<F>) -> Var<F> {
                Var::$method(&self, rhs)
            }
        }
        impl<F: Float> $trait<Var<F>> for &Var<F> {
            type Output = Var<F>;
            #[track_caller]
            fn $method(self, rhs: Var<F>) -> Var<F> {
                Var::$method(self, &rhs)
            }
        }
    };
}
binary_operator!(Add, add);
binary_operator!(Sub, sub);
binary_operator!(Mul, mul);
binary_operator!(Div, div);

macro_rules! scalar_operator {
    ($trait:ident, $method:ident, $scalar:ident) => {
        impl<F: Float> $trait<F> for &Var<F> {
            type Output = Var<F>;
            #[track_caller]
            fn $method(self, rhs: F) -> Var<F> {
                self.$scalar(rhs)
            }
        }
        impl<F: Float> $trait<F> for Var<F> {
            type Output = Var<F>;
            #[track_caller]
            fn $method(self, rhs: F) -> Var<F> {
                self.$scalar(rhs)
            }
        }
    };
}
scalar_operator!(Add, add, add_scalar);
scalar_operator!(Sub, sub, sub_scalar);
scalar_operator!(Mul, mul, mul_scalar);
scalar_operator!(Div, div, div_scalar);

macro_rules! scalar_lhs_operator {
    ($f:ty) => {
        impl Add<&Var<$f>> for $f {
            type Output = Var<$f>;
            #[track_caller]
            fn add(self, rhs: &Var<$f>) -> Var<$f> {
                rhs.add_scalar(self)
            }
        }
        impl Sub<&Var<$f>> for $f {
            type Output = Var<$f>;
            #[track_caller]
            fn sub(self, rhs: &Var<$f>) -> Var<$f> {
                rhs.rsub_scalar(self)
            }
        }
        impl Mul<&Var<$f>> for $f {
            type Output = Var<$f>;
            #[track_caller]
            fn mul(self, rhs: &Var<$f>) -> Var<$f> {
                rhs.mul_scalar(self)
            }
        }
        impl Div<&Var<$f>> for $f {
            type Output = Var<$f>;
            #[track_caller]
            fn div(self, rhs: &Var<$f>) -> Var<$f> {
                rhs.rdiv_scalar(self)
            }
        }
    };
}
scalar_lhs_operator!(f32);
scalar_lhs_operator!(f64);

impl<F: Float> Neg for &Var<F> {
    type Output = Var<F>;
    #[track_caller]
    fn neg(self) -> Var<F> {
        Var::neg(self)
    }
}

impl<F: Float> Neg for Var<F> {
    type Output = Var<F>;
    #[track_caller]
    fn neg(self) -> Var<F> {
        Var::neg(&self)
    }
}
