//! Element types a tensor can hold, and the numeric capabilities kernels need from them.
//!
//! Three levels, from weakest to strongest: every [`Element`] can be stored, copied, cast and
//! compared for equality; a [`Num`] supports arithmetic, ordering and reductions; a [`Float`]
//! adds transcendental functions, GEMM and everything differentiable.

use std::fmt::{Debug, Display};

/// The runtime tag of an element type, used in error messages and file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
    /// Signed 8-bit integer (quantized data).
    I8,
    /// Unsigned 8-bit integer (images, quantized data).
    U8,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer (indices).
    I64,
    /// Boolean (masks).
    Bool,
}

impl DType {
    /// The size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }
}

impl Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        };
        f.write_str(s)
    }
}

/// Anything a tensor can store.
///
/// Conversions go through `f64`, which represents every value of every element type exactly
/// except `i64` beyond 2^53; [`Tensor::cast`](crate::Tensor::cast) saturates like Rust's `as`.
pub trait Element: Copy + Debug + Default + PartialEq + Send + Sync + 'static {
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// Convert to `f64` (booleans become 0 or 1).
    fn to_f64(self) -> f64;
    /// Convert from `f64` with Rust's saturating `as` semantics (non-zero is `true` for bool).
    fn from_f64(v: f64) -> Self;
}

/// An element with arithmetic and a total-enough order: the integers and the floats.
pub trait Num:
    Element
    + PartialOrd
    + num_traits::Num
    + num_traits::NumCast
    + num_traits::Bounded
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::ops::DivAssign
    + Display
{
    /// The larger of two values; NaN wins, as in PyTorch's `maximum`.
    fn max_nan(self, other: Self) -> Self;
    /// The smaller of two values; NaN wins, as in PyTorch's `minimum`.
    fn min_nan(self, other: Self) -> Self;
    /// Whether this value is NaN (always false for integers).
    fn is_nan_val(self) -> bool;
}

/// A floating-point element: f32 or f64. Everything differentiable is defined over these.
pub trait Float: Num + num_traits::Float + num_traits::FloatConst + std::ops::Neg<Output = Self> {
    /// General matrix multiply `C = alpha * A B + beta * C` over strided operands.
    ///
    /// # Safety
    /// The pointers with their strides must address valid `m x k`, `k x n` and `m x n`
    /// matrices, and `c` must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

macro_rules! impl_element {
    ($t:ty, $dt:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$dt;
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    };
}
impl_element!(f32, F32);
impl_element!(f64, F64);
impl_element!(i8, I8);
impl_element!(u8, U8);
impl_element!(i32, I32);
impl_element!(i64, I64);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    #[inline]
    fn to_f64(self) -> f64 {
        if self {
            1.0
        } else {
            0.0
        }
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
}

macro_rules! impl_num_int {
    ($t:ty) => {
        impl Num for $t {
            #[inline]
            fn max_nan(self, other: Self) -> Self {
                if other > self {
                    other
                } else {
                    self
                }
            }
            #[inline]
            fn min_nan(self, other: Self) -> Self {
                if other < self {
                    other
                } else {
                    self
                }
            }
            #[inline]
            fn is_nan_val(self) -> bool {
                false
            }
        }
    };
}
impl_num_int!(i8);
impl_num_int!(u8);
impl_num_int!(i32);
impl_num_int!(i64);

macro_rules! impl_num_float {
    ($t:ty) => {
        impl Num for $t {
            #[inline]
            fn max_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    <$t>::NAN
                } else if other > self {
                    other
                } else {
                    self
                }
            }
            #[inline]
            fn min_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    <$t>::NAN
                } else if other < self {
                    other
                } else {
                    self
                }
            }
            #[inline]
            fn is_nan_val(self) -> bool {
                self.is_nan()
            }
        }
    };
}
impl_num_float!(f32);
impl_num_float!(f64);

impl Float for f32 {
    #[inline]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded verbatim; the caller upholds matrixmultiply's contract.
        unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

impl Float for f64 {
    #[inline]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded verbatim; the caller upholds matrixmultiply's contract.
        unsafe { matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

/// `s` as a slice of `T` when `E` is `T` (a kernel written for `f32` called from code generic
/// over the element type).
pub(crate) fn retype_ref<E: 'static, T: 'static>(s: &[E]) -> Option<&[T]> {
    // SAFETY: `E` and `T` are the same type (same `TypeId`), so this is `s` itself.
    (std::any::TypeId::of::<E>() == std::any::TypeId::of::<T>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
}

/// `s` as a mutable slice of `T` when `E` is `T`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn retype<E: 'static, T: 'static>(s: &mut [E]) -> Option<&mut [T]> {
    // SAFETY: `E` and `T` are the same type (same `TypeId`), so this is `s` itself, still
    // borrowed uniquely.
    (std::any::TypeId::of::<E>() == std::any::TypeId::of::<T>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
}
