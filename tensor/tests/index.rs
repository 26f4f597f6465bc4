//! Index, concatenation and padding ops against index-by-index references over random shapes
//! and layouts: `index_select`, `gather`, `scatter`, `scatter_add`, `index_add`, `masked_fill`,
//! `cat`, `stack`, `split`, `split_sizes`, `chunk`, `unbind`, `pad`, `pad_mode` and
//! `pad_mode_backward`.

use ferrograd_tensor::testing::{any_layout, shape, shape_in};
use ferrograd_tensor::{DType, Element, Num, PadMode, Tensor};
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------- reference helpers

fn ravel(m: &[usize], shape: &[usize]) -> usize {
    m.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

fn unravel(mut p: usize, shape: &[usize]) -> Vec<usize> {
    let mut m = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        m[k] = p % shape[k];
        p /= shape[k];
    }
    m
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Exact for integers and bool; a tolerance scaled to the magnitude for floats, whose sums may
/// legitimately be accumulated in another order.
fn assert_close<E: Element>(got: &[E], want: &[E]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    let tol = match E::DTYPE {
        DType::F32 => 1e-5,
        DType::F64 => 1e-12,
        _ => 0.0,
    };
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.to_f64(), w.to_f64());
        prop_assert!((g - w).abs() <= tol * (1.0 + w.abs()), "element {}: got {}, want {}", i, g, w);
    }
    Ok(())
}

/// Lays `vals` out as a tensor of `shape` in one of five layouts: contiguous, all dims flipped,
/// stored with dims reversed then permuted back, every other row of a larger buffer, or dim 0
/// expanded from size 1 (repeating values).
fn layout_of<E: Element>(vals: &[E], shape: &[usize], kind: u8) -> Tensor<E> {
    let n = numel(shape);
    let rank = shape.len();
    if rank == 0 {
        return Tensor::from_slice(&vals[..1], &[]);
    }
    if n == 0 {
        return Tensor::from_vec(vec![], shape);
    }
    match kind {
        0 => Tensor::from_slice(&vals[..n], shape),
        1 => Tensor::from_slice(&vals[..n], shape).flip(&(0..rank as isize).collect::<Vec<_>>()),
        2 => {
            let rev: Vec<usize> = shape.iter().rev().copied().collect();
            Tensor::from_slice(&vals[..n], &rev).permute(&(0..rank).rev().collect::<Vec<_>>())
        }
        3 => {
            let mut big = shape.to_vec();
            big[0] = 2 * shape[0] + 1;
            Tensor::from_slice(&vals[..numel(&big)], &big).slice(0, 1, big[0], 2)
        }
        _ => {
            let mut small = shape.to_vec();
            small[0] = 1;
            Tensor::from_slice(&vals[..numel(&small)], &small).expand(shape)
        }
    }
}

/// An index tensor of `shape` with values in `0..size`, in any of the layouts of [`layout_of`].
fn indices(shape: Vec<usize>, size: usize) -> BoxedStrategy<Tensor<i64>> {
    let len = 3 * numel(&shape) + 1;
    (prop::collection::vec(0..size.max(1) as i64, len), 0u8..5).prop_map(move |(v, k)| layout_of(&v, &shape, k)).boxed()
}

/// A strategy for a tensor of a given shape in some layout.
type Arb<E> = fn(Vec<usize>) -> BoxedStrategy<Tensor<E>>;

fn num<E: Element>(shape: Vec<usize>) -> BoxedStrategy<Tensor<E>> {
    any_layout::<E>(shape).boxed()
}

/// Boolean tensors with both values well represented (numeric strategies map almost every
/// value to `true`).
fn bools(shape: Vec<usize>) -> BoxedStrategy<Tensor<bool>> {
    let len = 3 * numel(&shape) + 1;
    (prop::collection::vec(any::<bool>(), len), 0u8..5).prop_map(move |(v, k)| layout_of(&v, &shape, k)).boxed()
}

/// A dim in `0..rank`, handed to the op as a positive or a negative `isize`.
fn signed_dim(d: usize, rank: usize, negative: bool) -> isize {
    if negative {
        d as isize - rank as isize
    } else {
        d as isize
    }
}

// ---------------------------------------------------------------- cases

/// An input, a dim and a 1-D index along it.
fn select_case<E: Element>(arb: Arb<E>) -> impl Strategy<Value = (Tensor<E>, usize, bool, Tensor<i64>)> {
    (shape_in(1, 4, 4), any::<Index>(), any::<bool>(), 0usize..=5).prop_flat_map(move |(s, di, neg, k)| {
        let d = di.index(s.len());
        let size = s[d];
        (arb(s), Just(d), Just(neg), indices(vec![k], size))
    })
}

/// An input, a dim and an index of the same rank no larger than the input outside the dim.
fn gather_case<E: Element>(arb: Arb<E>) -> impl Strategy<Value = (Tensor<E>, usize, bool, Tensor<i64>)> {
    (shape_in(1, 4, 4), any::<Index>(), any::<bool>()).prop_flat_map(move |(s, di, neg)| {
        let d = di.index(s.len());
        let ishape: Vec<_> = s.iter().enumerate().map(|(k, &n)| if k == d { 0..=4 } else { 0..=n }).collect();
        let size = s[d];
        (arb(s), Just(d), Just(neg), ishape.prop_flat_map(move |ish| indices(ish, size)))
    })
}

/// [`gather_case`] plus a source at least as large as the index in every dim.
#[allow(clippy::type_complexity)]
fn scatter_case<E: Element>(arb: Arb<E>) -> impl Strategy<Value = (Tensor<E>, usize, bool, Tensor<i64>, Tensor<E>)> {
    gather_case(arb).prop_flat_map(move |(x, d, neg, idx)| {
        let sshape: Vec<_> = idx.shape().iter().map(|&n| n..=n + 1).collect();
        (Just(x), Just(d), Just(neg), Just(idx), sshape.prop_flat_map(arb))
    })
}

/// An input, a dim, a 1-D index and a source with the index's length along the dim.
#[allow(clippy::type_complexity)]
fn index_add_case<E: Element>(arb: Arb<E>) -> impl Strategy<Value = (Tensor<E>, usize, bool, Tensor<i64>, Tensor<E>)> {
    select_case(arb).prop_flat_map(move |(x, d, neg, idx)| {
        let mut sshape = x.shape().to_vec();
        sshape[d] = idx.numel();
        (Just(x), Just(d), Just(neg), Just(idx), arb(sshape))
    })
}

// ---------------------------------------------------------------- checks

fn check_index_select<E: Element>(x: &Tensor<E>, d: usize, neg: bool, idx: &Tensor<i64>) -> Result<(), TestCaseError> {
    let y = x.index_select(signed_dim(d, x.rank(), neg), idx);
    let (xv, iv) = (x.to_vec(), idx.to_vec());
    let mut shape = x.shape().to_vec();
    shape[d] = iv.len();
    prop_assert_eq!(y.shape(), shape.as_slice());
    prop_assert!(y.is_contiguous());
    let want: Vec<E> = (0..numel(&shape))
        .map(|p| {
            let mut m = unravel(p, &shape);
            m[d] = iv[m[d]] as usize;
            xv[ravel(&m, x.shape())]
        })
        .collect();
    prop_assert_eq!(y.to_vec(), want);
    Ok(())
}

fn check_gather<E: Element>(x: &Tensor<E>, d: usize, neg: bool, idx: &Tensor<i64>) -> Result<(), TestCaseError> {
    let y = x.gather(signed_dim(d, x.rank(), neg), idx);
    let (xv, iv) = (x.to_vec(), idx.to_vec());
    prop_assert_eq!(y.shape(), idx.shape());
    let want: Vec<E> = (0..idx.numel())
        .map(|p| {
            let mut m = unravel(p, idx.shape());
            m[d] = iv[p] as usize;
            xv[ravel(&m, x.shape())]
        })
        .collect();
    prop_assert_eq!(y.to_vec(), want);
    Ok(())
}

/// The reference scatter: `f(out[target], src[m])` for each index position `m` in row-major order.
fn reference_scatter<E: Element>(
    x: &Tensor<E>,
    d: usize,
    idx: &Tensor<i64>,
    src: &Tensor<E>,
    f: impl Fn(E, E) -> E,
) -> Vec<E> {
    let (mut out, iv, sv) = (x.to_vec(), idx.to_vec(), src.to_vec());
    for (p, &i) in iv.iter().enumerate() {
        let m = unravel(p, idx.shape());
        let v = sv[ravel(&m, src.shape())];
        let mut t = m;
        t[d] = i as usize;
        let at = ravel(&t, x.shape());
        out[at] = f(out[at], v);
    }
    out
}

fn check_scatter<E: Element>(
    x: &Tensor<E>,
    d: usize,
    neg: bool,
    idx: &Tensor<i64>,
    src: &Tensor<E>,
) -> Result<(), TestCaseError> {
    let y = x.scatter(signed_dim(d, x.rank(), neg), idx, src);
    prop_assert_eq!(y.shape(), x.shape());
    // Last write in row-major order over the index wins, as documented.
    prop_assert_eq!(y.to_vec(), reference_scatter(x, d, idx, src, |_, v| v));
    Ok(())
}

fn check_scatter_add<E: Num>(
    x: &Tensor<E>,
    d: usize,
    neg: bool,
    idx: &Tensor<i64>,
    src: &Tensor<E>,
) -> Result<(), TestCaseError> {
    let y = x.scatter_add(signed_dim(d, x.rank(), neg), idx, src);
    prop_assert_eq!(y.shape(), x.shape());
    assert_close(&y.to_vec(), &reference_scatter(x, d, idx, src, |a, b| a + b))
}

fn check_index_add<E: Num>(
    x: &Tensor<E>,
    d: usize,
    neg: bool,
    idx: &Tensor<i64>,
    src: &Tensor<E>,
) -> Result<(), TestCaseError> {
    let y = x.index_add(signed_dim(d, x.rank(), neg), idx, src);
    let (mut want, iv, sv) = (x.to_vec(), idx.to_vec(), src.to_vec());
    for (p, &v) in sv.iter().enumerate() {
        let mut m = unravel(p, src.shape());
        m[d] = iv[m[d]] as usize;
        want[ravel(&m, x.shape())] += v;
    }
    prop_assert_eq!(y.shape(), x.shape());
    assert_close(&y.to_vec(), &want)
}

fn check_masked_fill<E: Element>(x: &Tensor<E>, mask: &Tensor<bool>, value: E) -> Result<(), TestCaseError> {
    let y = x.masked_fill(mask, value);
    prop_assert_eq!(y.shape(), x.shape());
    let (xv, mv) = (x.to_vec(), mask.to_vec());
    let lead = x.rank() - mask.rank();
    let want: Vec<E> = (0..x.numel())
        .map(|p| {
            let m = unravel(p, x.shape());
            // Broadcast: mask dims of size 1 are read at 0.
            let mm: Vec<usize> =
                mask.shape().iter().enumerate().map(|(k, &n)| if n == 1 { 0 } else { m[lead + k] }).collect();
            if mv[ravel(&mm, mask.shape())] {
                value
            } else {
                xv[p]
            }
        })
        .collect();
    prop_assert_eq!(y.to_vec(), want);
    Ok(())
}

fn check_cat<E: Element>(pieces: &[Tensor<E>], d: usize) -> Result<(), TestCaseError> {
    let refs: Vec<&Tensor<E>> = pieces.iter().collect();
    let y = Tensor::cat(&refs, d as isize);
    let mut shape = pieces[0].shape().to_vec();
    shape[d] = pieces.iter().map(|t| t.shape()[d]).sum();
    prop_assert_eq!(y.shape(), shape.as_slice());
    let data: Vec<Vec<E>> = pieces.iter().map(|t| t.to_vec()).collect();
    let want: Vec<E> = (0..numel(&shape))
        .map(|p| {
            let mut m = unravel(p, &shape);
            let mut i = 0;
            while m[d] >= pieces[i].shape()[d] {
                m[d] -= pieces[i].shape()[d];
                i += 1;
            }
            data[i][ravel(&m, pieces[i].shape())]
        })
        .collect();
    prop_assert_eq!(y.to_vec(), want);
    Ok(())
}

fn check_stack<E: Element>(pieces: &[Tensor<E>], d: usize) -> Result<(), TestCaseError> {
    let refs: Vec<&Tensor<E>> = pieces.iter().collect();
    let y = Tensor::stack(&refs, d as isize);
    let mut shape = pieces[0].shape().to_vec();
    shape.insert(d, pieces.len());
    prop_assert_eq!(y.shape(), shape.as_slice());
    let data: Vec<Vec<E>> = pieces.iter().map(|t| t.to_vec()).collect();
    let want: Vec<E> = (0..numel(&shape))
        .map(|p| {
            let mut m = unravel(p, &shape);
            let i = m.remove(d);
            data[i][ravel(&m, pieces[0].shape())]
        })
        .collect();
    prop_assert_eq!(y.to_vec(), want);
    Ok(())
}

/// A cat case: pieces of one shape except along `d`, each in its own layout.
fn cat_case<E: Element>(arb: Arb<E>) -> impl Strategy<Value = (Vec<Tensor<E>>, usize)> {
    (shape_in(1, 4, 4), any::<Index>(), prop::collection::vec(0usize..=3, 1..=4)).prop_flat_map(
        move |(s, di, sizes)| {
            let d = di.index(s.len());
            let pieces: Vec<_> = sizes
                .iter()
                .map(|&k| {
                    let mut ps = s.clone();
                    ps[d] = k;
                    arb(ps)
                })
                .collect();
            (pieces, Just(d))
        },
    )
}

/// Where output coordinate `o` along a dim of `size` padded by `before` reads from, or `None`
/// for the constant border.
fn pad_source(o: usize, before: usize, size: usize, mode: PadMode) -> Option<usize> {
    let i = o as isize - before as isize;
    let last = size as isize - 1;
    let j = match mode {
        PadMode::Constant if i < 0 || i > last => return None,
        PadMode::Reflect if i < 0 => -i,
        PadMode::Reflect if i > last => 2 * last - i,
        _ => i.clamp(0, last),
    };
    Some(j as usize)
}

/// The input multi-index an output multi-index of a padded tensor reads from.
fn padded_source(m: &[usize], in_shape: &[usize], pads: &[(usize, usize)], mode: PadMode) -> Option<Vec<usize>> {
    let lead = in_shape.len() - pads.len();
    m.iter()
        .enumerate()
        .map(|(k, &o)| if k < lead { Some(o) } else { pad_source(o, pads[k - lead].0, in_shape[k], mode) })
        .collect()
}

fn padded(in_shape: &[usize], pads: &[(usize, usize)]) -> Vec<usize> {
    let lead = in_shape.len() - pads.len();
    in_shape
        .iter()
        .enumerate()
        .map(|(k, &n)| if k < lead { n } else { n + pads[k - lead].0 + pads[k - lead].1 })
        .collect()
}

fn check_pad<E: Element>(x: &Tensor<E>, pads: &[(usize, usize)], mode: PadMode, value: E) -> Result<(), TestCaseError> {
    let y = x.pad_mode(pads, mode, value);
    let shape = padded(x.shape(), pads);
    prop_assert_eq!(y.shape(), shape.as_slice());
    let xv = x.to_vec();
    let want: Vec<E> = (0..numel(&shape))
        .map(|p| match padded_source(&unravel(p, &shape), x.shape(), pads, mode) {
            Some(m) => xv[ravel(&m, x.shape())],
            None => value,
        })
        .collect();
    prop_assert_eq!(y.to_vec(), want);
    if mode == PadMode::Constant {
        prop_assert_eq!(x.pad(pads, value), y);
    }
    Ok(())
}

fn pad_mode_strategy() -> impl Strategy<Value = PadMode> {
    prop::sample::select(vec![PadMode::Constant, PadMode::Reflect, PadMode::Replicate])
}

/// A shape, a mode and valid pads for some trailing dims (reflect pads below the dim's size).
fn pad_spec() -> impl Strategy<Value = (Vec<usize>, PadMode, Vec<(usize, usize)>)> {
    (shape_in(0, 4, 4), pad_mode_strategy(), any::<Index>()).prop_flat_map(|(s, mode, pi)| {
        let p = pi.index(s.len() + 1);
        let pads: Vec<_> = s[s.len() - p..]
            .iter()
            .map(|&n| if mode == PadMode::Reflect { (0..n, 0..n) } else { (0..4, 0..4) })
            .collect();
        (Just(s), Just(mode), pads)
    })
}

// ---------------------------------------------------------------- properties per element type

macro_rules! element_props {
    ($name:ident, $t:ty, $arb:expr) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(64))]

                #[test]
                fn index_select_matches_reference((x, d, neg, idx) in select_case::<$t>($arb)) {
                    check_index_select(&x, d, neg, &idx)?;
                }

                #[test]
                fn gather_matches_reference((x, d, neg, idx) in gather_case::<$t>($arb)) {
                    check_gather(&x, d, neg, &idx)?;
                }

                #[test]
                fn scatter_matches_reference((x, d, neg, idx, src) in scatter_case::<$t>($arb)) {
                    check_scatter(&x, d, neg, &idx, &src)?;
                }

                #[test]
                fn masked_fill_matches_reference(
                    (x, mask) in shape(4, 4).prop_flat_map(|s| {
                        let r = s.len();
                        (Just(s), 0..=r, prop::collection::vec(any::<bool>(), r))
                    }).prop_flat_map(|(s, drop, ones)| {
                        let m: Vec<usize> =
                            s.iter().zip(&ones).map(|(&n, &o)| if o { 1 } else { n }).skip(drop).collect();
                        (($arb)(s), bools(m))
                    }),
                    v in -4i8..4,
                ) {
                    check_masked_fill(&x, &mask, <$t as Element>::from_f64(v as f64))?;
                }

                #[test]
                fn cat_matches_reference((pieces, d) in cat_case::<$t>($arb)) {
                    check_cat(&pieces, d)?;
                }

                #[test]
                fn stack_matches_reference(
                    (pieces, d) in (shape(3, 4), 1usize..=4).prop_flat_map(|(s, n)| {
                        let r = s.len();
                        (prop::collection::vec(($arb)(s), n), 0..=r)
                    })
                ) {
                    check_stack(&pieces, d)?;
                }

                #[test]
                fn pad_matches_reference(
                    (x, mode, pads) in pad_spec().prop_flat_map(|(s, m, p)| (($arb)(s), Just(m), Just(p))),
                    v in -4i8..4,
                ) {
                    check_pad(&x, &pads, mode, <$t as Element>::from_f64(v as f64))?;
                }
            }
        }
    };
}

macro_rules! num_props {
    ($name:ident, $t:ty) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(64))]

                #[test]
                fn scatter_add_matches_reference((x, d, neg, idx, src) in scatter_case::<$t>(num::<$t>)) {
                    check_scatter_add(&x, d, neg, &idx, &src)?;
                }

                #[test]
                fn index_add_matches_reference((x, d, neg, idx, src) in index_add_case::<$t>(num::<$t>)) {
                    check_index_add(&x, d, neg, &idx, &src)?;
                }
            }
        }
    };
}

element_props!(f32_elements, f32, num::<f32>);
element_props!(f64_elements, f64, num::<f64>);
element_props!(i64_elements, i64, num::<i64>);
element_props!(bool_elements, bool, bools);
num_props!(f32_num, f32);
num_props!(f64_num, f64);
num_props!(i64_num, i64);

// ---------------------------------------------------------------- splitting

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn split_is_views_that_cat_back(
        (x, d, size) in (shape_in(1, 4, 5), any::<Index>(), 1usize..=6)
            .prop_flat_map(|(s, di, k)| { let d = di.index(s.len()); (any_layout::<f64>(s), Just(d), Just(k)) })
    ) {
        let parts = x.split(size, d as isize);
        let n = x.shape()[d];
        prop_assert_eq!(parts.len(), n.div_ceil(size));
        for (i, p) in parts.iter().enumerate() {
            prop_assert!(p.shares_storage(&x));
            prop_assert_eq!(p.shape()[d], size.min(n - i * size));
            prop_assert_eq!(p, &x.narrow(d as isize, i * size, p.shape()[d]));
        }
        let refs: Vec<&Tensor<f64>> = parts.iter().collect();
        prop_assert_eq!(Tensor::cat(&refs, d as isize), x);
    }

    #[test]
    fn split_sizes_is_views_that_cat_back(
        (x, d, sizes) in (shape_in(1, 4, 5), any::<Index>())
            .prop_flat_map(|(s, di)| {
                let d = di.index(s.len());
                let n = s[d];
                // Cut points in 0..=n give sizes that sum to n, zeros included.
                (any_layout::<f32>(s), Just(d), prop::collection::vec(0..=n, 0..4))
            })
            .prop_map(|(x, d, mut cuts)| {
                cuts.push(0);
                cuts.push(x.shape()[d]);
                cuts.sort_unstable();
                let sizes: Vec<usize> = cuts.windows(2).map(|w| w[1] - w[0]).collect();
                (x, d, sizes)
            })
    ) {
        let parts = x.split_sizes(&sizes, d as isize);
        prop_assert_eq!(parts.len(), sizes.len());
        let mut start = 0;
        for (p, &s) in parts.iter().zip(&sizes) {
            prop_assert!(p.shares_storage(&x));
            prop_assert_eq!(p, &x.narrow(d as isize, start, s));
            start += s;
        }
        let refs: Vec<&Tensor<f32>> = parts.iter().collect();
        prop_assert_eq!(Tensor::cat(&refs, d as isize), x);
    }

    #[test]
    fn chunk_cats_back_with_pytorch_sizes(
        (x, d, chunks) in (shape_in(1, 4, 6), any::<Index>(), 1usize..=7)
            .prop_flat_map(|(s, di, c)| { let d = di.index(s.len()); (any_layout::<i64>(s), Just(d), Just(c)) })
    ) {
        let parts = x.chunk(chunks, d as isize);
        let n = x.shape()[d];
        let size = n.div_ceil(chunks);
        prop_assert!(parts.len() <= chunks);
        for (i, p) in parts.iter().enumerate() {
            prop_assert!(p.shares_storage(&x));
            let want = if i + 1 < parts.len() { size } else { n - size * (parts.len() - 1) };
            prop_assert_eq!(p.shape()[d], want);
        }
        let refs: Vec<&Tensor<i64>> = parts.iter().collect();
        prop_assert_eq!(Tensor::cat(&refs, d as isize), x);
    }

    #[test]
    fn unbind_is_selects_that_stack_back(
        (x, d) in (shape_in(1, 4, 4), any::<Index>())
            .prop_flat_map(|(s, di)| { let d = di.index(s.len()); (any_layout::<f32>(s), Just(d)) })
    ) {
        let parts = x.unbind(d as isize);
        prop_assert_eq!(parts.len(), x.shape()[d]);
        let xv = x.to_vec();
        for (i, p) in parts.iter().enumerate() {
            prop_assert!(p.shares_storage(&x));
            let mut shape = x.shape().to_vec();
            shape.remove(d);
            prop_assert_eq!(p.shape(), shape.as_slice());
            let want: Vec<f32> = (0..p.numel())
                .map(|q| {
                    let mut m = unravel(q, &shape);
                    m.insert(d, i);
                    xv[ravel(&m, x.shape())]
                })
                .collect();
            prop_assert_eq!(p.to_vec(), want);
        }
        let refs: Vec<&Tensor<f32>> = parts.iter().collect();
        prop_assert_eq!(Tensor::stack(&refs, d as isize), x);
    }

    #[test]
    fn pad_mode_backward_accumulates_onto_sources(
        (g, in_shape, mode, pads) in pad_spec()
            .prop_flat_map(|(s, m, p)| (any_layout::<f64>(padded(&s, &p)), Just(s), Just(m), Just(p)))
    ) {
        let gx = Tensor::pad_mode_backward(&g, &in_shape, &pads, mode);
        prop_assert_eq!(gx.shape(), in_shape.as_slice());
        let mut want = vec![0.0; numel(&in_shape)];
        for (p, &v) in g.to_vec().iter().enumerate() {
            if let Some(m) = padded_source(&unravel(p, g.shape()), &in_shape, &pads, mode) {
                want[ravel(&m, &in_shape)] += v;
            }
        }
        assert_close(&gx.to_vec(), &want)?;
    }
}

// ---------------------------------------------------------------- fixed examples

#[test]
fn chunk_sizes_follow_pytorch() {
    // (length, chunks) -> sizes, as torch.arange(n).chunk(c) gives them.
    let cases: &[(usize, usize, &[usize])] = &[
        (5, 3, &[2, 2, 1]),
        (6, 4, &[2, 2, 2]),
        (4, 4, &[1, 1, 1, 1]),
        (7, 3, &[3, 3, 1]),
        (1, 3, &[1]),
        (0, 2, &[0, 0]),
    ];
    for &(n, c, want) in cases {
        let x = Tensor::<f32>::zeros(&[n]);
        let sizes: Vec<usize> = x.chunk(c, 0).iter().map(|t| t.numel()).collect();
        assert_eq!(sizes, want, "{n} elements in {c} chunks");
    }
}

#[test]
fn split_of_an_empty_dim_is_one_empty_piece() {
    let x = Tensor::<f32>::zeros(&[2, 0]);
    let parts = x.split(3, 1);
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].shape(), &[2, 0]);
}

#[test]
fn stack_of_scalars_is_a_vector() {
    let (a, b) = (Tensor::scalar(1i64), Tensor::scalar(2i64));
    let s = Tensor::stack(&[&a, &b], 0);
    assert_eq!(s.shape(), &[2]);
    assert_eq!(s.to_vec(), vec![1, 2]);
}

#[test]
fn repeated_indices_accumulate() {
    let x = Tensor::<f64>::ones(&[2, 3]);
    let idx = Tensor::from_vec(vec![1i64, 1, 1, 0], &[4]);
    let src = Tensor::from_vec(vec![1.0, 10.0, 100.0, 1000.0], &[4]).unsqueeze(0).expand(&[2, 4]);
    // Columns 1 gets 1 + 10 + 100, column 0 gets 1000, both rows.
    let want = vec![1001.0, 112.0, 1.0, 1001.0, 112.0, 1.0];
    assert_eq!(x.index_add(1, &idx, &src).to_vec(), want);
    let idx2 = idx.unsqueeze(0).expand(&[2, 4]);
    assert_eq!(x.scatter_add(1, &idx2, &src).to_vec(), want);
}

#[test]
fn reflect_and_replicate_on_two_dims() {
    let x = Tensor::from_vec((1..=6).collect::<Vec<i32>>(), &[2, 3]);
    let r = x.pad_mode(&[(1, 1), (2, 0)], PadMode::Reflect, 0);
    #[rustfmt::skip]
    let want = vec![
        6, 5, 4, 5, 6,
        3, 2, 1, 2, 3,
        6, 5, 4, 5, 6,
        3, 2, 1, 2, 3,
    ];
    assert_eq!(r.shape(), &[4, 5]);
    assert_eq!(r.to_vec(), want);
    let p = x.pad_mode(&[(0, 1), (1, 1)], PadMode::Replicate, 0);
    #[rustfmt::skip]
    let want = vec![
        1, 1, 2, 3, 3,
        4, 4, 5, 6, 6,
        4, 4, 5, 6, 6,
    ];
    assert_eq!(p.to_vec(), want);
}

// ---------------------------------------------------------------- panics

#[test]
#[should_panic(expected = "index_select: index 3 is out of range for dim 0 of size 3")]
fn index_select_out_of_range() {
    Tensor::<f32>::zeros(&[3, 2]).index_select(0, &Tensor::from_vec(vec![0i64, 3], &[2]));
}

#[test]
#[should_panic(expected = "gather: index -1 is out of range for dim 1 of size 2")]
fn gather_rejects_negative_indices() {
    Tensor::<f32>::zeros(&[3, 2]).gather(-1, &Tensor::from_vec(vec![0i64, -1], &[1, 2]));
}

#[test]
#[should_panic(expected = "scatter_add: index 4 is out of range for dim 0 of size 4")]
fn scatter_add_out_of_range() {
    let src = Tensor::<f64>::ones(&[2]);
    Tensor::<f64>::zeros(&[4]).scatter_add(0, &Tensor::from_vec(vec![1i64, 4], &[2]), &src);
}

#[test]
#[should_panic(expected = "index_add: index 2 is out of range for dim 1 of size 2")]
fn index_add_out_of_range() {
    let src = Tensor::<f64>::ones(&[2, 1]);
    Tensor::<f64>::zeros(&[2, 2]).index_add(1, &Tensor::from_vec(vec![2i64], &[1]), &src);
}

#[test]
#[should_panic(expected = "index_add: src of shape [2, 3] does not match input of shape [2, 2]")]
fn index_add_src_shape_mismatch() {
    let src = Tensor::<f64>::ones(&[2, 3]);
    Tensor::<f64>::zeros(&[2, 2]).index_add(1, &Tensor::from_vec(vec![0i64, 1], &[2]), &src);
}

#[test]
#[should_panic(expected = "gather: index of shape [3, 1] does not fit input of shape [2, 2]")]
fn gather_index_too_large() {
    Tensor::<f32>::zeros(&[2, 2]).gather(1, &Tensor::<i64>::zeros(&[3, 1]));
}

#[test]
#[should_panic(expected = "scatter: index of shape [2] does not fit src of shape [1]")]
fn scatter_src_too_small() {
    Tensor::<f32>::zeros(&[3]).scatter(0, &Tensor::<i64>::zeros(&[2]), &Tensor::zeros(&[1]));
}

#[test]
#[should_panic(expected = "masked_fill: mask of shape [3] cannot be broadcast to the input's shape [3, 2]")]
fn masked_fill_mask_shape_mismatch() {
    Tensor::<f32>::zeros(&[3, 2]).masked_fill(&Tensor::full(&[3], true), 1.0);
}

#[test]
#[should_panic(expected = "cat: shapes [2, 3] and [3, 3] do not match outside dim 1")]
fn cat_shape_mismatch() {
    Tensor::cat(&[&Tensor::<f32>::zeros(&[2, 3]), &Tensor::zeros(&[3, 3])], 1);
}

#[test]
#[should_panic(expected = "cat: shapes [2, 3] and [2, 3, 1] do not match outside dim 0")]
fn cat_rank_mismatch() {
    Tensor::cat(&[&Tensor::<f32>::zeros(&[2, 3]), &Tensor::zeros(&[2, 3, 1])], 0);
}

#[test]
#[should_panic(expected = "cat: expects a tensor of rank >= 1")]
fn cat_of_scalars() {
    Tensor::cat(&[&Tensor::scalar(1.0f32)], 0);
}

#[test]
#[should_panic(expected = "stack: shapes [2] and [3] differ")]
fn stack_shape_mismatch() {
    Tensor::stack(&[&Tensor::<f32>::zeros(&[2]), &Tensor::zeros(&[3])], 0);
}

#[test]
#[should_panic(expected = "split_sizes: sizes [1, 1] do not sum to the size 3 of dim 0")]
fn split_sizes_bad_sum() {
    Tensor::<f32>::zeros(&[3]).split_sizes(&[1, 1], 0);
}

#[test]
#[should_panic(expected = "chunk: the number of chunks must be positive")]
fn chunk_zero() {
    Tensor::<f32>::zeros(&[3]).chunk(0, 0);
}

#[test]
#[should_panic(expected = "pad_mode: reflect padding (3, 0) must be smaller than dim 1 of size 3 (shape [2, 3])")]
fn reflect_pad_too_large() {
    Tensor::<f32>::zeros(&[2, 3]).pad_mode(&[(3, 0)], PadMode::Reflect, 0.0);
}

#[test]
#[should_panic(expected = "pad: 3 (before, after) pairs given for a tensor of shape [2, 3] with 2 dims")]
fn pad_too_many_pairs() {
    Tensor::<f32>::zeros(&[2, 3]).pad(&[(1, 1), (1, 1), (1, 1)], 0.0);
}

#[test]
#[should_panic(expected = "pad_mode_backward: gradient of shape [4] does not match input shape [3] padded to [5]")]
fn pad_backward_shape_mismatch() {
    Tensor::pad_mode_backward(&Tensor::<f32>::zeros(&[4]), &[3], &[(1, 1)], PadMode::Replicate);
}
