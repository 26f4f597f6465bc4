//! L-BFGS with PyTorch's semantics (`torch.optim.LBFGS`): a quasi-Newton method over all
//! parameters flattened into one vector, re-evaluating the loss through a closure, with an
//! optional strong-Wolfe line search. It follows PyTorch's algorithm decision for decision
//! (history updates, step lengths, tolerances, evaluation counts), so trajectories match
//! (checked against `tests/fixtures/gen_lbfgs.py`).
//!
//! Scalars that feed vector updates (step length, inverse-Hessian scale, curvature pairs'
//! `1 / y·s`) are kept in the parameters' precision and saved in the state as they are used,
//! so a run restored from its state continues bit for bit; dot products are summed in f64.

use std::collections::{BTreeMap, HashSet, VecDeque};

use ferrograd_autograd::{enable_grad, Grads, Param, Var};
use ferrograd_tensor::{Element, Float, Tensor};

use crate::error::{non_negative, require};
use crate::optimizer::{all_finite, parse_count};
use crate::{OptimError, Optimizer};

/// The line search of [`LbfgsOptions::line_search`] (PyTorch's `line_search_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineSearch {
    /// PyTorch's `"strong_wolfe"`: bracketing then zoom with cubic interpolation until the
    /// strong Wolfe conditions hold (c1 = 1e-4, c2 = 0.9).
    StrongWolfe,
}

/// The options of [`Lbfgs`]; `Default` is PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LbfgsOptions {
    /// Step length (default 1): the line search's first trial, or the fixed step without one.
    pub lr: f64,
    /// Iterations per [`Optimizer::step_closure`] (default 20).
    pub max_iter: usize,
    /// Loss evaluations per step; `None` (the default) is `max_iter * 5 / 4`.
    pub max_eval: Option<usize>,
    /// Stop when every gradient element is at most this in magnitude (default 1e-7).
    pub tolerance_grad: f64,
    /// Stop when the loss or the parameters change less than this (default 1e-9).
    pub tolerance_change: f64,
    /// Curvature pairs kept (default 100).
    pub history_size: usize,
    /// `None` (the default): fixed steps of `lr`; or a line search.
    pub line_search: Option<LineSearch>,
    /// Maximise the loss instead.
    pub maximize: bool,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions {
            lr: 1.0,
            max_iter: 20,
            max_eval: None,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: 100,
            line_search: None,
            maximize: false,
        }
    }
}

impl LbfgsOptions {
    /// `max_eval`, or its default.
    fn max_eval(&self) -> usize {
        self.max_eval.unwrap_or(self.max_iter * 5 / 4)
    }

    /// PyTorch checks only `lr >= 0`; the other values here would crash or loop in PyTorch
    /// (`history_size` 0 pops an empty list, `max_eval` 0 gives a negative line-search budget).
    fn validate(&self) -> Result<(), OptimError> {
        non_negative("Lbfgs", "lr", self.lr)?;
        require("Lbfgs", "max_iter", self.max_iter as f64, self.max_iter >= 1, "must be >= 1")?;
        let max_eval = self.max_eval() as f64;
        require("Lbfgs", "max_eval", max_eval, max_eval >= 1.0, "must be >= 1")?;
        non_negative("Lbfgs", "tolerance_grad", self.tolerance_grad)?;
        non_negative("Lbfgs", "tolerance_change", self.tolerance_change)?;
        require("Lbfgs", "history_size", self.history_size as f64, self.history_size >= 1, "must be >= 1")
    }
}

/// What L-BFGS carries from one step to the next (PyTorch's `state`, less `prev_loss`, which
/// PyTorch stores but overwrites before reading).
#[derive(Debug, Clone, PartialEq)]
struct State<F> {
    func_evals: u64,
    n_iter: u64,
    /// The last direction, step length, gradient and inverse-Hessian scale, once an iteration
    /// has run.
    last: Option<Last<F>>,
    /// Curvature pairs, oldest first.
    history: VecDeque<Pair<F>>,
}

/// A curvature pair: the change of the gradient `y` over a step `s`, and `1 / y·s`.
#[derive(Debug, Clone, PartialEq)]
struct Pair<F> {
    y: Vec<F>,
    s: Vec<F>,
    ro: F,
}

#[derive(Debug, Clone, PartialEq)]
struct Last<F> {
    d: Vec<F>,
    t: F,
    prev_flat_grad: Vec<F>,
    h_diag: F,
}

/// One evaluation: the loss (negated when maximising) and the flat gradient.
type Eval<F> = (f64, Vec<F>);

/// L-BFGS (`torch.optim.LBFGS`) over one group of parameters. Step it with a closure that
/// computes the loss ([`Optimizer::step_closure`]); it runs up to `max_iter` iterations, each
/// re-evaluating the closure (or several times within a line search).
///
/// ```
/// use ferrograd_autograd::Param;
/// use ferrograd_optim::{Lbfgs, LbfgsOptions, LineSearch, Optimizer};
/// use ferrograd_tensor::Tensor;
/// // The Rosenbrock function, minimum at (1, 1).
/// let (x, y) = (Param::new(Tensor::from_vec(vec![-1.2f64], &[1])), Param::new(Tensor::from_vec(vec![1.0], &[1])));
/// let options = LbfgsOptions { line_search: Some(LineSearch::StrongWolfe), ..LbfgsOptions::default() };
/// let mut opt = Lbfgs::new(vec![x.clone(), y.clone()], options);
/// for _ in 0..5 {
///     opt.step_closure(&mut || {
///         let (x, y) = (x.var(), y.var());
///         ((&y - &x.square()).square() * 100.0 + (-&x + 1.0).square()).sum()
///     });
/// }
/// // Where PyTorch stops too: the loss changes by less than tolerance_change.
/// assert!((x.value().item() - 1.0).abs() < 1e-4 && (y.value().item() - 1.0).abs() < 1e-4);
/// ```
///
/// PyTorch allows a single parameter group; so does `Lbfgs`. Missing gradients count as zeros
/// (PyTorch's rule here, unlike the other optimizers). Its state (`state.0.0.d`, `t`,
/// `old_dirs`, `old_stps`, `ro`, `H_diag`, `prev_flat_grad`, `n_iter`, `func_evals`, named as
/// PyTorch's) saves and loads through [`Optimizer::state_dict`].
pub struct Lbfgs<F: Float = f32> {
    params: Vec<Param<F>>,
    options: LbfgsOptions,
    state: State<F>,
}

impl<F: Float> std::fmt::Debug for Lbfgs<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lbfgs")
            .field("params", &self.params.len())
            .field("options", &self.options)
            .field("n_iter", &self.state.n_iter)
            .field("func_evals", &self.state.func_evals)
            .finish()
    }
}

impl<F: Float> Lbfgs<F> {
    /// L-BFGS over `params`.
    ///
    /// # Panics
    /// If an option is out of range (naming it, at the caller's line) or a parameter appears
    /// twice; [`Lbfgs::try_new`] returns these as errors.
    #[track_caller]
    pub fn new(params: Vec<Param<F>>, options: LbfgsOptions) -> Self {
        match Self::try_new(params, options) {
            Ok(opt) => opt,
            Err(e) => panic!("Lbfgs::new: {e}"),
        }
    }

    /// [`Lbfgs::new`] returning an [`OptimError`]: a negative or non-finite lr or tolerance,
    /// `max_iter`, `max_eval` or `history_size` of 0, or a repeated parameter.
    pub fn try_new(params: Vec<Param<F>>, options: LbfgsOptions) -> Result<Self, OptimError> {
        options.validate()?;
        let mut seen = HashSet::new();
        if let Some(p) = params.iter().find(|p| !seen.insert(p.id())) {
            return Err(OptimError::DuplicateParameter(format!("{p:?}")));
        }
        let state = State { func_evals: 0, n_iter: 0, last: None, history: VecDeque::new() };
        Ok(Lbfgs { params, options, state })
    }

    /// The options.
    pub fn options(&self) -> &LbfgsOptions {
        &self.options
    }

    /// Iterations run so far (PyTorch's `state["n_iter"]`).
    pub fn n_iter(&self) -> u64 {
        self.state.n_iter
    }

    /// Loss evaluations so far (PyTorch's `state["func_evals"]`).
    pub fn func_evals(&self) -> u64 {
        self.state.func_evals
    }

    fn numel(&self) -> usize {
        self.params.iter().map(Param::numel).sum()
    }

    /// Runs `eval` (the closure and its backward pass) and flattens the gradient.
    fn evaluate(&self, eval: &mut dyn FnMut() -> (f64, Grads<F>)) -> Eval<F> {
        let (loss, grads) = eval();
        let mut flat = Vec::with_capacity(self.numel());
        for p in &self.params {
            match grads.get_param(p) {
                Some(g) => {
                    assert_eq!(g.shape(), p.shape(), "Lbfgs: gradient shape differs from parameter {p:?}");
                    flat.extend(g.to_vec());
                }
                None => flat.extend(std::iter::repeat_n(F::zero(), p.numel())),
            }
        }
        if self.options.maximize {
            flat.iter_mut().for_each(|g| *g = -*g);
            (-loss, flat)
        } else {
            (loss, flat)
        }
    }

    /// `params += t * d`.
    fn add_to_params(&self, t: F, d: &[F]) {
        let mut offset = 0;
        for p in &self.params {
            let n = p.numel();
            p.update(|v| {
                for (x, &di) in v.as_mut_slice().iter_mut().zip(&d[offset..offset + n]) {
                    *x += t * di;
                }
            });
            offset += n;
        }
    }

    /// The loss and gradient at `x + t * d`, leaving the parameters at `x`.
    fn evaluate_at(&self, eval: &mut dyn FnMut() -> (f64, Grads<F>), x: &[Tensor<F>], t: f64, d: &[F]) -> Eval<F> {
        self.add_to_params(F::from_f64(t), d);
        let out = self.evaluate(eval);
        for (p, v) in self.params.iter().zip(x) {
            p.set(v.clone());
        }
        out
    }

    /// PyTorch's `LBFGS.step`, with `eval` computing the loss and its gradients.
    fn run(&mut self, eval: &mut dyn FnMut() -> (f64, Grads<F>)) -> f64 {
        let o = self.options;
        let max_eval = o.max_eval();
        let (mut loss, mut flat_grad) = self.evaluate(eval);
        let orig_loss = if o.maximize { -loss } else { loss };
        if self.params.is_empty() {
            return orig_loss;
        }
        let mut current_evals = 1;
        self.state.func_evals += 1;
        if max_abs(&flat_grad) <= o.tolerance_grad {
            return orig_loss;
        }
        let mut n_iter = 0;
        while n_iter < o.max_iter {
            n_iter += 1;
            self.state.n_iter += 1;
            let mut last = self.direction(&flat_grad);
            let prev_loss = loss;
            let t = if self.state.n_iter == 1 { 1f64.min(1.0 / sum_abs(&flat_grad)) * o.lr } else { o.lr };
            last.t = F::from_f64(t);
            let gtd = dot(&flat_grad, &last.d);
            // The directional derivative is too small to make progress.
            let mut stop = gtd > -o.tolerance_change;
            if !stop {
                let (ls_evals, opt_cond);
                match o.line_search {
                    Some(LineSearch::StrongWolfe) => {
                        let x: Vec<Tensor<F>> = self.params.iter().map(Param::value).collect();
                        let budget = max_eval as i64 - current_evals as i64;
                        let start = Point::new(0.0, loss, flat_grad, gtd);
                        let found = self.strong_wolfe(eval, &x, &last.d, start, Element::to_f64(last.t), budget);
                        last.t = F::from_f64(found.t);
                        (loss, flat_grad, ls_evals) = (found.f, found.g, found.evals);
                        self.add_to_params(last.t, &last.d);
                        opt_cond = max_abs(&flat_grad) <= o.tolerance_grad;
                    }
                    None => {
                        self.add_to_params(last.t, &last.d);
                        // PyTorch skips the evaluation after the last iteration (in a stochastic
                        // setting it would be wasted).
                        if n_iter != o.max_iter {
                            (loss, flat_grad) = self.evaluate(eval);
                            (opt_cond, ls_evals) = (max_abs(&flat_grad) <= o.tolerance_grad, 1);
                        } else {
                            (opt_cond, ls_evals) = (false, 0);
                        }
                    }
                }
                current_evals += ls_evals;
                self.state.func_evals += ls_evals as u64;
                let step_size = last.d.iter().fold(F::zero(), |m, &di| m.max((di * last.t).abs()));
                stop = n_iter == o.max_iter
                    || current_evals >= max_eval
                    || opt_cond
                    || Element::to_f64(step_size) <= o.tolerance_change
                    || (loss - prev_loss).abs() < o.tolerance_change;
            }
            self.state.last = Some(last);
            if stop {
                break;
            }
        }
        orig_loss
    }

    /// This iteration's direction (`-g` at the first iteration, else the two-loop recursion
    /// after adding the newest curvature pair), and `flat_grad` kept as the previous gradient.
    fn direction(&mut self, flat_grad: &[F]) -> Last<F> {
        let h = self.options.history_size;
        let st = &mut self.state;
        let neg = |v: &[F]| v.iter().map(|&x| -x).collect::<Vec<F>>();
        let (d, h_diag) = match st.last.take() {
            Some(last) if st.n_iter > 1 => {
                let y: Vec<F> = flat_grad.iter().zip(&last.prev_flat_grad).map(|(&g, &p)| g - p).collect();
                let s: Vec<F> = last.d.iter().map(|&di| di * last.t).collect();
                let ys = F::from_f64(dot(&y, &s));
                let mut h_diag = last.h_diag;
                if Element::to_f64(ys) > 1e-10 {
                    if st.history.len() == h {
                        st.history.pop_front();
                    }
                    h_diag = ys / F::from_f64(dot(&y, &y));
                    st.history.push_back(Pair { y, s, ro: F::one() / ys });
                }
                let mut q = neg(flat_grad);
                let mut al = vec![F::zero(); st.history.len()];
                for (i, pair) in st.history.iter().enumerate().rev() {
                    al[i] = F::from_f64(dot(&pair.s, &q)) * pair.ro;
                    axpy(&mut q, -al[i], &pair.y);
                }
                let mut r: Vec<F> = q.iter().map(|&x| x * h_diag).collect();
                for (i, pair) in st.history.iter().enumerate() {
                    let be_i = F::from_f64(dot(&pair.y, &r)) * pair.ro;
                    axpy(&mut r, al[i] - be_i, &pair.s);
                }
                (r, h_diag)
            }
            _ => {
                st.history.clear();
                (neg(flat_grad), F::one())
            }
        };
        Last { d, t: F::zero(), prev_flat_grad: flat_grad.to_vec(), h_diag }
    }

    /// PyTorch's `_strong_wolfe` from `x` along `d`, where `start` holds the loss, gradient and
    /// directional derivative at `x`: trial steps from `t` on, within `max_ls` evaluations.
    fn strong_wolfe(
        &self,
        eval: &mut dyn FnMut() -> (f64, Grads<F>),
        x: &[Tensor<F>],
        d: &[F],
        start: Point<F>,
        mut t: f64,
        max_ls: i64,
    ) -> Found<F> {
        let Point { f, g, gtd, .. } = start;
        const C1: f64 = 1e-4;
        const C2: f64 = 0.9;
        let tolerance_change = 1e-9;
        let d_norm = Element::to_f64(max_abs_f(d));
        let (mut f_new, mut g_new) = self.evaluate_at(eval, x, t, d);
        let mut evals = 1;
        let mut gtd_new = dot(&g_new, d);
        let (mut t_prev, mut f_prev, mut g_prev, mut gtd_prev) = (0.0, f, g.clone(), gtd);
        let mut done = false;
        let mut ls_iter = 0;
        // Bracketing: points (t, f, g, gtd); one point when the Wolfe conditions already hold.
        let mut bracket: Vec<Point<F>> = Vec::new();
        while ls_iter < max_ls {
            if f_new > f + C1 * t * gtd || (ls_iter > 1 && f_new >= f_prev) {
                bracket =
                    vec![Point::new(t_prev, f_prev, g_prev, gtd_prev), Point::new(t, f_new, g_new.clone(), gtd_new)];
                break;
            }
            if gtd_new.abs() <= -C2 * gtd {
                bracket = vec![Point::new(t, f_new, g_new.clone(), gtd_new)];
                done = true;
                break;
            }
            if gtd_new >= 0.0 {
                bracket =
                    vec![Point::new(t_prev, f_prev, g_prev, gtd_prev), Point::new(t, f_new, g_new.clone(), gtd_new)];
                break;
            }
            let (min_step, max_step) = (t + 0.01 * (t - t_prev), t * 10.0);
            let tmp = t;
            t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, Some((min_step, max_step)));
            (t_prev, f_prev, g_prev, gtd_prev) = (tmp, f_new, g_new, gtd_new);
            (f_new, g_new) = self.evaluate_at(eval, x, t, d);
            evals += 1;
            gtd_new = dot(&g_new, d);
            ls_iter += 1;
        }
        if ls_iter == max_ls {
            // Out of evaluations: PyTorch brackets [0, t] (its derivatives are never read then).
            bracket = vec![Point::new(0.0, f, g, f64::NAN), Point::new(t, f_new, g_new, f64::NAN)];
        }
        // Zoom: shrink the bracket until a point satisfies the conditions.
        let order = |b: &[Point<F>]| if b[0].f <= b[b.len() - 1].f { (0, 1) } else { (1, 0) };
        let (mut low, mut high) = order(&bracket);
        let mut insuf_progress = false;
        while !done && ls_iter < max_ls {
            let (b0, b1) = (&bracket[0], &bracket[1]);
            if (b1.t - b0.t).abs() * d_norm < tolerance_change {
                break;
            }
            t = cubic_interpolate(b0.t, b0.f, b0.gtd, b1.t, b1.f, b1.gtd, None);
            let (hi, lo) = (py_max(b0.t, b1.t), py_min(b0.t, b1.t));
            let eps = 0.1 * (hi - lo);
            if py_min(hi - t, t - lo) < eps {
                if insuf_progress || t >= hi || t <= lo {
                    t = if (t - hi).abs() < (t - lo).abs() { hi - eps } else { lo + eps };
                    insuf_progress = false;
                } else {
                    insuf_progress = true;
                }
            } else {
                insuf_progress = false;
            }
            let (f_new, g_new) = self.evaluate_at(eval, x, t, d);
            evals += 1;
            let gtd_new = dot(&g_new, d);
            ls_iter += 1;
            if f_new > f + C1 * t * gtd || f_new >= bracket[low].f {
                bracket[high] = Point::new(t, f_new, g_new, gtd_new);
                (low, high) = order(&bracket);
            } else {
                if gtd_new.abs() <= -C2 * gtd {
                    done = true;
                } else if gtd_new * (bracket[high].t - bracket[low].t) >= 0.0 {
                    bracket[high] = bracket[low].clone();
                }
                bracket[low] = Point::new(t, f_new, g_new, gtd_new);
            }
        }
        let best = bracket.swap_remove(low);
        Found { t: best.t, f: best.f, g: best.g, evals }
    }

    /// Reads the state entries `state.0.0.*`, checking them against this optimizer.
    fn parse_state(&self, saved: &BTreeMap<String, Tensor<F>>) -> Result<State<F>, OptimError> {
        let n = self.numel();
        let key = |name: &str| format!("state.0.0.{name}");
        let mut used = HashSet::new();
        let mut get = |name: &str, shape: Option<&[usize]>| -> Result<Option<Tensor<F>>, OptimError> {
            let k = key(name);
            let Some(t) = saved.get(&k) else { return Ok(None) };
            used.insert(k.clone());
            if let Some(shape) = shape {
                if t.shape() != shape {
                    return Err(OptimError::ShapeMismatch {
                        key: k,
                        expected: shape.to_vec(),
                        found: t.shape().to_vec(),
                    });
                }
            }
            all_finite(t).map_err(|reason| OptimError::InvalidValue { key: k, reason })?;
            Ok(Some(t.clone()))
        };
        let count = |t: Option<Tensor<F>>, name: &str| -> Result<u64, OptimError> {
            let t = t.ok_or_else(|| OptimError::MissingKey(key(name)))?;
            parse_count(Element::to_f64(t.item()), name)
                .map_err(|reason| OptimError::InvalidValue { key: key(name), reason })
        };
        let Some(func_evals) = get("func_evals", Some(&[]))? else {
            // No state at all: a fresh optimizer, if nothing else is there either.
            return match saved.keys().next() {
                None => Ok(State { func_evals: 0, n_iter: 0, last: None, history: VecDeque::new() }),
                Some(k) if k.starts_with("state.0.0.") => Err(OptimError::MissingKey(key("func_evals"))),
                Some(k) => Err(OptimError::UnexpectedKey(k.clone())),
            };
        };
        let func_evals = count(Some(func_evals), "func_evals")?;
        let n_iter = count(get("n_iter", Some(&[]))?, "n_iter")?;
        let mut state = State { func_evals, n_iter, last: None, history: VecDeque::new() };
        if n_iter > 0 {
            let need = |t: Option<Tensor<F>>, name: &str| t.ok_or_else(|| OptimError::MissingKey(key(name)));
            let d = need(get("d", Some(&[n]))?, "d")?.to_vec();
            let t = need(get("t", Some(&[]))?, "t")?.item();
            let h_diag = need(get("H_diag", Some(&[]))?, "H_diag")?.item();
            let prev_flat_grad = need(get("prev_flat_grad", Some(&[n]))?, "prev_flat_grad")?.to_vec();
            let ro = need(get("ro", None)?, "ro")?;
            let k = ro.numel();
            if ro.shape() != [k] || k > self.options.history_size {
                return Err(OptimError::ShapeMismatch {
                    key: key("ro"),
                    expected: vec![k.min(self.options.history_size)],
                    found: ro.shape().to_vec(),
                });
            }
            let dirs = need(get("old_dirs", Some(&[k, n]))?, "old_dirs")?.to_vec();
            let stps = need(get("old_stps", Some(&[k, n]))?, "old_stps")?.to_vec();
            let positive = |v: F, name: &str| {
                let ok = v > F::zero();
                let reason = format!("{} must be positive", Element::to_f64(v));
                if ok {
                    Ok(())
                } else {
                    Err(OptimError::InvalidValue { key: key(name), reason })
                }
            };
            if t < F::zero() {
                let reason = format!("step length {} is negative", Element::to_f64(t));
                return Err(OptimError::InvalidValue { key: key("t"), reason });
            }
            positive(h_diag, "H_diag")?;
            for (i, r) in ro.to_vec().into_iter().enumerate() {
                positive(r, "ro").map_err(|e| match e {
                    OptimError::InvalidValue { key, reason } => {
                        OptimError::InvalidValue { key, reason: format!("element {i}: {reason}") }
                    }
                    other => other,
                })?;
                let (y, s) = (dirs[i * n..(i + 1) * n].to_vec(), stps[i * n..(i + 1) * n].to_vec());
                state.history.push_back(Pair { y, s, ro: r });
            }
            state.last = Some(Last { d, t, prev_flat_grad, h_diag });
        }
        if let Some(k) = saved.keys().find(|k| !used.contains(*k)) {
            return Err(OptimError::UnexpectedKey(k.clone()));
        }
        Ok(state)
    }
}

/// A line-search trial point.
#[derive(Clone)]
struct Point<F> {
    t: f64,
    f: f64,
    g: Vec<F>,
    gtd: f64,
}

impl<F> Point<F> {
    fn new(t: f64, f: f64, g: Vec<F>, gtd: f64) -> Self {
        Point { t, f, g, gtd }
    }
}

/// What the line search found: step, loss, gradient, and evaluations spent.
struct Found<F> {
    t: f64,
    f: f64,
    g: Vec<F>,
    evals: usize,
}

/// Python's `max(a, b)`: `a` unless `b` is larger (so a NaN `a` stays NaN).
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// Python's `min(a, b)`: `a` unless `b` is smaller.
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// The minimiser of the cubic through two points with values and derivatives, clamped to
/// `bounds` (default: between the points); the middle of the bounds if the cubic has none.
fn cubic_interpolate(x1: f64, f1: f64, g1: f64, x2: f64, f2: f64, g2: f64, bounds: Option<(f64, f64)>) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        py_min(py_max(min_pos, lo), hi)
    } else {
        (lo + hi) / 2.0
    }
}

fn dot<F: Float>(a: &[F], b: &[F]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| Element::to_f64(x) * Element::to_f64(y)).sum()
}

fn sum_abs<F: Float>(v: &[F]) -> f64 {
    v.iter().map(|&x| Element::to_f64(x).abs()).sum()
}

fn max_abs_f<F: Float>(v: &[F]) -> F {
    v.iter().fold(F::zero(), |m, &x| if x.abs() > m || x.is_nan() { x.abs() } else { m })
}

fn max_abs<F: Float>(v: &[F]) -> f64 {
    Element::to_f64(max_abs_f(v))
}

/// `y += a * x`.
fn axpy<F: Float>(y: &mut [F], a: F, x: &[F]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
}

impl<F: Float> Optimizer<F> for Lbfgs<F> {
    /// One L-BFGS iteration from the gradients given, for `max_iter == 1` without a line
    /// search (PyTorch's `LBFGS(max_iter=1)`, which evaluates the closure once per step): a
    /// quasi-Newton step that a training loop can drive like any optimizer.
    ///
    /// # Panics
    /// If `max_iter` is not 1 or a line search is set: those need to re-evaluate the loss,
    /// through [`Optimizer::step_closure`].
    #[track_caller]
    fn step(&mut self, grads: &Grads<F>) {
        assert!(
            self.options.max_iter == 1 && self.options.line_search.is_none(),
            "Lbfgs::step: a step from given gradients is one iteration without line search, but max_iter is {} \
             and the line search {:?}: call step_closure with a closure that re-evaluates the loss",
            self.options.max_iter,
            self.options.line_search
        );
        let mut once = Some(grads.clone());
        self.run(&mut || (f64::NAN, once.take().expect("one evaluation per step with max_iter 1")));
    }

    fn step_closure(&mut self, closure: &mut dyn FnMut() -> Var<F>) -> f64 {
        self.run(&mut || {
            let loss = enable_grad(&mut *closure);
            (Element::to_f64(loss.item()), loss.backward())
        })
    }

    fn lr(&self) -> f64 {
        self.options.lr
    }

    #[track_caller]
    fn set_lr(&mut self, lr: f64) {
        if let Err(e) = non_negative("Lbfgs", "lr", lr) {
            panic!("Optimizer::set_lr: {e}");
        }
        self.options.lr = lr;
    }

    fn state_dict(&self) -> BTreeMap<String, Tensor<F>> {
        let mut out = BTreeMap::new();
        if self.state.func_evals == 0 {
            return out;
        }
        let key = |name: &str| format!("state.0.0.{name}");
        let count = |c: u64| Tensor::scalar(F::from_f64(c as f64));
        out.insert(key("func_evals"), count(self.state.func_evals));
        out.insert(key("n_iter"), count(self.state.n_iter));
        if let Some(last) = &self.state.last {
            let (n, k) = (last.d.len(), self.state.history.len());
            out.insert(key("d"), Tensor::from_vec(last.d.clone(), &[n]));
            out.insert(key("t"), Tensor::scalar(last.t));
            out.insert(key("H_diag"), Tensor::scalar(last.h_diag));
            out.insert(key("prev_flat_grad"), Tensor::from_vec(last.prev_flat_grad.clone(), &[n]));
            let history = &self.state.history;
            let dirs = history.iter().flat_map(|h| h.y.iter().copied()).collect();
            let stps = history.iter().flat_map(|h| h.s.iter().copied()).collect();
            out.insert(key("old_dirs"), Tensor::from_vec(dirs, &[k, n]));
            out.insert(key("old_stps"), Tensor::from_vec(stps, &[k, n]));
            out.insert(key("ro"), Tensor::from_vec(history.iter().map(|h| h.ro).collect(), &[k]));
        }
        out
    }

    fn load_state_dict(&mut self, state: &BTreeMap<String, Tensor<F>>) -> Result<(), OptimError> {
        self.state = self.parse_state(state)?;
        Ok(())
    }
}
