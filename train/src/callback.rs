//! Callbacks: everything around the training loop that is not the step itself.
//!
//! The [`Learner`](crate::Learner)'s loop is small; early stopping, checkpoints, schedules,
//! loggers, the progress bar and the NaN guard are [`Callback`]s with a few hooks, called in the
//! order they were added:
//!
//! | hook | when |
//! |---|---|
//! | [`on_train_begin`](Callback::on_train_begin) | once, before the first epoch (after a resume has restored everything) |
//! | [`on_epoch_begin`](Callback::on_epoch_begin) | before each epoch's first batch (or the batch a resumed run starts at) |
//! | [`on_after_backward`](Callback::on_after_backward) | each optimizer step, after backward (and accumulation and gradient sync), before clipping and the update: may skip the update |
//! | [`on_step_end`](Callback::on_step_end) | after each optimizer step |
//! | [`on_epoch_end`](Callback::on_epoch_end) | after validation, with the epoch's logs: may stop the run |
//! | [`on_train_end`](Callback::on_train_end) | once, after the last epoch or a stop |
//! | [`on_save`](Callback::on_save) | before the run directory is saved (flush logs: a resumed run continues from this point) |
//!
//! A callback whose state matters for a resumed run ([`EarlyStopping`](crate::EarlyStopping)'s
//! best value, a schedule's position) saves it through [`Callback::state`].

use std::collections::BTreeMap;

use ferrograd_autograd::{Grads, Param};
use ferrograd_nn::Module;
use ferrograd_optim::Optimizer;
use ferrograd_tensor::{Float, Tensor};
use serde_json::Value;

use crate::{EpochLogs, History, StepLogs, TrainError};

/// What the hooks see of the run: the model, the optimizer (a schedule sets its learning rate)
/// and where the run is.
pub struct Context<'c, F: Float = f32> {
    /// The model being trained.
    pub model: &'c dyn Module<F>,
    /// The optimizer.
    pub optimizer: &'c mut dyn Optimizer<F>,
    /// The current epoch, counted from 0.
    pub epoch: usize,
    /// The epoch the run trains up to (exclusive).
    pub epochs: usize,
    /// The next batch of the epoch (batches done so far in it).
    pub batch: usize,
    /// The batches of the current epoch.
    pub batches: usize,
    /// Optimizer steps taken in the whole run.
    pub global_step: u64,
    /// This process's rank in a data-parallel run (0 otherwise).
    pub rank: usize,
    /// The number of processes in a data-parallel run (1 otherwise).
    pub world_size: usize,
    /// Whether this run continues one restored from a run directory.
    pub resumed: bool,
    /// The logs of every epoch so far (including the one ending, in `on_epoch_end`).
    pub history: &'c [EpochLogs],
    pub(crate) messages: &'c mut Vec<String>,
    pub(crate) echo: bool,
}

impl<F: Float> Context<'_, F> {
    /// Records a message in the run's [`History::messages`] and prints it to stderr (unless the
    /// Learner is quiet).
    pub fn say(&mut self, message: impl Into<String>) {
        let message = message.into();
        if self.echo {
            eprintln!("{message}");
        }
        self.messages.push(message);
    }

    /// Whether this is the process that writes logs and checkpoints (rank 0).
    pub fn is_main_process(&self) -> bool {
        self.rank == 0
    }
}

/// Whether the run goes on after an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Control {
    /// Train the next epoch.
    #[default]
    Continue,
    /// Stop after this epoch (the other callbacks still see it).
    Stop,
}

/// What to do with a step's gradients after [`Callback::on_after_backward`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StepAction {
    /// Clip and apply them.
    #[default]
    Apply,
    /// Drop them: no update this step (the step still counts).
    Skip,
}

/// The part of a callback's state a resumed run needs: numbers and names as JSON, and tensors
/// (kept weights) saved beside the model.
#[derive(Clone, Debug, Default)]
pub struct CallbackState<F: Float = f32> {
    /// Anything JSON can hold.
    pub json: Value,
    /// Named tensors.
    pub tensors: BTreeMap<String, Tensor<F>>,
}

/// A hook into the [`Learner`](crate::Learner)'s loop. Every method has a default that does
/// nothing; implement the ones you need.
///
/// ```
/// use ferrograd_train::{Callback, Context, Control, EpochLogs, TrainError};
/// /// Stops once the validation accuracy reaches a target.
/// struct StopAt(f64);
/// impl Callback for StopAt {
///     fn name(&self) -> String {
///         "StopAt".into()
///     }
///     fn on_epoch_end(&mut self, ctx: &mut Context<'_>, logs: &EpochLogs) -> Result<Control, TrainError> {
///         match logs.get("val_accuracy") {
///             Some(acc) if acc >= self.0 => {
///                 ctx.say(format!("target accuracy reached at epoch {}", ctx.epoch));
///                 Ok(Control::Stop)
///             }
///             _ => Ok(Control::Continue),
///         }
///     }
/// }
/// ```
pub trait Callback<F: Float = f32> {
    /// A name for messages and for the callback's entry in a run directory.
    fn name(&self) -> String;

    /// Before the first epoch.
    fn on_train_begin(&mut self, _ctx: &mut Context<'_, F>) -> Result<(), TrainError> {
        Ok(())
    }

    /// Before each epoch.
    fn on_epoch_begin(&mut self, _ctx: &mut Context<'_, F>) -> Result<(), TrainError> {
        Ok(())
    }

    /// After backward, with the step's gradients (which it may change) and its loss, before
    /// clipping and the optimizer update. `params` are the model's named parameters.
    fn on_after_backward(
        &mut self,
        _ctx: &mut Context<'_, F>,
        _loss: f64,
        _grads: &mut Grads<F>,
        _params: &[(String, Param<F>)],
    ) -> Result<StepAction, TrainError> {
        Ok(StepAction::Apply)
    }

    /// After each optimizer step.
    fn on_step_end(&mut self, _ctx: &mut Context<'_, F>, _step: &StepLogs) -> Result<(), TrainError> {
        Ok(())
    }

    /// After each epoch's validation, with its logs.
    fn on_epoch_end(&mut self, _ctx: &mut Context<'_, F>, _logs: &EpochLogs) -> Result<Control, TrainError> {
        Ok(Control::Continue)
    }

    /// After the last epoch (or a stop), with the whole history.
    fn on_train_end(&mut self, _ctx: &mut Context<'_, F>, _history: &History) -> Result<(), TrainError> {
        Ok(())
    }

    /// Before the Learner saves its run directory (every [`Learner::save_every`] steps and
    /// after each epoch): whatever was logged up to now must be on disk, since a run resumed
    /// from this save will not log it again.
    ///
    /// [`Learner::save_every`]: crate::Learner::save_every
    fn on_save(&mut self, _ctx: &mut Context<'_, F>) -> Result<(), TrainError> {
        Ok(())
    }

    /// What a resumed run needs to continue where this callback was.
    fn state(&self) -> CallbackState<F> {
        CallbackState::default()
    }

    /// Restores [`Callback::state`]; an error says what does not fit.
    fn load_state(&mut self, _state: CallbackState<F>) -> Result<(), String> {
        Ok(())
    }

    /// Whether only the main process (rank 0) of a data-parallel run calls this callback
    /// (loggers, checkpoints, the progress bar); the others skip it.
    fn main_process_only(&self) -> bool {
        false
    }
}

/// A closure called at every epoch's end (see [`Learner::on_epoch_end`](crate::Learner::on_epoch_end)).
pub(crate) struct EpochEndFn<C>(pub(crate) C);

impl<F: Float, C: FnMut(&mut Context<'_, F>, &EpochLogs)> Callback<F> for EpochEndFn<C> {
    fn name(&self) -> String {
        "on_epoch_end".into()
    }
    fn on_epoch_end(&mut self, ctx: &mut Context<'_, F>, logs: &EpochLogs) -> Result<Control, TrainError> {
        (self.0)(ctx, logs);
        Ok(Control::Continue)
    }
}
