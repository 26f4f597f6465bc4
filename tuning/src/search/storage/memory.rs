//! The in-memory storage: studies of one process, behind one mutex. Heartbeats are not kept (a
//! study in memory dies with its process).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{check_template, AttrKind, Prepare, Storage, StoredTrial, StudyId, StudySummary, TrialId, TrialReader};
use crate::search::error::SearchError;
use crate::search::study::Direction;
use crate::search::trial::{FrozenTrial, TrialState};
use crate::search::{Distribution, ParamValue};

struct MemStudy {
    name: String,
    directions: Vec<Direction>,
    attrs: HashMap<AttrKind, BTreeMap<String, Value>>,
    /// Trial ids, by number.
    trials: Vec<TrialId>,
}

#[derive(Default)]
struct Inner {
    next_study: StudyId,
    studies: BTreeMap<StudyId, MemStudy>,
    /// Every trial: its study and its record.
    trials: HashMap<TrialId, (StudyId, FrozenTrial)>,
    next_trial: TrialId,
}

/// Studies kept in this process's memory (the default storage of [`Study::builder`]).
///
/// [`Study::builder`]: crate::search::Study::builder
#[derive(Default)]
pub struct InMemoryStorage {
    inner: Mutex<Inner>,
}

impl InMemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        InMemoryStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn study(&self, id: StudyId) -> Result<&MemStudy, SearchError> {
        self.studies.get(&id).ok_or_else(|| SearchError::NoSuchStudy { name: format!("(id {id})") })
    }

    /// A trial by id; it is missing only when its study was deleted.
    fn trial_mut(&mut self, id: TrialId) -> Result<&mut FrozenTrial, SearchError> {
        self.trials
            .get_mut(&id)
            .map(|t| &mut t.1)
            .ok_or_else(|| SearchError::NoSuchStudy { name: format!("(deleted, of trial id {id})") })
    }

    /// A trial that may still change (running or waiting).
    fn open_trial(&mut self, id: TrialId) -> Result<&mut FrozenTrial, SearchError> {
        let t = self.trial_mut(id)?;
        if t.state.is_finished() {
            return Err(SearchError::TrialFinished { number: t.number, state: t.state });
        }
        Ok(t)
    }

    fn read(&self, study: StudyId, after: TrialId, include: &[TrialId]) -> Result<Vec<StoredTrial>, SearchError> {
        let ids = &self.study(study)?.trials;
        let first_new = ids.partition_point(|id| *id <= after);
        let mut wanted: Vec<TrialId> = include
            .iter()
            .copied()
            .filter(|id| *id <= after && self.trials.get(id).is_some_and(|t| t.0 == study))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted.extend_from_slice(&ids[first_new..]);
        Ok(wanted.into_iter().map(|id| StoredTrial { id, trial: self.trials[&id].1.clone() }).collect())
    }
}

struct LockedReader<'a> {
    inner: &'a Inner,
    study: StudyId,
}

impl TrialReader for LockedReader<'_> {
    fn read_trials(&self, after: TrialId, include: &[TrialId]) -> Result<Vec<StoredTrial>, SearchError> {
        self.inner.read(self.study, after, include)
    }
}

impl Storage for InMemoryStorage {
    fn location(&self) -> String {
        "memory".to_string()
    }

    fn supports_heartbeat(&self) -> bool {
        false
    }

    fn create_study(&self, name: &str, directions: &[Direction]) -> Result<StudyId, SearchError> {
        let mut m = self.lock();
        if m.studies.values().any(|s| s.name == name) {
            return Err(SearchError::StudyExists { name: name.to_string() });
        }
        m.next_study += 1;
        let id = m.next_study;
        let study = MemStudy {
            name: name.to_string(),
            directions: directions.to_vec(),
            attrs: HashMap::new(),
            trials: Vec::new(),
        };
        m.studies.insert(id, study);
        Ok(id)
    }

    fn find_study(&self, name: &str) -> Result<Option<StudyId>, SearchError> {
        Ok(self.lock().studies.iter().find(|(_, s)| s.name == name).map(|(id, _)| *id))
    }

    fn studies(&self) -> Result<Vec<StudySummary>, SearchError> {
        Ok(self
            .lock()
            .studies
            .iter()
            .map(|(id, s)| StudySummary {
                study_id: *id,
                name: s.name.clone(),
                directions: s.directions.clone(),
                n_trials: s.trials.len(),
            })
            .collect())
    }

    fn delete_study(&self, study: StudyId) -> Result<(), SearchError> {
        let mut m = self.lock();
        let s = m.studies.remove(&study).ok_or_else(|| SearchError::NoSuchStudy { name: format!("(id {study})") })?;
        for id in s.trials {
            m.trials.remove(&id);
        }
        Ok(())
    }

    fn study_directions(&self, study: StudyId) -> Result<Vec<Direction>, SearchError> {
        Ok(self.lock().study(study)?.directions.clone())
    }

    fn set_study_attr(&self, study: StudyId, kind: AttrKind, key: &str, value: &Value) -> Result<(), SearchError> {
        let mut m = self.lock();
        m.study(study)?;
        let s = m.studies.get_mut(&study).expect("checked above");
        s.attrs.entry(kind).or_default().insert(key.to_string(), value.clone());
        Ok(())
    }

    fn study_attrs(&self, study: StudyId, kind: AttrKind) -> Result<BTreeMap<String, Value>, SearchError> {
        Ok(self.lock().study(study)?.attrs.get(&kind).cloned().unwrap_or_default())
    }

    fn create_trial(
        &self,
        study: StudyId,
        template: &mut FrozenTrial,
        _heartbeat: bool,
        prepare: Option<Prepare<'_>>,
    ) -> Result<Option<(TrialId, u64)>, SearchError> {
        let mut m = self.lock();
        template.number = m.study(study)?.trials.len() as u64;
        if let Some(prepare) = prepare {
            if !prepare(template, &LockedReader { inner: &m, study })? {
                return Ok(None);
            }
        }
        check_template(template, None)?;
        m.next_trial += 1;
        let id = m.next_trial;
        let mut t = template.clone();
        let now = SystemTime::now();
        if t.state != TrialState::Waiting {
            t.datetime_start.get_or_insert(now);
        }
        if t.state.is_finished() {
            t.datetime_complete.get_or_insert(now);
        }
        t.derive();
        m.studies.get_mut(&study).expect("checked above").trials.push(id);
        let number = t.number;
        m.trials.insert(id, (study, t));
        Ok(Some((id, number)))
    }

    fn claim_waiting_trial(&self, trial: TrialId, _heartbeat: bool) -> Result<bool, SearchError> {
        let mut m = self.lock();
        let t = m.trial_mut(trial)?;
        if t.state != TrialState::Waiting {
            return Ok(false);
        }
        t.state = TrialState::Running;
        t.datetime_start = Some(SystemTime::now());
        Ok(true)
    }

    fn set_trial_param(
        &self,
        trial: TrialId,
        name: &str,
        value: &ParamValue,
        dist: &Distribution,
    ) -> Result<(), SearchError> {
        let mut m = self.lock();
        let t = m.open_trial(trial)?;
        t.params.insert(name.to_string(), value.clone());
        t.distributions.insert(name.to_string(), dist.clone());
        Ok(())
    }

    fn set_trial_intermediate(&self, trial: TrialId, step: u64, value: f64) -> Result<(), SearchError> {
        self.lock().open_trial(trial)?.intermediate.insert(step, value);
        Ok(())
    }

    fn set_trial_attr(&self, trial: TrialId, kind: AttrKind, key: &str, value: &Value) -> Result<(), SearchError> {
        let mut m = self.lock();
        let t = m.open_trial(trial)?;
        let attrs = match kind {
            AttrKind::User => &mut t.user_attrs,
            AttrKind::System => &mut t.system_attrs,
        };
        attrs.insert(key.to_string(), value.clone());
        Ok(())
    }

    fn finish_trial(
        &self,
        trial: TrialId,
        state: TrialState,
        values: &[f64],
        fail_reason: Option<&str>,
    ) -> Result<(), SearchError> {
        let mut m = self.lock();
        let t = m.trial_mut(trial)?;
        if t.state != TrialState::Running {
            return Err(SearchError::TrialFinished { number: t.number, state: t.state });
        }
        t.state = state;
        t.values = values.to_vec();
        t.fail_reason = fail_reason.map(str::to_string);
        t.datetime_complete = Some(SystemTime::now());
        t.derive();
        Ok(())
    }

    fn record_heartbeat(&self, _trial: TrialId) -> Result<(), SearchError> {
        Ok(())
    }

    fn fail_stale_trials(
        &self,
        _study: StudyId,
        _candidates: &[TrialId],
        _grace: Duration,
        _retry: Option<u32>,
    ) -> Result<Vec<u64>, SearchError> {
        Ok(Vec::new())
    }

    fn read_trials(
        &self,
        study: StudyId,
        after: TrialId,
        include: &[TrialId],
    ) -> Result<Vec<StoredTrial>, SearchError> {
        self.lock().read(study, after, include)
    }
}
