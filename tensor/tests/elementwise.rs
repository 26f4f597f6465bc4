//! Elementwise unary, binary, comparison and selection ops against plain references.
//!
//! Every reference reads the inputs through `to_vec()` (row-major), broadcasts by index
//! arithmetic, and computes in f64; results are rounded to the element type before comparing, so
//! overflow and NaN land where the kernel's own arithmetic puts them. Inputs come in every layout
//! the `testing` strategies make (permuted, stepped, flipped, broadcast), and owned operands are
//! made fresh so the buffer-reusing operator paths run too.

use ferrograd_tensor::testing::{any_distinct_layout, any_layout, broadcastable_shapes, shape, tensor};
use ferrograd_tensor::{DType, Element, Float, Num, Tensor};
use proptest::prelude::*;

// ---------------------------------------------------------------- reference machinery

/// A tensor's shape and row-major values as f64.
type Plain = (Vec<usize>, Vec<f64>);

fn plain<E: Element>(t: &Tensor<E>) -> Plain {
    (t.shape().to_vec(), t.to_vec().into_iter().map(Element::to_f64).collect())
}

/// NumPy's broadcast shape, written out independently of the crate's.
fn broadcast_shape(shapes: &[&[usize]]) -> Vec<usize> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    (0..rank)
        .map(|d| {
            let sizes: Vec<usize> =
                shapes.iter().map(|s| if d + s.len() < rank { 1 } else { s[d + s.len() - rank] }).collect();
            let out = sizes.iter().copied().max().unwrap();
            assert!(sizes.iter().all(|&n| n == 1 || n == out), "test bug: {shapes:?} do not broadcast");
            out
        })
        .collect()
}

/// `f` applied to the broadcast inputs, element by element in row-major order of the output.
fn reference(inputs: &[Plain], f: impl Fn(&[f64]) -> f64) -> Plain {
    let shapes: Vec<&[usize]> = inputs.iter().map(|(s, _)| s.as_slice()).collect();
    let out = broadcast_shape(&shapes);
    let n: usize = out.iter().product();
    let mut idx = vec![0; out.len()];
    let mut args = vec![0.0; inputs.len()];
    let mut values = Vec::with_capacity(n);
    for i in 0..n {
        let mut rest = i;
        for d in (0..out.len()).rev() {
            idx[d] = rest % out[d];
            rest /= out[d];
        }
        for (arg, (shape, data)) in args.iter_mut().zip(inputs) {
            let lead = out.len() - shape.len();
            let flat = shape
                .iter()
                .enumerate()
                .fold(0, |acc, (d, &size)| acc * size + if size == 1 { 0 } else { idx[lead + d] });
            *arg = data[flat];
        }
        values.push(f(&args));
    }
    (out, values)
}

fn unary_ref(t: &Plain, f: impl Fn(f64) -> f64) -> Plain {
    reference(std::slice::from_ref(t), |x| f(x[0]))
}

fn binary_ref(a: &Plain, b: &Plain, f: impl Fn(f64, f64) -> f64) -> Plain {
    reference(&[a.clone(), b.clone()], |x| f(x[0], x[1]))
}

fn bool_f64(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Relative-plus-absolute tolerance for the element type: exact for integers and bools.
fn tol<E: Element>() -> f64 {
    match E::DTYPE {
        DType::F32 => 1e-5,
        DType::F64 => 1e-12,
        _ => 0.0,
    }
}

/// `got` has the reference's shape and values (NaN where the reference is NaN).
fn check_values<E: Element>(op: &str, got: &Tensor<E>, want: &Plain) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.0.as_slice(), "{}: shape", op);
    let tol = tol::<E>();
    for (i, (g, w)) in got.to_vec().into_iter().zip(&want.1).enumerate() {
        let (g, w) = (g.to_f64(), E::from_f64(*w).to_f64());
        let ok = if w.is_nan() {
            g.is_nan()
        } else if tol == 0.0 || w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tol * (1.0 + w.abs())
        };
        prop_assert!(ok, "{}: element {} is {}, expected {}", op, i, g, w);
    }
    Ok(())
}

/// Like [`check_values`], for ops that return a new tensor: it must be contiguous.
fn check<E: Element>(op: &str, got: &Tensor<E>, want: &Plain) -> Result<(), TestCaseError> {
    prop_assert!(got.is_contiguous(), "{}: result of shape {:?} is not contiguous", op, got.shape());
    check_values(op, got, want)
}

/// A contiguous copy that shares storage with nothing, so owned operators may reuse it.
fn fresh<E: Element>(t: &Tensor<E>) -> Tensor<E> {
    Tensor::from_vec(t.to_vec(), t.shape())
}

/// `s` with some dims set to 1 and some leading dims dropped: broadcasts to `s`.
fn derived_shape(s: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let rank = s.len();
    (0..=rank, prop::collection::vec(any::<bool>(), rank)).prop_map(move |(drop, ones)| {
        s.iter().zip(&ones).skip(drop).map(|(&d, &one)| if one { 1 } else { d }).collect()
    })
}

/// A boolean mask of `shape` with about half its elements true, contiguous or flipped.
fn mask(shape: Vec<usize>) -> impl Strategy<Value = Tensor<bool>> {
    (any_layout::<f32>(shape), any::<bool>()).prop_map(|(t, flip)| {
        let m = t.gt_scalar(0.0);
        let dims: Vec<isize> = (0..m.rank() as isize).collect();
        if flip {
            m.flip(&dims)
        } else {
            m
        }
    })
}

fn pair<E: Element>() -> impl Strategy<Value = (Tensor<E>, Tensor<E>)> {
    broadcastable_shapes(4, 4).prop_flat_map(|(a, b)| (any_layout::<E>(a), any_layout::<E>(b)))
}

/// An in-place target (distinct elements, any layout) and an operand that broadcasts to it.
fn target_and_operand<E: Element>() -> impl Strategy<Value = (Tensor<E>, Tensor<E>)> {
    shape(4, 4)
        .prop_flat_map(|s| (Just(s.clone()), derived_shape(s)))
        .prop_flat_map(|(s, o)| (any_distinct_layout::<E>(s), any_layout::<E>(o)))
}

fn scalar<E: Element>() -> impl Strategy<Value = E> {
    (-4.0f64..4.0).prop_map(E::from_f64)
}

// ---------------------------------------------------------------- unary

type Unary<E> = (&'static str, fn(&Tensor<E>) -> Tensor<E>, fn(f64) -> f64);

fn unary<E: Element>(name: &'static str, op: fn(&Tensor<E>) -> Tensor<E>, r: fn(f64) -> f64) -> Unary<E> {
    (name, op, r)
}

fn sigmoid_ref(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn unary_cases<E: Float>() -> Vec<Unary<E>> {
    vec![
        unary("neg", |t| t.neg(), |x| -x),
        unary("-&t", |t| -t, |x| -x),
        unary("-t (fresh)", |t| -fresh(t), |x| -x),
        unary("-t (shared)", |t| -t.clone(), |x| -x),
        unary("abs", |t| t.abs(), f64::abs),
        unary("exp", |t| t.exp(), f64::exp),
        unary("log", |t| t.log(), f64::ln),
        unary("log1p", |t| t.log1p(), f64::ln_1p),
        unary("expm1", |t| t.expm1(), f64::exp_m1),
        unary("sqrt", |t| t.sqrt(), f64::sqrt),
        unary("rsqrt", |t| t.rsqrt(), |x| 1.0 / x.sqrt()),
        unary("sin", |t| t.sin(), f64::sin),
        unary("cos", |t| t.cos(), f64::cos),
        unary("tan", |t| t.tan(), f64::tan),
        unary("tanh", |t| t.tanh(), f64::tanh),
        unary("sigmoid", |t| t.sigmoid(), sigmoid_ref),
        unary("relu", |t| t.relu(), |x| if x > 0.0 { x } else { 0.0 }),
        unary("gelu", |t| t.gelu(), |x| 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt()))),
        unary(
            "gelu_tanh",
            |t| t.gelu_tanh(),
            |x| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()),
        ),
        unary("silu", |t| t.silu(), |x| x * sigmoid_ref(x)),
        unary("softplus", |t| t.softplus(), |x| (1.0 + x.exp()).ln()),
        unary("square", |t| t.square(), |x| x * x),
        unary("recip", |t| t.recip(), |x| 1.0 / x),
        unary(
            "sign",
            |t| t.sign(),
            |x| {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            },
        ),
        unary("floor", |t| t.floor(), f64::floor),
        unary("ceil", |t| t.ceil(), f64::ceil),
        unary("round", |t| t.round(), f64::round_ties_even),
        unary("powf(1.5)", |t| t.powf(E::from_f64(1.5)), |x| x.powf(1.5)),
        unary("powf(-0.5)", |t| t.powf(E::from_f64(-0.5)), |x| x.powf(-0.5)),
        unary("powi(3)", |t| t.powi(3), |x| x * x * x),
        unary("powi(-2)", |t| t.powi(-2), |x| 1.0 / (x * x)),
        unary("clamp", |t| t.clamp(E::from_f64(-1.0), E::from_f64(2.5)), |x| x.clamp(-1.0, 2.5)),
        unary("leaky_relu", |t| t.leaky_relu(E::from_f64(0.1)), |x| if x > 0.0 { x } else { 0.1 * x }),
        unary("elu", |t| t.elu(E::from_f64(1.5)), |x| if x > 0.0 { x } else { 1.5 * (x.exp() - 1.0) }),
    ]
}

fn unary_matches_reference<E: Float>(t: &Tensor<E>) -> Result<(), TestCaseError> {
    let input = plain(t);
    for (name, op, r) in unary_cases::<E>() {
        check(name, &op(t), &unary_ref(&input, r))?;
    }
    // Specials go through a flipped view so the predicates see a strided layout too.
    let special = t.map(|x| match x.to_f64() {
        v if v > 3.0 => E::nan(),
        v if v > 2.0 => E::infinity(),
        v if v < -3.0 => E::neg_infinity(),
        _ => x,
    });
    let dims: Vec<isize> = (0..t.rank() as isize).collect();
    let special = special.flip(&dims);
    let input = plain(&special);
    check("is_nan", &special.is_nan(), &unary_ref(&input, |x| bool_f64(x.is_nan())))?;
    check("is_finite", &special.is_finite(), &unary_ref(&input, |x| bool_f64(x.is_finite())))?;
    Ok(())
}

fn clamp_matches_reference<E: Num>(t: &Tensor<E>) -> Result<(), TestCaseError> {
    let (lo, hi) = (E::from_f64(-1.0), E::from_f64(2.0));
    check("clamp", &t.clamp(lo, hi), &unary_ref(&plain(t), |x| x.clamp(-1.0, 2.0)))?;
    // lo > hi gives hi everywhere, as in PyTorch.
    check("clamp(hi < lo)", &t.clamp(hi, lo), &unary_ref(&plain(t), |_| -1.0))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn unary_ops_match_reference_f32(t in tensor::<f32>(4, 5)) {
        unary_matches_reference(&t)?;
    }

    #[test]
    fn unary_ops_match_reference_f64(t in tensor::<f64>(4, 5)) {
        unary_matches_reference(&t)?;
    }

    #[test]
    fn clamp_matches_reference_ints(a in tensor::<i32>(4, 5), b in tensor::<i64>(4, 5)) {
        clamp_matches_reference(&a)?;
        clamp_matches_reference(&b)?;
    }
}

// ---------------------------------------------------------------- binary

type Binary<E> = (&'static str, fn(&Tensor<E>, &Tensor<E>) -> Tensor<E>, fn(f64, f64) -> f64);

fn binary<E: Element>(
    name: &'static str,
    op: fn(&Tensor<E>, &Tensor<E>) -> Tensor<E>,
    r: fn(f64, f64) -> f64,
) -> Binary<E> {
    (name, op, r)
}

/// The method and every ownership combination of the operator, with fresh (reusable) and
/// shared (not reusable) owned operands.
macro_rules! operator_cases {
    ($method:ident, $op:tt, $r:expr) => {
        [
            binary(stringify!($method), |a, b| a.$method(b), $r),
            binary(concat!("&a ", stringify!($op), " &b"), |a, b| a $op b, $r),
            binary(concat!("a ", stringify!($op), " &b (fresh)"), |a, b| fresh(a) $op b, $r),
            binary(concat!("&a ", stringify!($op), " b (fresh)"), |a, b| a $op fresh(b), $r),
            binary(concat!("a ", stringify!($op), " b (fresh)"), |a, b| fresh(a) $op fresh(b), $r),
            binary(concat!("a ", stringify!($op), " b (shared)"), |a, b| a.clone() $op b.clone(), $r),
        ]
    };
}

/// Cases every `Num` supports without a zero-divisor concern.
fn binary_cases<E: Num>() -> Vec<Binary<E>> {
    let mut cases = vec![];
    cases.extend(operator_cases!(add, +, |x, y| x + y));
    cases.extend(operator_cases!(sub, -, |x, y| x - y));
    cases.extend(operator_cases!(mul, *, |x, y| x * y));
    cases.push(binary("maximum", |a, b| a.maximum(b), f64::max));
    cases.push(binary("minimum", |a, b| a.minimum(b), f64::min));
    cases
}

fn float_binary_cases<E: Float>() -> Vec<Binary<E>> {
    let mut cases = binary_cases::<E>();
    cases.extend(operator_cases!(div, /, |x, y| x / y));
    cases.push(binary("pow", |a, b| a.pow(b), f64::powf));
    cases
}

fn binary_matches_reference<E: Element>(
    a: &Tensor<E>,
    b: &Tensor<E>,
    cases: &[Binary<E>],
) -> Result<(), TestCaseError> {
    let (pa, pb) = (plain(a), plain(b));
    for (name, op, r) in cases {
        check(name, &op(a, b), &binary_ref(&pa, &pb, *r))?;
        // The operands are untouched, whichever buffer the op reused.
        prop_assert_eq!(plain(a), pa.clone(), "{}: changed its left operand", name);
        prop_assert_eq!(plain(b), pb.clone(), "{}: changed its right operand", name);
    }
    Ok(())
}

/// Integer division truncates toward zero; divisors are kept non-zero.
fn int_div_matches_reference<E: Num>(a: &Tensor<E>, b: &Tensor<E>) -> Result<(), TestCaseError> {
    let b = b.map(|x| if x == E::zero() { E::one() } else { x });
    let cases = operator_cases!(div, /, |x: f64, y: f64| (x / y).trunc());
    binary_matches_reference(a, &b, &cases)
}

type Scalar<E> = (&'static str, fn(&Tensor<E>, E) -> Tensor<E>, fn(f64, f64) -> f64);

fn with_scalar<E: Element>(
    name: &'static str,
    op: fn(&Tensor<E>, E) -> Tensor<E>,
    r: fn(f64, f64) -> f64,
) -> Scalar<E> {
    (name, op, r)
}

fn scalar_cases<E: Num>() -> Vec<Scalar<E>> {
    vec![
        with_scalar("add_scalar", |t, s| t.add_scalar(s), |x, s| x + s),
        with_scalar("sub_scalar", |t, s| t.sub_scalar(s), |x, s| x - s),
        with_scalar("mul_scalar", |t, s| t.mul_scalar(s), |x, s| x * s),
        with_scalar("rsub_scalar", |t, s| t.rsub_scalar(s), |x, s| s - x),
        with_scalar("&t + s", |t, s| t + s, |x, s| x + s),
        with_scalar("t - s (fresh)", |t, s| fresh(t) - s, |x, s| x - s),
        with_scalar("t * s (shared)", |t, s| t.clone() * s, |x, s| x * s),
        with_scalar("&t * s", |t, s| t * s, |x, s| x * s),
    ]
}

fn float_scalar_cases<E: Float>() -> Vec<Scalar<E>> {
    let mut cases = scalar_cases::<E>();
    cases.push(with_scalar("div_scalar", |t, s| t.div_scalar(s), |x, s| x / s));
    cases.push(with_scalar("&t / s", |t, s| t / s, |x, s| x / s));
    cases.push(with_scalar("t / s (fresh)", |t, s| fresh(t) / s, |x, s| x / s));
    cases
}

fn scalar_matches_reference<E: Element>(t: &Tensor<E>, s: E, cases: &[Scalar<E>]) -> Result<(), TestCaseError> {
    let input = plain(t);
    for (name, op, r) in cases {
        check(name, &op(t, s), &unary_ref(&input, |x| r(x, s.to_f64())))?;
        prop_assert_eq!(plain(t), input.clone(), "{}: changed its operand", name);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn binary_ops_match_reference_f32((a, b) in pair::<f32>()) {
        binary_matches_reference(&a, &b, &float_binary_cases())?;
    }

    #[test]
    fn binary_ops_match_reference_f64((a, b) in pair::<f64>()) {
        binary_matches_reference(&a, &b, &float_binary_cases())?;
    }

    #[test]
    fn binary_ops_match_reference_i32((a, b) in pair::<i32>()) {
        binary_matches_reference(&a, &b, &binary_cases())?;
        int_div_matches_reference(&a, &b)?;
    }

    #[test]
    fn binary_ops_match_reference_i64((a, b) in pair::<i64>()) {
        binary_matches_reference(&a, &b, &binary_cases())?;
        int_div_matches_reference(&a, &b)?;
    }

    #[test]
    fn scalar_ops_match_reference(
        a in tensor::<f32>(4, 5), sa in scalar::<f32>(),
        b in tensor::<f64>(4, 5), sb in scalar::<f64>(),
        c in tensor::<i32>(4, 5), sc in scalar::<i32>(),
    ) {
        scalar_matches_reference(&a, sa, &float_scalar_cases())?;
        scalar_matches_reference(&b, sb, &float_scalar_cases())?;
        scalar_matches_reference(&c, sc, &scalar_cases())?;
    }
}

// ---------------------------------------------------------------- in place

type InPlace<E> = (&'static str, fn(&mut Tensor<E>, &Tensor<E>), fn(f64, f64) -> f64);

fn in_place<E: Element>(name: &'static str, op: fn(&mut Tensor<E>, &Tensor<E>), r: fn(f64, f64) -> f64) -> InPlace<E> {
    (name, op, r)
}

fn in_place_cases<E: Num>() -> Vec<InPlace<E>> {
    vec![
        in_place("add_", |t, o| t.add_(o), |x, y| x + y),
        in_place("sub_", |t, o| t.sub_(o), |x, y| x - y),
        in_place("mul_", |t, o| t.mul_(o), |x, y| x * y),
        in_place("add_scaled_", |t, o| t.add_scaled_(o, E::from_f64(2.0)), |x, y| x + 2.0 * y),
        in_place("+= &o", |t, o| *t += o, |x, y| x + y),
        in_place("-= &o", |t, o| *t -= o, |x, y| x - y),
        in_place("*= &o", |t, o| *t *= o, |x, y| x * y),
        in_place("add_scalar_", |t, _| t.add_scalar_(E::from_f64(3.0)), |x, _| x + 3.0),
        in_place("mul_scalar_", |t, _| t.mul_scalar_(E::from_f64(-2.0)), |x, _| x * -2.0),
        in_place("+= s", |t, _| *t += E::from_f64(1.0), |x, _| x + 1.0),
        in_place("-= s", |t, _| *t -= E::from_f64(1.0), |x, _| x - 1.0),
        in_place("*= s", |t, _| *t *= E::from_f64(-1.0), |x, _| -x),
        in_place("clamp_", |t, _| t.clamp_(E::from_f64(-3.0), E::from_f64(3.0)), |x, _| x.clamp(-3.0, 3.0)),
        in_place("fill_", |t, _| t.fill_(E::from_f64(2.0)), |_, _| 2.0),
    ]
}

fn float_in_place_cases<E: Float>() -> Vec<InPlace<E>> {
    let mut cases = in_place_cases::<E>();
    cases.push(in_place("div_", |t, o| t.div_(o), |x, y| x / y));
    cases.push(in_place("/= &o", |t, o| *t /= o, |x, y| x / y));
    cases.push(in_place("/= s", |t, _| *t /= E::from_f64(4.0), |x, _| x / 4.0));
    cases
}

/// Runs every case twice on the current value of `t`: on a clone sharing its storage (the
/// write must copy and leave `t` alone), then on `t` itself (the write must not reallocate).
fn in_place_matches_reference<E: Element>(
    mut t: Tensor<E>,
    o: &Tensor<E>,
    cases: &[InPlace<E>],
) -> Result<(), TestCaseError> {
    let po = plain(o);
    for (name, op, r) in cases {
        let before = plain(&t);
        let want = reference(&[before.clone(), po.clone()], |x| r(x[0], x[1]));
        let mut shared = t.clone();
        op(&mut shared, o);
        check_values(name, &shared, &want)?;
        prop_assert!(!shared.shares_storage(&t), "{}: wrote into shared storage", name);
        prop_assert_eq!(plain(&t), before.clone(), "{}: write showed through a clone", name);
        drop(shared);
        let ptr = t.storage().as_ptr();
        op(&mut t, o);
        check_values(name, &t, &want)?;
        prop_assert_eq!(t.storage().as_ptr(), ptr, "{}: reallocated unshared storage", name);
        prop_assert_eq!(plain(o), po.clone(), "{}: changed its operand", name);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn in_place_ops_match_reference_f32((t, o) in target_and_operand::<f32>()) {
        in_place_matches_reference(t, &o, &float_in_place_cases())?;
    }

    #[test]
    fn in_place_ops_match_reference_f64((t, o) in target_and_operand::<f64>()) {
        in_place_matches_reference(t, &o, &float_in_place_cases())?;
    }

    #[test]
    fn in_place_ops_match_reference_i64((t, o) in target_and_operand::<i64>()) {
        in_place_matches_reference(t, &o, &in_place_cases())?;
    }
}

// ---------------------------------------------------------------- comparisons and logic

type Compare<E> = (&'static str, fn(&Tensor<E>, &Tensor<E>) -> Tensor<bool>, fn(f64, f64) -> bool);

fn compare<E: Element>(
    name: &'static str,
    op: fn(&Tensor<E>, &Tensor<E>) -> Tensor<bool>,
    r: fn(f64, f64) -> bool,
) -> Compare<E> {
    (name, op, r)
}

fn compare_cases<E: Num>() -> Vec<Compare<E>> {
    vec![
        compare("eq", |a, b| a.eq(b), |x, y| x == y),
        compare("ne", |a, b| a.ne(b), |x, y| x != y),
        compare("lt", |a, b| a.lt(b), |x, y| x < y),
        compare("le", |a, b| a.le(b), |x, y| x <= y),
        compare("gt", |a, b| a.gt(b), |x, y| x > y),
        compare("ge", |a, b| a.ge(b), |x, y| x >= y),
    ]
}

type CompareScalar<E> = (&'static str, fn(&Tensor<E>, E) -> Tensor<bool>, fn(f64, f64) -> bool);

fn compare_scalar<E: Element>(
    name: &'static str,
    op: fn(&Tensor<E>, E) -> Tensor<bool>,
    r: fn(f64, f64) -> bool,
) -> CompareScalar<E> {
    (name, op, r)
}

fn compare_scalar_cases<E: Num>() -> Vec<CompareScalar<E>> {
    vec![
        compare_scalar("eq_scalar", |a, s| a.eq_scalar(s), |x, s| x == s),
        compare_scalar("ne_scalar", |a, s| a.ne_scalar(s), |x, s| x != s),
        compare_scalar("lt_scalar", |a, s| a.lt_scalar(s), |x, s| x < s),
        compare_scalar("le_scalar", |a, s| a.le_scalar(s), |x, s| x <= s),
        compare_scalar("gt_scalar", |a, s| a.gt_scalar(s), |x, s| x > s),
        compare_scalar("ge_scalar", |a, s| a.ge_scalar(s), |x, s| x >= s),
    ]
}

fn comparisons_match_reference<E: Num>(a: &Tensor<E>, b: &Tensor<E>, s: E) -> Result<(), TestCaseError> {
    let (pa, pb) = (plain(a), plain(b));
    for (name, op, r) in compare_cases::<E>() {
        check(name, &op(a, b), &binary_ref(&pa, &pb, |x, y| bool_f64(r(x, y))))?;
    }
    for (name, op, r) in compare_scalar_cases::<E>() {
        check(name, &op(a, s), &unary_ref(&pa, |x| bool_f64(r(x, s.to_f64()))))?;
    }
    Ok(())
}

/// Three shapes that broadcast together: each derived from one base shape.
fn three_shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<usize>)> {
    shape(4, 4).prop_flat_map(|s| (derived_shape(s.clone()), derived_shape(s.clone()), derived_shape(s)))
}

fn where_matches_reference<E: Element>(c: &Tensor<bool>, a: &Tensor<E>, b: &Tensor<E>) -> Result<(), TestCaseError> {
    let want = reference(&[plain(c), plain(a), plain(b)], |x| if x[0] != 0.0 { x[1] } else { x[2] });
    check("where_", &Tensor::where_(c, a, b), &want)
}

type Logical = (&'static str, fn(&Tensor<bool>, &Tensor<bool>) -> Tensor<bool>, fn(bool, bool) -> bool);

fn logical(
    name: &'static str,
    op: fn(&Tensor<bool>, &Tensor<bool>) -> Tensor<bool>,
    r: fn(bool, bool) -> bool,
) -> Logical {
    (name, op, r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn comparisons_match_reference_f32((a, b) in pair::<f32>(), s in scalar::<f32>()) {
        comparisons_match_reference(&a, &b, s)?;
        // Random floats are rarely equal: a tensor against itself covers equality.
        prop_assert!(a.eq(&a).all() && a.le(&a).all() && a.ge(&a).all());
        prop_assert!(!a.ne(&a).any() && !a.lt(&a).any() && !a.gt(&a).any());
    }

    #[test]
    fn comparisons_match_reference_ints((a, b) in pair::<i32>(), s in scalar::<i32>(), (c, d) in pair::<i64>()) {
        comparisons_match_reference(&a, &b, s)?;
        comparisons_match_reference(&c, &d, 1)?;
    }

    #[test]
    fn where_matches_reference_f32_i64(
        (c, a, b, x, y) in three_shapes().prop_flat_map(|(sc, sa, sb)| (
            mask(sc),
            any_layout::<f32>(sa.clone()),
            any_layout::<f32>(sb.clone()),
            any_layout::<i64>(sa),
            any_layout::<i64>(sb),
        ))
    ) {
        where_matches_reference(&c, &a, &b)?;
        where_matches_reference(&c, &x, &y)?;
    }

    #[test]
    fn logical_ops_match_reference(
        (a, b) in broadcastable_shapes(4, 4).prop_flat_map(|(a, b)| (mask(a), mask(b)))
    ) {
        let (pa, pb) = (plain(&a), plain(&b));
        let cases = [
            logical("logical_and", |a, b| a.logical_and(b), |x, y| x & y),
            logical("logical_or", |a, b| a.logical_or(b), |x, y| x | y),
            logical("logical_xor", |a, b| a.logical_xor(b), |x, y| x ^ y),
        ];
        for (name, op, r) in cases {
            check(name, &op(&a, &b), &binary_ref(&pa, &pb, |x, y| bool_f64(r(x != 0.0, y != 0.0))))?;
        }
        check("logical_not", &a.logical_not(), &unary_ref(&pa, |x| bool_f64(x == 0.0)))?;
        prop_assert_eq!(a.any(), pa.1.iter().any(|&x| x != 0.0));
        prop_assert_eq!(a.all(), pa.1.iter().all(|&x| x != 0.0));
    }

    #[test]
    fn closeness_matches_reference((a, b) in pair::<f64>(), rtol in 0.0f64..1.0, atol in 0.0f64..1.0) {
        let (pa, pb) = (plain(&a), plain(&b));
        let diffs = binary_ref(&pa, &pb, |x, y| (x - y).abs()).1;
        prop_assert_eq!(a.max_abs_diff(&b), diffs.iter().copied().fold(0.0, f64::max));
        let close = binary_ref(&pa, &pb, |x, y| bool_f64((x - y).abs() <= atol + rtol * y.abs())).1;
        prop_assert_eq!(a.allclose(&b, rtol, atol), close.iter().all(|&c| c != 0.0));
        let nudged = a.add_scalar(1e-9);
        prop_assert!(a.allclose(&nudged, 0.0, 2e-9));
        prop_assert!(!a.allclose(&nudged, 0.0, 1e-10));
    }
}

// ---------------------------------------------------------------- edge values

#[test]
fn activations_stay_finite_and_exact_at_the_tails() {
    let x = Tensor::from_vec(vec![-1000.0f64, -100.0, 100.0, 1000.0], &[4]);
    let s = x.sigmoid().to_vec();
    assert_eq!((s[0], s[3]), (0.0, 1.0));
    assert!((s[1] / (-100f64).exp() - 1.0).abs() < 1e-12, "sigmoid(-100) = {}", s[1]);
    assert_eq!(s[2], 1.0);
    let sp = x.softplus().to_vec();
    assert_eq!((sp[0], sp[2], sp[3]), (0.0, 100.0, 1000.0));
    assert!((sp[1] / (-100f64).exp() - 1.0).abs() < 1e-12, "softplus(-100) = {}", sp[1]);
    assert!(x.silu().is_finite().all() && x.gelu().is_finite().all() && x.gelu_tanh().is_finite().all());
    assert_eq!(x.gelu().to_vec(), vec![-0.0, -0.0, 100.0, 1000.0]);

    let x = Tensor::from_vec(vec![-100.0f32, 100.0], &[2]);
    assert_eq!(x.sigmoid().to_vec()[1], 1.0);
    assert!(x.sigmoid().to_vec()[0] > 0.0 && x.sigmoid().is_finite().all());
    assert_eq!(x.softplus().to_vec(), vec![(-100f32).exp(), 100.0]);
    assert_eq!(x.elu(1.0).to_vec(), vec![-1.0, 100.0]);
}

#[test]
fn gelu_matches_known_values() {
    // x * Phi(x) with Phi from tables of the standard normal distribution.
    let x = Tensor::from_vec(vec![-2.0f64, -1.0, 0.0, 1.0, 2.0], &[5]);
    let want = [-0.04550026389635842, -0.15865525393145707, 0.0, 0.8413447460685429, 1.9544997361036416];
    assert!(x.gelu().to_vec().iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-15), "{:?}", x.gelu());
    let xf = x.cast::<f32>();
    assert!(xf.gelu().to_vec().iter().zip(want).all(|(&g, w)| (g as f64 - w).abs() < 1e-6), "{:?}", xf.gelu());
    // The tanh approximation is close to, not equal to, the exact GELU.
    let d = x.gelu().max_abs_diff(&x.gelu_tanh());
    assert!(d > 1e-6 && d < 1e-3, "gelu vs gelu_tanh differ by {d}");
}

#[test]
fn small_arguments_keep_precision() {
    let x = Tensor::from_vec(vec![1e-10f64, -1e-12], &[2]);
    assert!(x.log1p().allclose(&x, 1e-9, 0.0));
    assert!(x.expm1().allclose(&x, 1e-9, 0.0));
}

#[test]
fn nan_and_signed_zero_follow_pytorch() {
    let nan = f32::NAN;
    let x = Tensor::from_vec(vec![nan, 0.0, -0.0, 2.5, -2.5, 0.5], &[6]);
    let sign = x.sign().to_vec();
    assert!(sign[0].is_nan());
    assert_eq!(&sign[1..], &[0.0, 0.0, 1.0, -1.0, 1.0]);
    assert_eq!(&x.round().to_vec()[1..], &[0.0, 0.0, 2.0, -2.0, 0.0]);
    assert!(x.relu().to_vec()[0].is_nan());
    assert!(x.clamp(-1.0, 1.0).to_vec()[0].is_nan());
    let y = Tensor::from_vec(vec![1.0f32, nan, 3.0, 3.0, 3.0, 3.0], &[6]);
    for t in [x.maximum(&y), x.minimum(&y), y.maximum(&x), y.minimum(&x)] {
        let v = t.to_vec();
        assert!(v[0].is_nan() && v[1].is_nan() && !v[2].is_nan(), "{v:?}");
    }
    assert_eq!(x.eq(&x).to_vec(), vec![false, true, true, true, true, true]);
    assert_eq!(x.ne(&x).to_vec(), vec![true, false, false, false, false, false]);
    assert!(x.max_abs_diff(&x).is_nan());
    assert!(!x.allclose(&x, 1.0, 1.0));
}

#[test]
fn specials_are_classified() {
    let x =
        Tensor::from_vec(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -1.5, f64::MIN_POSITIVE], &[2, 3]).t();
    assert_eq!(x.is_nan().to_vec(), vec![true, false, false, false, false, false]);
    assert_eq!(x.is_finite().to_vec(), vec![false, true, false, true, false, true]);
    let inf = Tensor::from_vec(vec![f64::INFINITY, f64::NEG_INFINITY], &[2]);
    assert_eq!(inf.max_abs_diff(&inf), 0.0);
    assert!(inf.allclose(&inf, 0.0, 0.0));
    assert!(!inf.allclose(&Tensor::from_vec(vec![f64::MAX, f64::NEG_INFINITY], &[2]), 1.0, 1.0));
}

#[test]
fn integer_division_truncates_toward_zero() {
    let a = Tensor::from_vec(vec![-7i32, 7, -7, 7], &[4]);
    let b = Tensor::from_vec(vec![2i32, 2, -2, -2], &[4]);
    assert_eq!(a.div(&b).to_vec(), vec![-3, 3, 3, -3]);
}

#[test]
fn any_and_all_on_empty_and_broadcast_masks() {
    let empty = Tensor::<bool>::from_vec(vec![], &[0, 3]);
    assert!(!empty.any() && empty.all());
    let f = Tensor::from_vec(vec![false], &[1]).expand(&[4]);
    assert!(!f.any() && !f.all());
    let t = Tensor::from_vec(vec![true, false], &[2, 1]).expand(&[2, 3]).select(0, 0);
    assert!(t.any() && t.all());
}

#[test]
fn empty_tensors_flow_through() {
    let e = Tensor::<f32>::zeros(&[0, 3]);
    assert_eq!(e.exp().shape(), &[0, 3]);
    assert_eq!((&e + &Tensor::ones(&[3])).shape(), &[0, 3]);
    assert_eq!(e.max_abs_diff(&e), 0.0);
    assert!(e.allclose(&e, 0.0, 0.0));
}

// ---------------------------------------------------------------- copy-on-write

#[test]
fn in_place_write_into_shared_storage_copies() {
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let view = a.t();
    let mut b = a.clone();
    b.add_scalar_(10.0);
    assert_eq!(b.to_vec(), vec![11.0, 12.0, 13.0, 14.0, 15.0, 16.0]);
    assert_eq!(a.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(view.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert!(!b.shares_storage(&a) && view.shares_storage(&a));

    // Writing through a view copies too, and the original keeps its values.
    let mut v = a.t();
    v.mul_scalar_(2.0);
    assert_eq!(v.to_vec(), vec![2.0, 8.0, 4.0, 10.0, 6.0, 12.0]);
    assert_eq!(a.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

#[test]
fn in_place_write_into_unshared_storage_stays_put() {
    let mut a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let ptr = a.storage().as_ptr();
    a.add_(&Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]));
    a += 1.0;
    a.clamp_(0.0, 9.0);
    assert_eq!(a.storage().as_ptr(), ptr);
    assert_eq!(a.to_vec(), vec![3.0, 5.0, 7.0, 6.0, 8.0, 9.0]);

    // A view that is the storage's only owner is written in place, through its strides.
    let mut t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2]).t();
    let ptr = t.storage().as_ptr();
    t.sub_(&Tensor::from_vec(vec![1.0, 0.0], &[2]));
    assert_eq!(t.storage().as_ptr(), ptr);
    assert_eq!(t.to_vec(), vec![0.0, 3.0, 1.0, 4.0]);
}

#[test]
fn in_place_operand_may_alias_the_target() {
    let mut a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    let at = a.t();
    a.add_(&at);
    assert_eq!(a.to_vec(), vec![2.0, 5.0, 5.0, 8.0]);
    assert_eq!(at.to_vec(), vec![1.0, 3.0, 2.0, 4.0]);
}

#[test]
fn owned_operators_reuse_an_unshared_buffer() {
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    let row = Tensor::from_vec(vec![10.0f32, 20.0], &[2]);
    let ptr = a.storage().as_ptr();
    let b = a * 2.0 + &row;
    assert_eq!(b.storage().as_ptr(), ptr);
    assert_eq!(b.to_vec(), vec![12.0, 24.0, 16.0, 28.0]);
    // The right operand's buffer is reused when the left one cannot be.
    let ptr = b.storage().as_ptr();
    let c = &row - b;
    assert_eq!(c.storage().as_ptr(), ptr);
    assert_eq!(c.to_vec(), vec![-2.0, -4.0, -6.0, -8.0]);
    // A shared buffer is never written.
    let keep = c.clone();
    let d = -c;
    assert!(!d.shares_storage(&keep));
    assert_eq!(keep.to_vec(), vec![-2.0, -4.0, -6.0, -8.0]);
    // A result larger than the owned operand needs a new buffer.
    let e = row / Tensor::from_vec(vec![1.0f32, 2.0, 5.0, 10.0], &[2, 2]).t();
    assert_eq!(e.to_vec(), vec![10.0, 4.0, 5.0, 2.0]);
}

// ---------------------------------------------------------------- shape errors

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [4] cannot be broadcast together")]
fn add_rejects_mismatched_shapes() {
    let _ = Tensor::<f32>::zeros(&[2, 3]).add(&Tensor::zeros(&[4]));
}

#[test]
#[should_panic(expected = "sub: shapes [2, 3] and [2] cannot be broadcast together")]
fn operator_rejects_mismatched_shapes() {
    let _ = Tensor::<f32>::zeros(&[2, 3]) - &Tensor::zeros(&[2]);
}

#[test]
#[should_panic(expected = "maximum: shapes [3] and [2, 2] cannot be broadcast together")]
fn maximum_rejects_mismatched_shapes() {
    let _ = Tensor::<i32>::zeros(&[3]).maximum(&Tensor::zeros(&[2, 2]));
}

#[test]
#[should_panic(expected = "pow: shapes [3] and [4] cannot be broadcast together")]
fn pow_rejects_mismatched_shapes() {
    let _ = Tensor::<f64>::zeros(&[3]).pow(&Tensor::zeros(&[4]));
}

#[test]
#[should_panic(expected = "lt: shapes [2, 3] and [3, 2] cannot be broadcast together")]
fn comparison_rejects_mismatched_shapes() {
    let _ = Tensor::<f32>::zeros(&[2, 3]).lt(&Tensor::zeros(&[3, 2]));
}

#[test]
#[should_panic(expected = "logical_or: shapes [2] and [3] cannot be broadcast together")]
fn logical_op_rejects_mismatched_shapes() {
    let _ = Tensor::full(&[2], true).logical_or(&Tensor::full(&[3], false));
}

#[test]
#[should_panic(expected = "allclose: shapes [2] and [3] cannot be broadcast together")]
fn allclose_rejects_mismatched_shapes() {
    let _ = Tensor::<f32>::zeros(&[2]).allclose(&Tensor::zeros(&[3]), 1e-5, 1e-8);
}

#[test]
#[should_panic(expected = "where_: condition shape [2, 1] and shapes [3] and [4] cannot be broadcast together")]
fn where_rejects_mismatched_shapes() {
    let _ = Tensor::where_(&Tensor::full(&[2, 1], true), &Tensor::<f32>::zeros(&[3]), &Tensor::zeros(&[4]));
}

#[test]
#[should_panic(expected = "add_: shape [2, 3] cannot be broadcast to the in-place target's shape [3]")]
fn in_place_rejects_an_operand_that_would_grow_the_target() {
    let mut a = Tensor::<f32>::zeros(&[3]);
    a.add_(&Tensor::zeros(&[2, 3]));
}

#[test]
#[should_panic(expected = "div_assign: shape [4] cannot be broadcast to the in-place target's shape [2, 3]")]
fn assign_operator_rejects_mismatched_shapes() {
    let mut a = Tensor::<f32>::ones(&[2, 3]);
    a /= &Tensor::ones(&[4]);
}

#[test]
#[should_panic(expected = "add_scalar_: cannot write in place into a broadcast view of shape [2, 3]")]
fn in_place_rejects_a_broadcast_target() {
    let mut a = Tensor::<f32>::zeros(&[3]).expand(&[2, 3]);
    a.add_scalar_(1.0);
}
