//! [`TerminateOnNaN`]: no silent NaN. A non-finite loss or gradient stops training with an
//! error naming the step (Keras' `TerminateOnNaN`, but checked before the update, so the weights
//! stay finite), or, where the user asks, the step is skipped and said so. A loss that explodes
//! while staying finite (a learning rate far too high) stops the run too.
//!
//! The [`Learner`](crate::Learner) installs one by default.

use ferrograd_autograd::{Grads, Param};
use ferrograd_tensor::{Element, Float, Tensor};
use serde_json::{json, Value};

use crate::logs::{from_number, number};
use crate::{Callback, CallbackState, Context, StepAction, TrainError};

/// What to do with a step whose loss or gradient is NaN or infinite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnNonFinite {
    /// Stop training with [`TrainError::NonFinite`] (Keras' `TerminateOnNaN`).
    #[default]
    Stop,
    /// Skip the update (as PyTorch's `GradScaler` skips a step with infinite gradients), count
    /// it, and say so at the first skip of each epoch and in the epoch's `skipped_steps` log.
    Skip,
}

/// Checks every step's loss and gradients before the update.
///
/// ```
/// use ferrograd_train::{OnNonFinite, TerminateOnNaN};
/// let guard = TerminateOnNaN::new(); // stop on NaN/inf, check gradients, stop on divergence
/// assert_eq!(guard.on_non_finite, OnNonFinite::Stop);
/// let lenient = TerminateOnNaN::new().skip().divergence_factor(None);
/// assert_eq!(lenient.on_non_finite, OnNonFinite::Skip);
/// ```
#[derive(Clone, Debug)]
pub struct TerminateOnNaN {
    /// Stop or skip.
    pub on_non_finite: OnNonFinite,
    /// Also check every gradient element (not only the loss).
    pub check_gradients: bool,
    /// Stop when the running mean of the loss (an exponential average over about 10 steps)
    /// exceeds this many times the first step's loss; `None` turns the check off. It applies
    /// only when the first loss is positive. The default, 1e4, never fires in a healthy run
    /// from a fresh initialisation and fires within a few steps of an exploding one.
    pub divergence_factor: Option<f64>,
    first_loss: Option<f64>,
    running: f64,
    skipped_in_epoch: u64,
    skipped_total: u64,
}

impl Default for TerminateOnNaN {
    fn default() -> Self {
        Self::new()
    }
}

impl TerminateOnNaN {
    /// Stops on a non-finite loss or gradient, and on a loss 1e4 times its first value.
    pub fn new() -> Self {
        TerminateOnNaN {
            on_non_finite: OnNonFinite::Stop,
            check_gradients: true,
            divergence_factor: Some(1e4),
            first_loss: None,
            running: f64::NAN,
            skipped_in_epoch: 0,
            skipped_total: 0,
        }
    }

    /// Skips steps with a non-finite loss or gradient instead of stopping.
    pub fn skip(mut self) -> Self {
        self.on_non_finite = OnNonFinite::Skip;
        self
    }

    /// Sets [`TerminateOnNaN::check_gradients`].
    pub fn check_gradients(mut self, check: bool) -> Self {
        self.check_gradients = check;
        self
    }

    /// Sets [`TerminateOnNaN::divergence_factor`].
    pub fn divergence_factor(mut self, factor: Option<f64>) -> Self {
        self.divergence_factor = factor;
        self
    }

    /// Steps skipped in the whole run.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_total
    }

    fn non_finite<F: Float>(
        &mut self,
        ctx: &mut Context<'_, F>,
        what: String,
        value: f64,
    ) -> Result<StepAction, TrainError> {
        match self.on_non_finite {
            OnNonFinite::Stop => Err(TrainError::NonFinite {
                epoch: ctx.epoch,
                step: ctx.global_step + 1,
                batch: ctx.batch.saturating_sub(1),
                what,
                value,
            }),
            OnNonFinite::Skip => {
                if self.skipped_in_epoch == 0 {
                    ctx.say(format!(
                        "epoch {}, step {}: {what} is {value}; update skipped (TerminateOnNaN in skip mode; \
                         the epoch's count is logged as skipped_steps)",
                        ctx.epoch + 1,
                        ctx.global_step + 1
                    ));
                }
                self.skipped_in_epoch += 1;
                self.skipped_total += 1;
                Ok(StepAction::Skip)
            }
        }
    }
}

/// Whether every element is finite: `x * 0` is 0 for a finite `x` and NaN otherwise, summed in
/// independent lanes so the loop vectorises (this runs on every gradient of every step).
pub(crate) fn all_finite<F: Float>(values: &[F]) -> bool {
    const LANES: usize = 16;
    let mut acc = [F::zero(); LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += x * F::zero();
        }
    }
    chunks.remainder().iter().all(|x| x.is_finite()) && acc.iter().all(|a| *a == F::zero())
}

/// The first non-finite element of a tensor, if any.
///
/// A view's elements all lie in its storage, so a finite storage means a finite view: a
/// transposed gradient (a linear layer's weight gradient is one) is checked in place, without
/// the copy `contiguous()` would make (that copy cost 15% of the main job's time). Only a view
/// of much less than its storage, or one whose storage holds a non-finite value, is copied.
fn first_non_finite<F: Float>(t: &Tensor<F>) -> Option<f64> {
    let in_place = match t.as_slice() {
        Some(values) => Some(values),
        None if t.storage().len() <= 2 * t.numel() => Some(t.storage()),
        None => None,
    };
    if in_place.is_some_and(all_finite) {
        return None;
    }
    let contiguous = t.contiguous();
    let values = contiguous.as_slice().expect("contiguous() is contiguous");
    values.iter().find(|x| !x.is_finite()).map(|&x| Element::to_f64(x))
}

impl<F: Float> Callback<F> for TerminateOnNaN {
    fn name(&self) -> String {
        "TerminateOnNaN".into()
    }

    fn on_epoch_begin(&mut self, _ctx: &mut Context<'_, F>) -> Result<(), TrainError> {
        self.skipped_in_epoch = 0;
        Ok(())
    }

    fn on_after_backward(
        &mut self,
        ctx: &mut Context<'_, F>,
        loss: f64,
        grads: &mut Grads<F>,
        params: &[(String, Param<F>)],
    ) -> Result<StepAction, TrainError> {
        if !loss.is_finite() {
            return self.non_finite(ctx, "the loss".into(), loss);
        }
        if self.check_gradients {
            for (name, p) in params {
                if let Some(value) = grads.get_param(p).and_then(first_non_finite) {
                    return self.non_finite(ctx, format!("the gradient of `{name}`"), value);
                }
            }
        }
        if let (Some(factor), Some(first)) = (self.divergence_factor, self.first_loss.or(Some(loss))) {
            self.first_loss = Some(first);
            self.running = if self.running.is_nan() { loss } else { 0.9 * self.running + 0.1 * loss };
            if first > 0.0 && self.running > factor * first {
                return Err(TrainError::Diverged {
                    epoch: ctx.epoch,
                    step: ctx.global_step + 1,
                    loss: self.running,
                    first,
                    factor,
                });
            }
        }
        Ok(StepAction::Apply)
    }

    fn state(&self) -> CallbackState<F> {
        CallbackState {
            json: json!({
                "first_loss": self.first_loss.map(number),
                "running": number(self.running),
                "skipped_in_epoch": self.skipped_in_epoch,
                "skipped_total": self.skipped_total,
            }),
            tensors: Default::default(),
        }
    }

    fn load_state(&mut self, state: CallbackState<F>) -> Result<(), String> {
        let j = &state.json;
        self.first_loss = match j.get("first_loss") {
            Some(Value::Null) => None,
            Some(v) => Some(from_number(v).ok_or("`first_loss` is not a number")?),
            None => return Err("no `first_loss`".into()),
        };
        self.running = j.get("running").and_then(from_number).ok_or("no `running`")?;
        self.skipped_in_epoch = j.get("skipped_in_epoch").and_then(Value::as_u64).ok_or("no `skipped_in_epoch`")?;
        self.skipped_total = j.get("skipped_total").and_then(Value::as_u64).ok_or("no `skipped_total`")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_sees_every_position() {
        for len in [0usize, 1, 15, 16, 17, 40] {
            let clean = vec![1.5f32; len];
            assert!(all_finite(&clean));
            for i in 0..len {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut v = clean.clone();
                    v[i] = bad;
                    assert!(!all_finite(&v), "len {len}, {bad} at {i}");
                }
            }
        }
        assert!(all_finite(&[f64::MAX, f64::MIN, 0.0]));
    }

    #[test]
    fn views_are_checked_by_their_own_elements() {
        let mut v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let t = Tensor::from_vec(v.clone(), &[3, 4]);
        assert_eq!(first_non_finite(&t.t()), None); // transposed: checked in place
        v[7] = f32::NAN;
        let bad = Tensor::from_vec(v, &[3, 4]);
        assert!(first_non_finite(&bad.t()).unwrap().is_nan());
        // The NaN lies in the storage but outside the view: the view is finite.
        assert_eq!(first_non_finite(&bad.narrow(0, 0, 1)), None);
        assert_eq!(first_non_finite(&bad.narrow(1, 0, 2).t()), None);
        assert!(first_non_finite(&bad.narrow(1, 3, 1)).unwrap().is_nan());
        let inf = Tensor::from_vec(vec![1.0f64, f64::NEG_INFINITY], &[2]);
        assert_eq!(first_non_finite(&inf.narrow(0, 1, 1)), Some(f64::NEG_INFINITY));
    }
}
