//! [`ProgressBar`]: an indicatif bar per epoch on stderr with the running loss, hidden when
//! stderr is not a terminal (CI logs and redirected output stay clean).

use ferrograd_tensor::Float;
use indicatif::{ProgressBar as Bar, ProgressStyle};

use crate::{Callback, Context, Control, EpochLogs, History, StepLogs, TrainError};

/// A progress bar over each epoch's batches: `epoch 3/10 ████░░ 812/1875 loss 0.1234 [eta]`.
/// It is cleared at the epoch's end, so lines printed there (an `on_epoch_end` closure added
/// after it) are not mixed with it.
pub struct ProgressBar {
    bar: Option<Bar>,
    refresh_every: u64,
}

impl Default for ProgressBar {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressBar {
    /// A bar whose loss refreshes every 50 steps.
    pub fn new() -> Self {
        ProgressBar { bar: None, refresh_every: 50 }
    }

    /// Refreshes the shown loss every `n` steps.
    pub fn refresh_every(mut self, n: u64) -> Self {
        self.refresh_every = n.max(1);
        self
    }

    /// Runs `f` with the bar hidden (for printing without tearing it).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

impl<F: Float> Callback<F> for ProgressBar {
    fn name(&self) -> String {
        "ProgressBar".into()
    }

    fn main_process_only(&self) -> bool {
        true
    }

    fn on_epoch_begin(&mut self, ctx: &mut Context<'_, F>) -> Result<(), TrainError> {
        // `Bar::new` draws to stderr and hides itself when stderr is not a terminal.
        let bar = Bar::new(ctx.batches as u64);
        let style = ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} loss {msg} [{elapsed}<{eta}]")
            .expect("a valid template");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {}/{}", ctx.epoch + 1, ctx.epochs));
        bar.set_position(ctx.batch as u64);
        self.bar = Some(bar);
        Ok(())
    }

    fn on_step_end(&mut self, _ctx: &mut Context<'_, F>, step: &StepLogs) -> Result<(), TrainError> {
        if let Some(bar) = &self.bar {
            bar.set_position(step.batch as u64);
            if step.global_step % self.refresh_every == 1 || self.refresh_every == 1 {
                bar.set_message(format!("{:.4}", step.running_loss));
            }
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, _ctx: &mut Context<'_, F>, _logs: &EpochLogs) -> Result<Control, TrainError> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, _ctx: &mut Context<'_, F>, _history: &History) -> Result<(), TrainError> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        Ok(())
    }
}
