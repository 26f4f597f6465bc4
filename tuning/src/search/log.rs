//! A study's copy of its trials, kept current by incremental reads: each refresh asks the storage
//! for the trials created since the newest one seen and for those still running or waiting, never
//! for the finished ones it holds (finished trials never change). The cost of a refresh follows
//! what changed, not the study's size.

use std::collections::{BTreeSet, HashMap};

use super::distribution::Distribution;
use super::error::SearchError;
use super::storage::{Storage, StoredTrial, StudyId, TrialId};
use super::trial::{FrozenTrial, TrialState};

#[derive(Default)]
pub(crate) struct TrialLog {
    /// Every trial, by number.
    pub(crate) trials: Vec<FrozenTrial>,
    /// Each trial's storage id, by number.
    pub(crate) ids: Vec<TrialId>,
    /// The newest id read.
    after: TrialId,
    /// Numbers of the trials not finished (running or waiting): read again at each refresh.
    open: BTreeSet<u64>,
    /// Numbers of finished trials in the order this study saw them finish (append-only).
    pub(crate) finished: Vec<u64>,
    /// The first distribution seen for each parameter name.
    pub(crate) kinds: HashMap<String, Distribution>,
}

impl TrialLog {
    /// The newest trial id read.
    pub(crate) fn after(&self) -> TrialId {
        self.after
    }

    /// The ids of the trials that may still change.
    pub(crate) fn open_ids(&self) -> Vec<TrialId> {
        self.open.iter().map(|n| self.ids[*n as usize]).collect()
    }

    /// The numbers of waiting trials, oldest first.
    pub(crate) fn waiting(&self) -> Vec<u64> {
        self.open.iter().copied().filter(|n| self.trials[*n as usize].state == TrialState::Waiting).collect()
    }

    /// Reads what changed.
    pub(crate) fn refresh(
        &mut self,
        storage: &dyn Storage,
        study: StudyId,
        n_objectives: usize,
    ) -> Result<(), SearchError> {
        let fresh = storage.read_trials(study, self.after, &self.open_ids())?;
        self.apply(fresh, n_objectives, &storage.location())
    }

    /// Merges trials read from the storage (ordered by id), checking that numbers follow on and
    /// that complete trials carry one value per objective.
    pub(crate) fn apply(
        &mut self,
        fresh: Vec<StoredTrial>,
        n_objectives: usize,
        location: &str,
    ) -> Result<(), SearchError> {
        let corrupt = |what: String| SearchError::Corrupt { location: location.to_string(), what };
        for StoredTrial { id, trial } in fresh {
            let n = trial.number;
            if trial.state == TrialState::Complete && trial.values.len() != n_objectives {
                return Err(corrupt(format!(
                    "trial {n}: COMPLETE with {} value(s) for {n_objectives} objective(s) (a NULL or missing value)",
                    trial.values.len()
                )));
            }
            let i = n as usize;
            match i.cmp(&self.trials.len()) {
                std::cmp::Ordering::Less if self.ids[i] == id => {}
                std::cmp::Ordering::Less => return Err(corrupt(format!("two trials numbered {n}"))),
                std::cmp::Ordering::Equal => {
                    self.trials.push(FrozenTrial::new(TrialState::Running));
                    self.ids.push(id);
                }
                std::cmp::Ordering::Greater => {
                    return Err(corrupt(format!("trial numbers jump from {} to {n}", self.trials.len())))
                }
            }
            for (name, d) in &trial.distributions {
                if !self.kinds.contains_key(name) {
                    self.kinds.insert(name.clone(), d.clone());
                }
            }
            if trial.state.is_finished() {
                if self.open.remove(&n) || id > self.after {
                    self.finished.push(n);
                }
            } else {
                self.open.insert(n);
            }
            self.after = self.after.max(id);
            self.trials[i] = trial;
        }
        Ok(())
    }
}
