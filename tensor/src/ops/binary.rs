//! Elementwise binary arithmetic: broadcasting methods, scalar variants, the operator traits and
//! the in-place (`_`-suffixed) writers.
//!
//! Out-of-place ops go through [`Tensor::zip_map`] (NumPy broadcasting, contiguous fast path,
//! inner broadcast as a stride-0 run) or [`Tensor::map`] for a scalar operand. In-place ops go
//! through [`Tensor::zip_inplace`] and [`Tensor::map_inplace`], which copy the storage first if
//! anything else shares it, so a write never shows through another tensor or view.
//!
//! Operators taking a tensor by value reuse its buffer when nothing else shares it and the result
//! has its shape, so chains like `x * 0.9 + &g` allocate once.
//!
//! Integer arithmetic follows Rust's rules: division truncates toward zero (PyTorch would
//! promote to float), division by zero panics, and overflow panics in debug builds.

use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};
use std::sync::Arc;

use crate::element::{Element, Float, Num};
use crate::layout::broadcast_shapes;
use crate::ops::unary::clamp;
use crate::tensor::Tensor;

impl<E: Num> Tensor<E> {
    /// `self + other`, broadcast.
    ///
    /// # Panics
    /// If the shapes do not broadcast; the message names `add` and both shapes.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    /// let b = Tensor::from_vec(vec![10.0f32, 20.0, 30.0], &[3]);
    /// assert_eq!(a.add(&b).to_vec(), vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    /// assert_eq!((&a + &b), a.add(&b));
    /// ```
    #[track_caller]
    pub fn add(&self, other: &Tensor<E>) -> Self {
        self.zip_map_sync(other, "add", |a, b| a + b)
    }

    /// `self - other`, broadcast.
    #[track_caller]
    pub fn sub(&self, other: &Tensor<E>) -> Self {
        self.zip_map_sync(other, "sub", |a, b| a - b)
    }

    /// `self * other`, broadcast.
    #[track_caller]
    pub fn mul(&self, other: &Tensor<E>) -> Self {
        self.zip_map_sync(other, "mul", |a, b| a * b)
    }

    /// `self / other`, broadcast (integers truncate toward zero).
    #[track_caller]
    pub fn div(&self, other: &Tensor<E>) -> Self {
        self.zip_map_sync(other, "div", |a, b| a / b)
    }

    /// The elementwise larger value, broadcast; NaN wins, as in `torch.maximum`.
    #[track_caller]
    pub fn maximum(&self, other: &Tensor<E>) -> Self {
        self.zip_map(other, "maximum", E::max_nan)
    }

    /// The elementwise smaller value, broadcast; NaN wins, as in `torch.minimum`.
    #[track_caller]
    pub fn minimum(&self, other: &Tensor<E>) -> Self {
        self.zip_map(other, "minimum", E::min_nan)
    }

    /// `x + s`.
    pub fn add_scalar(&self, s: E) -> Self {
        self.map(|x| x + s)
    }

    /// `x - s`.
    pub fn sub_scalar(&self, s: E) -> Self {
        self.map(|x| x - s)
    }

    /// `x * s`.
    pub fn mul_scalar(&self, s: E) -> Self {
        self.map(|x| x * s)
    }

    /// `x / s`.
    pub fn div_scalar(&self, s: E) -> Self {
        self.map(|x| x / s)
    }

    /// `s - x` (PyTorch's `rsub`).
    pub fn rsub_scalar(&self, s: E) -> Self {
        self.map(|x| s - x)
    }

    /// `self += other` in place, `other` broadcast to `self`'s shape (copy-on-write).
    ///
    /// # Panics
    /// If `other` does not broadcast to `self`'s shape, or `self` is a broadcast view.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
    /// let mut b = a.clone(); // shares storage with `a`
    /// b.add_(&Tensor::scalar(1.0));
    /// assert_eq!(b.to_vec(), vec![2.0, 3.0]);
    /// assert_eq!(a.to_vec(), vec![1.0, 2.0]); // the write copied first
    /// ```
    #[track_caller]
    pub fn add_(&mut self, other: &Tensor<E>) {
        self.zip_inplace(other, "add_", |a, b| a + b);
    }

    /// `self -= other` in place, `other` broadcast to `self`'s shape (copy-on-write).
    #[track_caller]
    pub fn sub_(&mut self, other: &Tensor<E>) {
        self.zip_inplace(other, "sub_", |a, b| a - b);
    }

    /// `self *= other` in place, `other` broadcast to `self`'s shape (copy-on-write).
    #[track_caller]
    pub fn mul_(&mut self, other: &Tensor<E>) {
        self.zip_inplace(other, "mul_", |a, b| a * b);
    }

    /// `self /= other` in place, `other` broadcast to `self`'s shape (copy-on-write).
    #[track_caller]
    pub fn div_(&mut self, other: &Tensor<E>) {
        self.zip_inplace(other, "div_", |a, b| a / b);
    }

    /// `x += s` in place (copy-on-write).
    #[track_caller]
    pub fn add_scalar_(&mut self, s: E) {
        self.map_inplace("add_scalar_", |x| x + s);
    }

    /// `x *= s` in place (copy-on-write).
    #[track_caller]
    pub fn mul_scalar_(&mut self, s: E) {
        self.map_inplace("mul_scalar_", |x| x * s);
    }

    /// `self += alpha * other` in place, `other` broadcast (PyTorch's `add_(other, alpha=...)`,
    /// the core of most optimizer steps).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let mut w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
    /// let g = Tensor::from_vec(vec![10.0f32, 20.0], &[2]);
    /// w.add_scaled_(&g, -0.1);
    /// assert_eq!(w.to_vec(), vec![0.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn add_scaled_(&mut self, other: &Tensor<E>, alpha: E) {
        self.zip_inplace(other, "add_scaled_", |a, b| a + alpha * b);
    }

    /// Sets every element to `v` in place (copy-on-write).
    #[track_caller]
    pub fn fill_(&mut self, v: E) {
        self.map_inplace("fill_", |_| v);
    }

    /// Limits every element to `[lo, hi]` in place, like [`Tensor::clamp`] (copy-on-write).
    #[track_caller]
    pub fn clamp_(&mut self, lo: E, hi: E) {
        self.map_inplace("clamp_", |x| clamp(x, lo, hi));
    }
}

impl<E: Float> Tensor<E> {
    /// `self ^ exponent`, broadcast (NaN for a negative base with a non-integer exponent).
    #[track_caller]
    pub fn pow(&self, exponent: &Tensor<E>) -> Self {
        self.zip_map(exponent, "pow", |x, p| x.powf(p))
    }
}

impl<E: Element> Tensor<E> {
    /// Whether an op combining `self` with an operand of `other_shape` may write its result over
    /// `self`'s storage: nothing else holds the storage, it is exactly `self`'s elements in
    /// row-major order, and the result has `self`'s shape.
    fn reusable_for(&mut self, other_shape: &[usize]) -> bool {
        self.is_contiguous()
            && self.storage.len() == self.numel()
            && Arc::get_mut(&mut self.storage).is_some()
            && broadcast_shapes(self.shape(), other_shape).is_some_and(|s| s.as_slice() == self.shape())
    }
}

/// Implements an arithmetic operator for the four tensor/tensor ownership combinations and for
/// a scalar right-hand side, reusing an owned operand's buffer where [`Tensor::reusable_for`]
/// allows.
macro_rules! binary_operator {
    ($trait:ident, $method:ident, $name:literal, |$a:ident, $b:ident| $body:expr) => {
        impl<E: Num> $trait<&Tensor<E>> for &Tensor<E> {
            type Output = Tensor<E>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<E>) -> Tensor<E> {
                self.zip_map(rhs, $name, |$a: E, $b: E| $body)
            }
        }

        impl<E: Num> $trait<&Tensor<E>> for Tensor<E> {
            type Output = Tensor<E>;
            #[track_caller]
            fn $method(mut self, rhs: &Tensor<E>) -> Tensor<E> {
                if self.reusable_for(rhs.shape()) {
                    self.zip_inplace(rhs, $name, |$a: E, $b: E| $body);
                    self
                } else {
                    self.zip_map(rhs, $name, |$a: E, $b: E| $body)
                }
            }
        }

        impl<E: Num> $trait<Tensor<E>> for &Tensor<E> {
            type Output = Tensor<E>;
            #[track_caller]
            fn $method(self, mut rhs: Tensor<E>) -> Tensor<E> {
                if rhs.reusable_for(self.shape()) {
                    rhs.zip_inplace(self, $name, |$b: E, $a: E| $body);
                    rhs
                } else {
                    self.zip_map(&rhs, $name, |$a: E, $b: E| $body)
                }
            }
        }

        impl<E: Num> $trait<Tensor<E>> for Tensor<E> {
            type Output = Tensor<E>;
            #[track_caller]
            fn $method(self, rhs: Tensor<E>) -> Tensor<E> {
                // Try the left buffer first; the borrowed-left impl then tries the right one.
                let mut lhs = self;
                if lhs.reusable_for(rhs.shape()) {
                    $trait::$method(lhs, &rhs)
                } else {
                    $trait::$method(&lhs, rhs)
                }
            }
        }

        impl<E: Num> $trait<E> for &Tensor<E> {
            type Output = Tensor<E>;
            fn $method(self, $b: E) -> Tensor<E> {
                self.map(|$a: E| $body)
            }
        }

        impl<E: Num> $trait<E> for Tensor<E> {
            type Output = Tensor<E>;
            fn $method(mut self, $b: E) -> Tensor<E> {
                if self.reusable_for(&[]) {
                    self.map_inplace($name, |$a: E| $body);
                    self
                } else {
                    self.map(|$a: E| $body)
                }
            }
        }
    };
}

binary_operator!(Add, add, "add", |a, b| a + b);
binary_operator!(Sub, sub, "sub", |a, b| a - b);
binary_operator!(Mul, mul, "mul", |a, b| a * b);
binary_operator!(Div, div, "div", |a, b| a / b);

impl<E: Float> Neg for &Tensor<E> {
    type Output = Tensor<E>;
    fn neg(self) -> Tensor<E> {
        Tensor::neg(self)
    }
}

impl<E: Float> Neg for Tensor<E> {
    type Output = Tensor<E>;
    fn neg(mut self) -> Tensor<E> {
        if self.reusable_for(&[]) {
            self.map_inplace("neg", |x| -x);
            self
        } else {
            Tensor::neg(&self)
        }
    }
}

/// Implements a compound assignment operator with a tensor (broadcast to the target's shape) and
/// with a scalar, both in place with copy-on-write.
macro_rules! assign_operator {
    ($trait:ident, $method:ident, $name:literal, |$a:ident, $b:ident| $body:expr) => {
        impl<E: Num> $trait<&Tensor<E>> for Tensor<E> {
            #[track_caller]
            fn $method(&mut self, rhs: &Tensor<E>) {
                self.zip_inplace(rhs, $name, |$a: E, $b: E| $body);
            }
        }

        impl<E: Num> $trait<E> for Tensor<E> {
            #[track_caller]
            fn $method(&mut self, $b: E) {
                self.map_inplace($name, |$a: E| $body);
            }
        }
    };
}

assign_operator!(AddAssign, add_assign, "add_assign", |a, b| a + b);
assign_operator!(SubAssign, sub_assign, "sub_assign", |a, b| a - b);
assign_operator!(MulAssign, mul_assign, "mul_assign", |a, b| a * b);
assign_operator!(DivAssign, div_assign, "div_assign", |a, b| a / b);
