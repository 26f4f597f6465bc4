//! Rank-0 helpers: in a data-parallel run every rank holds the same model, so one process (rank
//! 0, the "main process") writes checkpoints and prints logs, and the others wait for it where
//! they need its file.

use std::path::Path;

use ferrograd_nn::checkpoint::{save_module, CheckpointElement};
use ferrograd_nn::Module;

use crate::comm::{MpiFloat, ReduceOp};
use crate::{Communicator, DistError};

/// Prints a line on rank 0 only (`println!`'s arguments after the communicator).
///
/// ```no_run
/// let comm = ferrograd_distributed::Communicator::init()?;
/// ferrograd_distributed::main_println!(comm, "{} ranks", comm.size());
/// # Ok::<(), ferrograd_distributed::DistError>(())
/// ```
#[macro_export]
macro_rules! main_println {
    ($comm:expr, $($arg:tt)*) => {
        if $comm.is_main_process() {
            println!($($arg)*);
        }
    };
}

impl Communicator {
    /// Runs `f` on rank 0 only and returns its result there (`None` elsewhere); no
    /// synchronisation.
    pub fn on_main<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        self.is_main_process().then(f)
    }

    /// Saves `module` to `path` ([`save_module`], atomic) on rank 0, then waits until the file is
    /// written: when it returns `Ok` on any rank, every rank may read the file.
    ///
    /// # Errors
    /// [`DistError::Checkpoint`] on every rank when rank 0 could not write the file.
    pub fn save_checkpoint<F, M>(&self, path: impl AsRef<Path>, module: &M) -> Result<(), DistError>
    where
        F: MpiFloat + CheckpointElement,
        M: Module<F> + ?Sized,
    {
        let path = path.as_ref();
        let failed = self.on_main(|| save_module(path, module).err()).flatten();
        let mut flag = [if failed.is_some() { 1.0f64 } else { 0.0 }];
        self.all_reduce_slice_(&mut flag, ReduceOp::Max)?;
        if flag[0] != 0.0 {
            let message = failed.map_or_else(|| "see rank 0's error".to_string(), |e| e.to_string());
            return Err(DistError::Checkpoint { path: path.display().to_string(), message });
        }
        Ok(())
    }

    /// The mean over the ranks of each value (per-rank losses and metrics of an epoch).
    ///
    /// # Errors
    /// [`DistError::SizeMismatch`] if the ranks pass different numbers of values.
    pub fn mean_values(&self, values: &mut [f64]) -> Result<(), DistError> {
        self.all_reduce_slice_(values, ReduceOp::Mean)
    }
}
