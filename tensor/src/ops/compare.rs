//! Comparisons, boolean logic and selection: the ops that produce or consume `Tensor<bool>`
//! masks, plus the closeness checks tests and users compare results with.
//!
//! Comparisons broadcast like the arithmetic ops (through [`Tensor::zip_map`]) and follow IEEE
//! semantics: every comparison with NaN is false except `ne`. [`Tensor::where_`] broadcasts all
//! three operands together in one strided pass.

use crate::element::{Element, Float, Num};
use crate::iter::for_each_run;
use crate::layout::{broadcast_shapes, Layout};
use crate::tensor::Tensor;

impl<E: Num> Tensor<E> {
    /// `self == other` elementwise, broadcast.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1, 2, 3, 4], &[2, 2]);
    /// let b = Tensor::from_vec(vec![1, 4], &[2]);
    /// assert_eq!(a.eq(&b).to_vec(), vec![true, false, false, true]);
    /// ```
    #[track_caller]
    pub fn eq(&self, other: &Tensor<E>) -> Tensor<bool> {
        self.zip_map(other, "eq", |a, b| a == b)
    }

    /// `self != other` elementwise, broadcast (true where either side is NaN).
    #[track_caller]
    pub fn ne(&self, other: &Tensor<E>) -> Tensor<bool> {
        self.zip_map(other, "ne", |a, b| a != b)
    }

    /// `self < other` elementwise, broadcast.
    #[track_caller]
    pub fn lt(&self, other: &Tensor<E>) -> Tensor<bool> {
        self.zip_map(other, "lt", |a, b| a < b)
    }

    /// `self <= other` elementwise, broadcast.
    #[track_caller]
    pub fn le(&self, other: &Tensor<E>) -> Tensor<bool> {
        self.zip_map(other, "le", |a, b| a <= b)
    }

    /// `self > other` elementwise, broadcast.
    #[track_caller]
    pub fn gt(&self, other: &Tensor<E>) -> Tensor<bool> {
        self.zip_map(other, "gt", |a, b| a > b)
    }

    /// `self >= other` elementwise, broadcast.
    #[track_caller]
    pub fn ge(&self, other: &Tensor<E>) -> Tensor<bool> {
        self.zip_map(other, "ge", |a, b| a >= b)
    }

    /// `x == s` elementwise.
    pub fn eq_scalar(&self, s: E) -> Tensor<bool> {
        self.map(|x| x == s)
    }

    /// `x != s` elementwise.
    pub fn ne_scalar(&self, s: E) -> Tensor<bool> {
        self.map(|x| x != s)
    }

    /// `x < s` elementwise.
    pub fn lt_scalar(&self, s: E) -> Tensor<bool> {
        self.map(|x| x < s)
    }

    /// `x <= s` elementwise.
    pub fn le_scalar(&self, s: E) -> Tensor<bool> {
        self.map(|x| x <= s)
    }

    /// `x > s` elementwise.
    pub fn gt_scalar(&self, s: E) -> Tensor<bool> {
        self.map(|x| x > s)
    }

    /// `x >= s` elementwise.
    pub fn ge_scalar(&self, s: E) -> Tensor<bool> {
        self.map(|x| x >= s)
    }
}

impl<E: Element> Tensor<E> {
    /// Picks `a` where `cond` is true and `b` elsewhere, all three broadcast together
    /// (`torch.where(cond, a, b)`).
    ///
    /// # Panics
    /// If the three shapes do not broadcast together; the message names `where_` and all three.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![-1.0f32, 2.0, -3.0], &[3]);
    /// let y = Tensor::where_(&x.gt_scalar(0.0), &x, &Tensor::scalar(0.0));
    /// assert_eq!(y.to_vec(), vec![0.0, 2.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn where_(cond: &Tensor<bool>, a: &Tensor<E>, b: &Tensor<E>) -> Tensor<E> {
        let Some(shape) = broadcast_shapes(cond.shape(), a.shape()).and_then(|s| broadcast_shapes(&s, b.shape()))
        else {
            panic!(
                "where_: condition shape {:?} and shapes {:?} and {:?} cannot be broadcast together",
                cond.shape(),
                a.shape(),
                b.shape()
            )
        };
        let sc = cond.layout.broadcast_strides(&shape).expect("broadcast checked");
        let sa = a.layout.broadcast_strides(&shape).expect("broadcast checked");
        let sb = b.layout.broadcast_strides(&shape).expect("broadcast checked");
        let mut out = Vec::with_capacity(shape.iter().product());
        let (dc, da, db) = (&cond.storage, &a.storage, &b.storage);
        for_each_run(
            &shape,
            [&sc, &sa, &sb],
            [cond.offset(), a.offset(), b.offset()],
            |[bc, ba, bb], len, [ic, ia, ib]| {
                if (ic, ia, ib) == (1, 1, 1) {
                    let runs = dc[bc..bc + len].iter().zip(&da[ba..ba + len]).zip(&db[bb..bb + len]);
                    out.extend(runs.map(|((&c, &x), &y)| if c { x } else { y }));
                } else {
                    let (mut oc, mut oa, mut ob) = (bc as isize, ba as isize, bb as isize);
                    for _ in 0..len {
                        out.push(if dc[oc as usize] { da[oa as usize] } else { db[ob as usize] });
                        oc += ic;
                        oa += ia;
                        ob += ib;
                    }
                }
            },
        );
        Tensor::from_storage(out, Layout::contiguous(&shape))
    }
}

impl Tensor<bool> {
    /// Elementwise AND, broadcast.
    #[track_caller]
    pub fn logical_and(&self, other: &Tensor<bool>) -> Tensor<bool> {
        self.zip_map(other, "logical_and", |a, b| a & b)
    }

    /// Elementwise OR, broadcast.
    #[track_caller]
    pub fn logical_or(&self, other: &Tensor<bool>) -> Tensor<bool> {
        self.zip_map(other, "logical_or", |a, b| a | b)
    }

    /// Elementwise XOR, broadcast.
    #[track_caller]
    pub fn logical_xor(&self, other: &Tensor<bool>) -> Tensor<bool> {
        self.zip_map(other, "logical_xor", |a, b| a ^ b)
    }

    /// Elementwise NOT.
    pub fn logical_not(&self) -> Tensor<bool> {
        self.map(|a| !a)
    }

    /// Whether any element is true (false for an empty tensor).
    pub fn any(&self) -> bool {
        self.any_is(true)
    }

    /// Whether every element is true (true for an empty tensor).
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]);
    /// assert!(x.gt_scalar(0.0).all());
    /// assert!(!x.gt_scalar(1.0).all());
    /// ```
    pub fn all(&self) -> bool {
        !self.any_is(false)
    }

    /// Whether any element equals `v`.
    fn any_is(&self, v: bool) -> bool {
        if let Some(s) = self.as_slice() {
            return s.contains(&v);
        }
        let mut found = false;
        let st = &self.storage;
        for_each_run(self.shape(), [self.strides()], [self.offset()], |[b], len, [s]| {
            found = found || (0..len as isize).any(|i| st[(b as isize + i * s) as usize] == v);
        });
        found
    }
}

/// Calls `f` on every pair of elements of `a` and `b` broadcast together, in row-major order.
#[track_caller]
fn for_each_pair<A: Element, B: Element>(a: &Tensor<A>, b: &Tensor<B>, op: &str, mut f: impl FnMut(A, B)) {
    let Some(shape) = broadcast_shapes(a.shape(), b.shape()) else {
        panic!("{op}: shapes {:?} and {:?} cannot be broadcast together", a.shape(), b.shape())
    };
    let sa = a.layout.broadcast_strides(&shape).expect("broadcast checked");
    let sb = b.layout.broadcast_strides(&shape).expect("broadcast checked");
    let (da, db) = (&a.storage, &b.storage);
    for_each_run(&shape, [&sa, &sb], [a.offset(), b.offset()], |[ba, bb], len, [ia, ib]| {
        let (mut oa, mut ob) = (ba as isize, bb as isize);
        for _ in 0..len {
            f(da[oa as usize], db[ob as usize]);
            oa += ia;
            ob += ib;
        }
    });
}

impl<E: Float> Tensor<E> {
    /// Whether every pair of elements, broadcast, satisfies `|a - b| <= atol + rtol * |b|`
    /// (`torch.allclose`): NaN is never close, infinities only to themselves.
    ///
    /// # Panics
    /// If the shapes do not broadcast; the message names `allclose` and both shapes.
    ///
    /// ```
    /// use ferrograd_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f64, 100.0], &[2]);
    /// let b = Tensor::from_vec(vec![1.0 + 1e-9, 100.0 + 1e-6], &[2]);
    /// assert!(a.allclose(&b, 1e-7, 1e-8));
    /// assert!(!a.allclose(&b, 0.0, 1e-8));
    /// ```
    #[track_caller]
    pub fn allclose(&self, other: &Tensor<E>, rtol: E, atol: E) -> bool {
        let mut close = true;
        for_each_pair(self, other, "allclose", |a, b| {
            close &= a == b || (a.is_finite() && b.is_finite() && (a - b).abs() <= atol + rtol * b.abs());
        });
        close
    }

    /// The largest `|a - b|` over the broadcast pairs: 0 for equal elements (equal infinities
    /// included) and for empty tensors, NaN if any pair involves NaN.
    ///
    /// # Panics
    /// If the shapes do not broadcast; the message names `max_abs_diff` and both shapes.
    #[track_caller]
    pub fn max_abs_diff(&self, other: &Tensor<E>) -> E {
        let mut worst = E::zero();
        for_each_pair(self, other, "max_abs_diff", |a, b| {
            // The guard keeps equal infinities at 0 (inf - inf is NaN); NaN != NaN still counts.
            if a != b {
                worst = worst.max_nan((a - b).abs());
            }
        });
        worst
    }
}
