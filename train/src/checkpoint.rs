//! [`ModelCheckpoint`]: the model's weights saved as the run goes, the last N epochs and the
//! best epoch by a monitored value.
//!
//! Files are safetensors checkpoints of the model's state dict ([`ferrograd_nn::load_module`]
//! reads them, and so does PyTorch's `safetensors.torch.load_file`), written through nn's atomic
//! writer: a crash in the middle of a write leaves the previous file whole. In the checkpoint
//! directory (which should be the run's own):
//!
//! - `epoch-NNNN.safetensors`: the weights after epoch NNNN (from 0); only the `keep_last`
//!   most recent are kept;
//! - `best.safetensors` and `best.json` (`{"epoch", "monitor", "value"}`): the weights of the
//!   best epoch so far, with [`ModelCheckpoint::keep_best`].

use std::fs;
use std::path::{Path, PathBuf};

use ferrograd_nn::checkpoint::{write_atomic, CheckpointElement};
use ferrograd_nn::save_module;
use ferrograd_tensor::Float;
use serde_json::{json, Value};

use crate::early_stopping::{improves, resolve_mode, Mode};
use crate::{Callback, CallbackState, Context, Control, EpochLogs, TrainError};

/// Saves the model after epochs, keeping the last `keep_last` and the best by a monitored value.
///
/// ```
/// use ferrograd_train::early_stopping::Mode;
/// use ferrograd_train::ModelCheckpoint;
/// let ckpt = ModelCheckpoint::new("runs/mlp/checkpoints").keep_last(3).keep_best("val_accuracy", Mode::Auto);
/// assert_eq!(ckpt.epoch_path(7), std::path::Path::new("runs/mlp/checkpoints/epoch-0007.safetensors"));
/// ```
#[derive(Clone, Debug)]
pub struct ModelCheckpoint {
    dir: PathBuf,
    keep_last: usize,
    every: usize,
    best: Option<(String, Mode)>,
    best_value: Option<f64>,
    best_epoch: Option<usize>,
}

impl ModelCheckpoint {
    /// Saves into `dir` after every epoch, keeping only the last one.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModelCheckpoint { dir: dir.into(), keep_last: 1, every: 1, best: None, best_value: None, best_epoch: None }
    }

    /// How many epoch checkpoints to keep (0: none, only the best).
    pub fn keep_last(mut self, n: usize) -> Self {
        self.keep_last = n;
        self
    }

    /// Saves an epoch checkpoint after every `n`-th epoch (epochs `n - 1`, `2n - 1`, ...).
    pub fn every_n_epochs(mut self, n: usize) -> Self {
        self.every = n.max(1);
        self
    }

    /// Also keeps `best.safetensors`, the weights of the epoch with the best `monitor` (a name
    /// in the epoch logs, such as `val_loss`; [`Mode::Auto`] decides the direction from it as
    /// early stopping does). NaN and infinite values never count as best.
    pub fn keep_best(mut self, monitor: impl Into<String>, mode: Mode) -> Self {
        self.best = Some((monitor.into(), mode));
        self
    }

    /// The file of epoch `epoch`.
    pub fn epoch_path(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("epoch-{epoch:04}.safetensors"))
    }

    /// The file of the best epoch.
    pub fn best_path(&self) -> PathBuf {
        self.dir.join("best.safetensors")
    }

    /// The best value and its epoch so far.
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best_value.zip(self.best_epoch)
    }

    /// The epochs that have a checkpoint file in the directory, in order.
    ///
    /// # Errors
    /// The directory cannot be listed.
    pub fn saved_epochs(&self) -> Result<Vec<usize>, TrainError> {
        saved_epochs(&self.dir)
    }

    fn prune(&self, current: usize) -> Result<(), TrainError> {
        let ours: Vec<usize> = self.saved_epochs()?.into_iter().filter(|&e| e <= current).collect();
        for &e in &ours[..ours.len().saturating_sub(self.keep_last)] {
            let path = self.epoch_path(e);
            fs::remove_file(&path).map_err(|err| TrainError::io(&path, err))?;
        }
        Ok(())
    }
}

fn saved_epochs(dir: &Path) -> Result<Vec<usize>, TrainError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(dir, e)),
    };
    let mut epochs: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("epoch-")?.strip_suffix(".safetensors")?.parse().ok()
        })
        .collect();
    epochs.sort_unstable();
    Ok(epochs)
}

impl<F: Float + CheckpointElement> Callback<F> for ModelCheckpoint {
    fn name(&self) -> String {
        "ModelCheckpoint".into()
    }

    fn main_process_only(&self) -> bool {
        true
    }

    fn on_epoch_end(&mut self, ctx: &mut Context<'_, F>, logs: &EpochLogs) -> Result<Control, TrainError> {
        fs::create_dir_all(&self.dir).map_err(|e| TrainError::io(&self.dir, e))?;
        let epoch = ctx.epoch;
        if self.keep_last > 0 && (epoch + 1).is_multiple_of(self.every) {
            save_module(self.epoch_path(epoch), ctx.model)?;
            self.prune(epoch)?;
        }
        if let Some((monitor, mode)) = &self.best {
            let value = logs.get(monitor).ok_or_else(|| TrainError::MissingLog {
                callback: "ModelCheckpoint".into(),
                monitor: monitor.clone(),
                available: logs.names(),
            })?;
            let mode = resolve_mode(monitor, *mode);
            if value.is_finite() && self.best_value.is_none_or(|best| improves(mode, value, best, 0.0)) {
                save_module(self.best_path(), ctx.model)?;
                let info = json!({ "epoch": epoch, "monitor": monitor, "value": value }).to_string();
                write_atomic(self.dir.join("best.json"), |w| w.write_all(info.as_bytes()))?;
                self.best_value = Some(value);
                self.best_epoch = Some(epoch);
            }
        }
        Ok(Control::Continue)
    }

    fn state(&self) -> CallbackState<F> {
        CallbackState {
            json: json!({ "best_value": self.best_value, "best_epoch": self.best_epoch }),
            tensors: Default::default(),
        }
    }

    fn load_state(&mut self, state: CallbackState<F>) -> Result<(), String> {
        let j = &state.json;
        self.best_value = match j.get("best_value") {
            Some(Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or("`best_value` is not a number")?),
            None => return Err("no `best_value`".into()),
        };
        self.best_epoch = match j.get("best_epoch") {
            Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or("`best_epoch` is not an epoch")? as usize),
            None => return Err("no `best_epoch`".into()),
        };
        Ok(())
    }
}
