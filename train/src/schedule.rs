//! Learning-rate schedules as callbacks: an optim [`LrScheduler`] advanced after every epoch or
//! every optimizer step ([`LrSchedule`]), or PyTorch's [`ReduceLROnPlateau`] fed a monitored
//! value at each epoch's end ([`PlateauSchedule`]).
//!
//! Both follow PyTorch's order: the schedule's first value is written into the optimizer before
//! the first step, and `scheduler.step()` comes after the optimizer's steps of an epoch (or
//! after each step). A resumed run restores the schedule's position.

use ferrograd_optim::{LrScheduler, Optimizer, ReduceLROnPlateau};
use ferrograd_tensor::Float;
use serde_json::{json, Value};

use crate::logs::{from_number, number};
use crate::{Callback, CallbackState, Context, Control, EpochLogs, StepLogs, TrainError};

/// Writes the schedule's current learning rate (and momentum, for a schedule that cycles it)
/// into the optimizer, after advancing it one step if `advance`. Every schedule the Learner
/// drives goes through here, so binding schedules to their optimizer changes only this body.
fn drive<F: Float>(sched: &mut Box<dyn LrScheduler + Send>, opt: &mut dyn Optimizer<F>, advance: bool) {
    if advance {
        sched.step();
    }
    sched.apply_to(opt);
}

/// When an [`LrSchedule`] advances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    /// After each epoch (StepLR, CosineAnnealingLR over epochs).
    Epoch,
    /// After each optimizer step (OneCycleLR, warm-up over steps).
    Step,
}

/// Drives an [`LrScheduler`]: its learning rate before the first step, then one
/// `scheduler.step()` per epoch or per optimizer step.
///
/// ```
/// use ferrograd_optim::{CosineAnnealingLR, OneCycleLR};
/// use ferrograd_train::LrSchedule;
/// let per_epoch = LrSchedule::per_epoch(CosineAnnealingLR::new(1e-3, 10, 0.0));
/// let per_step = LrSchedule::per_step(OneCycleLR::new(1e-2, 10 * 1875));
/// # let _ = (per_epoch, per_step);
/// ```
pub struct LrSchedule {
    sched: Box<dyn LrScheduler + Send>,
    every: Every,
}

impl LrSchedule {
    /// A schedule advanced after every epoch.
    pub fn per_epoch(sched: impl LrScheduler + Send + 'static) -> Self {
        LrSchedule { sched: Box::new(sched), every: Every::Epoch }
    }

    /// A schedule advanced after every optimizer step.
    pub fn per_step(sched: impl LrScheduler + Send + 'static) -> Self {
        LrSchedule { sched: Box::new(sched), every: Every::Step }
    }

    /// When it advances.
    pub fn every(&self) -> Every {
        self.every
    }
}

impl<F: Float> Callback<F> for LrSchedule {
    fn name(&self) -> String {
        format!("LrSchedule({:?})", self.every)
    }

    fn on_train_begin(&mut self, ctx: &mut Context<'_, F>) -> Result<(), TrainError> {
        drive(&mut self.sched, ctx.optimizer, false);
        Ok(())
    }

    fn on_step_end(&mut self, ctx: &mut Context<'_, F>, _step: &StepLogs) -> Result<(), TrainError> {
        if self.every == Every::Step {
            drive(&mut self.sched, ctx.optimizer, true);
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, ctx: &mut Context<'_, F>, _logs: &EpochLogs) -> Result<Control, TrainError> {
        if self.every == Every::Epoch {
            drive(&mut self.sched, ctx.optimizer, true);
        }
        Ok(Control::Continue)
    }

    fn state(&self) -> CallbackState<F> {
        CallbackState { json: json!({ "epoch": self.sched.epoch() }), tensors: Default::default() }
    }

    fn load_state(&mut self, state: CallbackState<F>) -> Result<(), String> {
        let epoch = state.json.get("epoch").and_then(Value::as_u64).ok_or("no `epoch`")?;
        self.sched.set_epoch(epoch);
        Ok(())
    }
}

/// PyTorch's [`ReduceLROnPlateau`] fed the monitored value of each epoch's logs
/// (`val_loss` by default in PyTorch recipes).
///
/// ```
/// use ferrograd_optim::{PlateauOptions, ReduceLROnPlateau};
/// use ferrograd_train::PlateauSchedule;
/// let sched = PlateauSchedule::new(ReduceLROnPlateau::new(1e-3, PlateauOptions::default()), "val_loss");
/// # let _ = sched;
/// ```
pub struct PlateauSchedule {
    start: ReduceLROnPlateau,
    current: ReduceLROnPlateau,
    monitor: String,
    seen: Vec<f64>,
}

impl PlateauSchedule {
    /// Watches `monitor` in the epoch logs.
    pub fn new(sched: ReduceLROnPlateau, monitor: impl Into<String>) -> Self {
        PlateauSchedule { start: sched.clone(), current: sched, monitor: monitor.into(), seen: Vec::new() }
    }

    /// The schedule as it stands.
    pub fn scheduler(&self) -> &ReduceLROnPlateau {
        &self.current
    }
}

impl<F: Float> Callback<F> for PlateauSchedule {
    fn name(&self) -> String {
        format!("PlateauSchedule({})", self.monitor)
    }

    fn on_train_begin(&mut self, ctx: &mut Context<'_, F>) -> Result<(), TrainError> {
        ctx.optimizer.set_lr(self.current.get_lr());
        Ok(())
    }

    fn on_epoch_end(&mut self, ctx: &mut Context<'_, F>, logs: &EpochLogs) -> Result<Control, TrainError> {
        let value = logs.get(&self.monitor).ok_or_else(|| TrainError::MissingLog {
            callback: Callback::<F>::name(self),
            monitor: self.monitor.clone(),
            available: logs.names(),
        })?;
        let before = self.current.get_lr();
        let lr = self.current.step(value);
        self.seen.push(value);
        ctx.optimizer.set_lr(lr);
        if lr != before {
            ctx.say(format!(
                "epoch {}: {} has not improved on {} for too long; learning rate {before:.3e} -> {lr:.3e}",
                ctx.epoch + 1,
                self.monitor,
                self.current.best()
            ));
        }
        Ok(Control::Continue)
    }

    // ReduceLROnPlateau keeps its counters private: the state is the values it was fed, replayed
    // from the initial schedule on load (it is deterministic).
    fn state(&self) -> CallbackState<F> {
        let seen: Vec<Value> = self.seen.iter().map(|&v| number(v)).collect();
        CallbackState { json: json!({ "seen": seen }), tensors: Default::default() }
    }

    fn load_state(&mut self, state: CallbackState<F>) -> Result<(), String> {
        let seen = state
            .json
            .get("seen")
            .and_then(Value::as_array)
            .ok_or("no `seen`")?
            .iter()
            .map(from_number)
            .collect::<Option<Vec<f64>>>()
            .ok_or("`seen` holds a value that is not a number")?;
        self.current = self.start.clone();
        for &v in &seen {
            self.current.step(v);
        }
        self.seen = seen;
        Ok(())
    }
}
