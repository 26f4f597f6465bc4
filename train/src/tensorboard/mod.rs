//! TensorBoard event files: a writer ([`EventWriter`]), a reader ([`read_events`]), and the
//! [`TensorBoardLogger`] callback.
//!
//! An event file is a sequence of records: the data's length as a little-endian `u64`, the
//! masked CRC32C of those 8 bytes, the data (a serialized `Event` protobuf), and the masked
//! CRC32C of the data. The first event names the format (`brain.Event:2`); the others hold
//! summaries (scalars as `simple_value`, histograms as `HistogramProto`, HParams as plugin
//! data) or session logs. Files are append-only, named `events.out.tfevents.*` in creation
//! order, one per writer.
//!
//! The logger follows Keras' layout, so TensorBoard draws training and validation curves in
//! one chart: `DIR/train` holds `epoch_loss`, `epoch_<metric>`, `epoch_lr` and per-step
//! `batch_loss` / `batch_lr`; `DIR/validation` holds `epoch_loss` and `epoch_<metric>` of the
//! validation pass. Every value is logged at the run's global optimizer step, so one x axis
//! serves all of them, and a resumed run starts its files with a `SessionLog.START` at its
//! first new step: TensorBoard then drops whatever the killed run logged after the point the
//! resumed run restarts from. With [`TensorBoardLogger::hparams`], `DIR` also holds the
//! HParams plugin's session summaries, so TensorBoard's HParams view compares runs (search
//! trials) by their hyperparameters and final metrics.

mod proto;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ferrograd_autograd::{Grads, Param};
use ferrograd_tensor::{Element, Float};

use crate::{Callback, Context, Control, EpochLogs, History, StepAction, StepLogs, TrainError};
use proto::{fields, get, Pb};

/// A hyperparameter value for the HParams plugin.
#[derive(Clone, Debug, PartialEq)]
pub enum HParam {
    /// A number (learning rates, widths, counts).
    Number(f64),
    /// A string (optimizer names).
    Text(String),
    /// A flag.
    Bool(bool),
}

impl From<f64> for HParam {
    fn from(v: f64) -> Self {
        HParam::Number(v)
    }
}

impl From<i64> for HParam {
    fn from(v: i64) -> Self {
        HParam::Number(v as f64)
    }
}

impl From<&str> for HParam {
    fn from(v: &str) -> Self {
        HParam::Text(v.to_string())
    }
}

impl From<String> for HParam {
    fn from(v: String) -> Self {
        HParam::Text(v)
    }
}

impl From<bool> for HParam {
    fn from(v: bool) -> Self {
        HParam::Bool(v)
    }
}

/// How a run (an HParams session) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    /// Finished normally.
    Success,
    /// Failed.
    Failure,
    /// Still running.
    Running,
}

const HPARAMS_PLUGIN: &str = "hparams";
const SESSION_START_TAG: &str = "_hparams_/session_start_info";
const SESSION_END_TAG: &str = "_hparams_/session_end_info";

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// A record's head: the data's length and the masked CRC32C of the length's bytes.
fn record_head(data: &[u8]) -> [u8; 12] {
    let len = (data.len() as u64).to_le_bytes();
    let mut head = [0u8; 12];
    head[..8].copy_from_slice(&len);
    head[8..].copy_from_slice(&masked_crc(&len).to_le_bytes());
    head
}

fn event(wall_time: f64, step: i64) -> Pb {
    Pb::new().double(1, wall_time).int(2, step)
}

fn summary_event(wall_time: f64, step: i64, value: &Pb) -> Pb {
    event(wall_time, step).message(5, &Pb::new().message(1, value))
}

/// TensorFlow's `DT_FLOAT` tensor of shape `[0]`, the value the HParams summaries carry (their
/// content is in the metadata).
fn null_tensor() -> Pb {
    Pb::new().int(1, 1).message(2, &Pb::new().message(2, &Pb::new()))
}

fn hparams_value(tag: &str, plugin_data: &Pb) -> Pb {
    let plugin = Pb::new().string(1, HPARAMS_PLUGIN).bytes(2, &plugin_data.0);
    Pb::new().string(1, tag).message(8, &null_tensor()).message(9, &Pb::new().message(1, &plugin))
}

/// The `google.protobuf.Value` of a hyperparameter.
fn struct_value(v: &HParam) -> Pb {
    match v {
        HParam::Number(x) => Pb::new().double_present(2, *x),
        HParam::Text(s) => Pb::new().bytes_present(3, s.as_bytes()),
        HParam::Bool(b) => Pb::new().bool_present(4, *b),
    }
}

/// The bytes of the events the writer produces, without the record framing (for the fixture
/// test against Python's protobuf).
pub(crate) mod encode {
    use super::*;

    pub(crate) fn file_version(wall_time: f64) -> Vec<u8> {
        event(wall_time, 0).string(3, "brain.Event:2").0
    }

    pub(crate) fn scalar(wall_time: f64, step: i64, tag: &str, value: f32) -> Vec<u8> {
        summary_event(wall_time, step, &Pb::new().string(1, tag).float_present(2, value)).0
    }

    pub(crate) fn histogram(wall_time: f64, step: i64, tag: &str, h: &Histogram) -> Vec<u8> {
        let histo = Pb::new()
            .double(1, h.min)
            .double(2, h.max)
            .double(3, h.num)
            .double(4, h.sum)
            .double(5, h.sum_squares)
            .packed_doubles(6, &h.bucket_limit)
            .packed_doubles(7, &h.bucket);
        summary_event(wall_time, step, &Pb::new().string(1, tag).message(5, &histo)).0
    }

    pub(crate) fn session_log_start(wall_time: f64, step: i64) -> Vec<u8> {
        event(wall_time, step).message(7, &Pb::new().int(1, 1)).0
    }

    pub(crate) fn hparams_start(wall_time: f64, hparams: &[(String, HParam)], group: &str, start: f64) -> Vec<u8> {
        let mut info = Pb::new();
        for (name, v) in hparams {
            info = info.message(1, &Pb::new().string(1, name).message(2, &struct_value(v)));
        }
        let info = info.string(4, group).double(5, start);
        let data = Pb::new().message(3, &info);
        summary_event(wall_time, 0, &hparams_value(SESSION_START_TAG, &data)).0
    }

    pub(crate) fn hparams_end(wall_time: f64, status: SessionStatus, end: f64) -> Vec<u8> {
        let code = match status {
            SessionStatus::Success => 1,
            SessionStatus::Failure => 2,
            SessionStatus::Running => 3,
        };
        let data = Pb::new().message(4, &Pb::new().int(1, code).double(2, end));
        summary_event(wall_time, 0, &hparams_value(SESSION_END_TAG, &data)).0
    }
}

/// A histogram in TensorBoard's `HistogramProto` form: bucket `i` holds the values in
/// `(bucket_limit[i-1], bucket_limit[i]]` (the first from `min`).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The number of values.
    pub num: f64,
    /// Their sum.
    pub sum: f64,
    /// The sum of their squares.
    pub sum_squares: f64,
    /// The right edge of each bucket.
    pub bucket_limit: Vec<f64>,
    /// The count of each bucket.
    pub bucket: Vec<f64>,
}

impl Histogram {
    /// `buckets` equal-width buckets from the smallest to the largest finite value (one bucket
    /// when they are all equal); non-finite values are left out. `None` if no value is finite.
    pub fn of(values: &[f64], buckets: usize) -> Option<Histogram> {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let (min, max) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if finite.is_empty() {
            return None;
        }
        let buckets = if max > min { buckets.max(1) } else { 1 };
        let width = (max - min) / buckets as f64;
        let bucket_limit: Vec<f64> =
            (1..=buckets).map(|i| if i == buckets { max } else { min + width * i as f64 }).collect();
        let mut bucket = vec![0.0; buckets];
        for &v in &finite {
            // The first limit at or above v (values on a limit belong to the bucket it closes).
            let i = bucket_limit.partition_point(|&limit| limit < v).min(buckets - 1);
            bucket[i] += 1.0;
        }
        Some(Histogram {
            min,
            max,
            num: finite.len() as f64,
            sum: finite.iter().sum(),
            sum_squares: finite.iter().map(|v| v * v).sum(),
            bucket_limit,
            bucket,
        })
    }
}

static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(['/', '\\']))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Writes one TensorBoard event file.
///
/// ```
/// use ferrograd_train::tensorboard::{read_events, EventWriter};
/// let dir = std::env::temp_dir().join(format!("doc-tb-{}", std::process::id()));
/// let mut w = EventWriter::create(&dir)?;
/// w.add_scalar("loss", 1, 0.25)?;
/// w.flush()?;
/// let scalars: Vec<_> = read_events(w.path())?.iter().flat_map(|e| e.scalars()).collect();
/// assert_eq!(scalars, vec![("loss".to_string(), 1, 0.25f32)]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), ferrograd_train::TrainError>(())
/// ```
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it, and writes the file-version event.
    ///
    /// # Errors
    /// The directory or the file cannot be created.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self, TrainError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        // TensorBoard reads a run's files in name order, and its purge of a restarted run's
        // stale tail depends on that order: after TensorFlow's `<seconds>.<host>`, the
        // nanoseconds and a counter, zero-padded, keep the names in creation order.
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let name = format!(
            "events.out.tfevents.{}.{}.{:09}.{}.{:06}",
            t.as_secs(),
            hostname(),
            t.subsec_nanos(),
            std::process::id(),
            FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = File::options().write(true).create_new(true).open(&path).map_err(|e| TrainError::io(&path, e))?;
        let mut w = EventWriter { path, out: BufWriter::new(file) };
        w.record(&encode::file_version(now()))?;
        Ok(w)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&mut self, data: &[u8]) -> Result<(), TrainError> {
        let io = |e| TrainError::io(&self.path, e);
        self.out.write_all(&record_head(data)).map_err(io)?;
        self.out.write_all(data).map_err(io)?;
        self.out.write_all(&masked_crc(data).to_le_bytes()).map_err(io)
    }

    /// A scalar (stored as TensorBoard's 32-bit `simple_value`).
    ///
    /// # Errors
    /// The write fails.
    pub fn add_scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<(), TrainError> {
        self.record(&encode::scalar(now(), step, tag, value as f32))
    }

    /// A histogram of `values` in `buckets` buckets (nothing if no value is finite).
    ///
    /// # Errors
    /// The write fails.
    pub fn add_histogram(&mut self, tag: &str, step: i64, values: &[f64], buckets: usize) -> Result<(), TrainError> {
        match Histogram::of(values, buckets) {
            Some(h) => self.record(&encode::histogram(now(), step, tag, &h)),
            None => Ok(()),
        }
    }

    /// A `SessionLog.START` at `step`: on reading, TensorBoard drops the events of earlier files
    /// of this run whose step is `step` or later (a restarted run's stale tail).
    ///
    /// # Errors
    /// The write fails.
    pub fn add_session_start(&mut self, step: i64) -> Result<(), TrainError> {
        self.record(&encode::session_log_start(now(), step))
    }

    /// The HParams plugin's session start: this run's hyperparameters.
    ///
    /// # Errors
    /// The write fails.
    pub fn add_hparams(&mut self, hparams: &[(String, HParam)]) -> Result<(), TrainError> {
        let t = now();
        self.record(&encode::hparams_start(t, hparams, "", t))
    }

    /// The HParams plugin's session end.
    ///
    /// # Errors
    /// The write fails.
    pub fn add_hparams_end(&mut self, status: SessionStatus) -> Result<(), TrainError> {
        let t = now();
        self.record(&encode::hparams_end(t, status, t))
    }

    /// Writes buffered events to the file.
    ///
    /// # Errors
    /// The write fails.
    pub fn flush(&mut self) -> Result<(), TrainError> {
        self.out.flush().map_err(|e| TrainError::io(&self.path, e))
    }
}

/// One event read back from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Seconds since the epoch when it was written.
    pub wall_time: f64,
    /// Its step.
    pub step: i64,
    /// What it holds.
    pub what: EventData,
}

/// What an [`Event`] holds.
#[derive(Clone, Debug, PartialEq)]
pub enum EventData {
    /// The file's format, `brain.Event:2`.
    FileVersion(String),
    /// Summary values.
    Summary(Vec<SummaryValue>),
    /// A session log with its status (1 = START).
    SessionLog(i64),
    /// Anything else (graphs, run metadata).
    Other,
}

/// One value of a summary.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryValue {
    /// The tag.
    pub tag: String,
    /// The plugin its metadata names, if any.
    pub plugin: Option<String>,
    /// The plugin's content bytes.
    pub plugin_content: Vec<u8>,
    /// The value.
    pub value: SummaryData,
}

/// The value of a [`SummaryValue`].
#[derive(Clone, Debug, PartialEq)]
pub enum SummaryData {
    /// `simple_value`.
    Scalar(f32),
    /// `histo`.
    Histogram(Histogram),
    /// A tensor (the HParams summaries carry an empty one).
    Tensor,
    /// Anything else.
    Other,
}

impl Event {
    /// The scalars of this event: `(tag, step, value)`.
    pub fn scalars(&self) -> Vec<(String, i64, f32)> {
        match &self.what {
            EventData::Summary(values) => values
                .iter()
                .filter_map(|v| match v.value {
                    SummaryData::Scalar(x) => Some((v.tag.clone(), self.step, x)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The hyperparameters of an HParams session-start event.
    pub fn hparams(&self) -> Option<BTreeMap<String, HParam>> {
        let EventData::Summary(values) = &self.what else { return None };
        let v = values.iter().find(|v| v.tag == SESSION_START_TAG && v.plugin.as_deref() == Some(HPARAMS_PLUGIN))?;
        let data = fields(&v.plugin_content)?;
        let info = fields(get(&data, 3)?.as_bytes()?)?;
        let mut out = BTreeMap::new();
        for (n, entry) in &info {
            if *n != 1 {
                continue;
            }
            let entry = fields(entry.as_bytes()?)?;
            let name = get(&entry, 1)?.as_str()?.to_string();
            let value = fields(get(&entry, 2)?.as_bytes()?)?;
            let hp = if let Some(x) = get(&value, 2).and_then(|f| f.as_f64()) {
                HParam::Number(x)
            } else if let Some(s) = get(&value, 3).and_then(|f| f.as_str()) {
                HParam::Text(s.to_string())
            } else {
                HParam::Bool(get(&value, 4)?.as_i64()? != 0)
            };
            out.insert(name, hp);
        }
        Some(out)
    }
}

fn decode_event(data: &[u8]) -> Option<Event> {
    let f = fields(data)?;
    let wall_time = get(&f, 1).map_or(Some(0.0), |v| v.as_f64())?;
    let step = get(&f, 2).map_or(Some(0), |v| v.as_i64())?;
    let what = if let Some(v) = get(&f, 3) {
        EventData::FileVersion(v.as_str()?.to_string())
    } else if let Some(s) = get(&f, 5) {
        let mut values = Vec::new();
        for (n, v) in fields(s.as_bytes()?)? {
            if n == 1 {
                values.push(decode_value(v.as_bytes()?)?);
            }
        }
        EventData::Summary(values)
    } else if let Some(s) = get(&fields(data)?, 7) {
        let log = fields(s.as_bytes()?)?;
        EventData::SessionLog(get(&log, 1).map_or(Some(0), |v| v.as_i64())?)
    } else {
        EventData::Other
    };
    Some(Event { wall_time, step, what })
}

fn decode_value(bytes: &[u8]) -> Option<SummaryValue> {
    let f = fields(bytes)?;
    let tag = get(&f, 1).map_or(Some(""), |v| v.as_str())?.to_string();
    let (mut plugin, mut plugin_content) = (None, Vec::new());
    if let Some(meta) = get(&f, 9) {
        if let Some(pd) = get(&fields(meta.as_bytes()?)?, 1) {
            let pd = fields(pd.as_bytes()?)?;
            plugin = Some(get(&pd, 1).map_or(Some(""), |v| v.as_str())?.to_string());
            plugin_content = get(&pd, 2).map_or(Some(&[][..]), |v| v.as_bytes())?.to_vec();
        }
    }
    let value = if let Some(v) = get(&f, 2) {
        SummaryData::Scalar(v.as_f32()?)
    } else if let Some(h) = get(&f, 5) {
        let h = fields(h.as_bytes()?)?;
        let d = |n| get(&h, n).map_or(Some(0.0), |v| v.as_f64());
        let list = |n| -> Option<Vec<f64>> {
            let mut out = Vec::new();
            for (k, v) in &h {
                if *k == n {
                    out.extend(v.as_doubles()?);
                }
            }
            Some(out)
        };
        SummaryData::Histogram(Histogram {
            min: d(1)?,
            max: d(2)?,
            num: d(3)?,
            sum: d(4)?,
            sum_squares: d(5)?,
            bucket_limit: list(6)?,
            bucket: list(7)?,
        })
    } else if get(&f, 8).is_some() {
        SummaryData::Tensor
    } else {
        SummaryData::Other
    };
    Some(SummaryValue { tag, plugin, plugin_content, value })
}

/// Reads every event of an event file, checking each record's lengths and CRCs.
///
/// # Errors
/// The file cannot be read, a record is truncated or fails its CRC (naming its offset), or an
/// event is not a well-formed protobuf.
pub fn read_events(path: impl AsRef<Path>) -> Result<Vec<Event>, TrainError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let mut at = 0usize;
    let mut out = Vec::new();
    while at < bytes.len() {
        let bad = |problem: &str| TrainError::format(path, format!("record at byte {at}: {problem}"));
        let head = bytes.get(at..at + 12).ok_or_else(|| bad("truncated header"))?;
        let len_bytes = &head[..8];
        if masked_crc(len_bytes).to_le_bytes() != head[8..12] {
            return Err(bad("length CRC mismatch"));
        }
        let len = usize::try_from(u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")))
            .map_err(|_| bad("length out of range"))?;
        let start = at + 12;
        let data = start.checked_add(len).and_then(|end| bytes.get(start..end)).ok_or_else(|| bad("truncated data"))?;
        let crc = bytes.get(start + len..start + len + 4).ok_or_else(|| bad("truncated data CRC"))?;
        if masked_crc(data).to_le_bytes() != crc {
            return Err(bad("data CRC mismatch"));
        }
        out.push(decode_event(data).ok_or_else(|| bad("not an Event protobuf"))?);
        at = start + len + 4;
    }
    Ok(out)
}

/// The event files of a directory (not its subdirectories), in name order.
///
/// # Errors
/// The directory cannot be listed.
pub fn event_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, TrainError> {
    let dir = dir.as_ref();
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| TrainError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n.to_string_lossy().contains("tfevents")))
        .collect();
    files.sort();
    Ok(files)
}

struct Writers {
    train: EventWriter,
    validation: EventWriter,
    root: Option<EventWriter>,
}

/// Logs a run for TensorBoard (`tensorboard --logdir DIR`): epoch figures, per-step loss and
/// learning rate, optionally weight and gradient histograms, and the HParams session.
///
/// ```
/// use ferrograd_train::TensorBoardLogger;
/// let tb = TensorBoardLogger::new("runs/mlp").log_every_n_steps(10).histograms(true).hparams(vec![
///     ("lr".to_string(), 1e-3.into()),
///     ("optimizer".to_string(), "adam".into()),
/// ]);
/// # let _ = tb;
/// ```
pub struct TensorBoardLogger {
    dir: PathBuf,
    every: u64,
    histograms: bool,
    buckets: usize,
    hparams: Option<Vec<(String, HParam)>>,
    writers: Option<Writers>,
}

impl TensorBoardLogger {
    /// Logs into `dir` (created if needed): epoch figures only, until the options below.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TensorBoardLogger { dir: dir.into(), every: 0, histograms: false, buckets: 30, hparams: None, writers: None }
    }

    /// Also logs the loss and learning rate (and a step function's values) every `n` optimizer
    /// steps as `batch_*`; 0 turns it off.
    pub fn log_every_n_steps(mut self, n: u64) -> Self {
        self.every = n;
        self
    }

    /// Also logs a histogram of every parameter (`weights/NAME`) and of its gradient in the
    /// epoch's last step (`gradients/NAME`) at each epoch's end.
    pub fn histograms(mut self, on: bool) -> Self {
        self.histograms = on;
        self
    }

    /// Writes the HParams plugin's session for this run with these hyperparameters, so
    /// TensorBoard's HParams view lists it (metrics are the `epoch_*` scalars).
    pub fn hparams(mut self, hparams: Vec<(String, HParam)>) -> Self {
        self.hparams = Some(hparams);
        self
    }

    /// The directory it logs into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn writers(&mut self) -> &mut Writers {
        self.writers.as_mut().expect("the writers are created in on_train_begin")
    }

    fn flush(&mut self) -> Result<(), TrainError> {
        if let Some(w) = &mut self.writers {
            w.train.flush()?;
            w.validation.flush()?;
            if let Some(r) = &mut w.root {
                r.flush()?;
            }
        }
        Ok(())
    }
}

fn tensor_values<F: Float>(t: &ferrograd_tensor::Tensor<F>) -> Vec<f64> {
    t.to_vec().into_iter().map(Element::to_f64).collect()
}

impl<F: Float> Callback<F> for TensorBoardLogger {
    fn name(&self) -> String {
        "TensorBoardLogger".into()
    }

    fn main_process_only(&self) -> bool {
        true
    }

    fn on_train_begin(&mut self, ctx: &mut Context<'_, F>) -> Result<(), TrainError> {
        let mut train = EventWriter::create(self.dir.join("train"))?;
        let mut validation = EventWriter::create(self.dir.join("validation"))?;
        if ctx.resumed {
            let first_new = ctx.global_step as i64 + 1;
            train.add_session_start(first_new)?;
            validation.add_session_start(first_new)?;
        }
        let root = match &self.hparams {
            // A resumed run's session started with the first run, unless that died before writing it.
            Some(hp) if !ctx.resumed || event_files(&self.dir)?.is_empty() => {
                let mut root = EventWriter::create(&self.dir)?;
                root.add_hparams(hp)?;
                Some(root)
            }
            Some(_) => Some(EventWriter::create(&self.dir)?),
            None => None,
        };
        self.writers = Some(Writers { train, validation, root });
        Ok(())
    }

    fn on_after_backward(
        &mut self,
        ctx: &mut Context<'_, F>,
        _loss: f64,
        grads: &mut Grads<F>,
        params: &[(String, Param<F>)],
    ) -> Result<StepAction, TrainError> {
        if self.histograms && ctx.batch == ctx.batches {
            let step = ctx.global_step as i64 + 1;
            let buckets = self.buckets;
            for (name, p) in params {
                if let Some(g) = grads.get_param(p) {
                    self.writers().train.add_histogram(
                        &format!("gradients/{name}"),
                        step,
                        &tensor_values(g),
                        buckets,
                    )?;
                }
            }
        }
        Ok(StepAction::Apply)
    }

    fn on_step_end(&mut self, _ctx: &mut Context<'_, F>, step: &StepLogs) -> Result<(), TrainError> {
        if self.every > 0 && step.global_step.is_multiple_of(self.every) {
            let s = step.global_step as i64;
            let w = &mut self.writers().train;
            w.add_scalar("batch_loss", s, step.loss)?;
            w.add_scalar("batch_lr", s, step.lr)?;
            for (name, v) in &step.values {
                w.add_scalar(&format!("batch_{name}"), s, *v)?;
            }
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, ctx: &mut Context<'_, F>, logs: &EpochLogs) -> Result<Control, TrainError> {
        let s = ctx.global_step as i64;
        for (name, v) in &logs.values {
            match name.strip_prefix("val_") {
                Some(rest) => self.writers().validation.add_scalar(&format!("epoch_{rest}"), s, *v)?,
                None => self.writers().train.add_scalar(&format!("epoch_{name}"), s, *v)?,
            }
        }
        if self.histograms {
            let buckets = self.buckets;
            for (name, p) in ctx.model.named_parameters() {
                self.writers().train.add_histogram(
                    &format!("weights/{name}"),
                    s,
                    &tensor_values(&p.value()),
                    buckets,
                )?;
            }
        }
        self.flush()?;
        Ok(Control::Continue)
    }

    fn on_save(&mut self, _ctx: &mut Context<'_, F>) -> Result<(), TrainError> {
        self.flush()
    }

    fn on_train_end(&mut self, _ctx: &mut Context<'_, F>, _history: &History) -> Result<(), TrainError> {
        if let Some(root) = self.writers.as_mut().and_then(|w| w.root.as_mut()) {
            root.add_hparams_end(SessionStatus::Success)?;
        }
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    mod python {
        include!("../../tests/fixtures/tensorboard_python.rs");
    }

    /// Our encoder against the bytes TensorBoard's protobuf classes and record writer produce
    /// (`tests/fixtures/gen_tensorboard.py`).
    #[test]
    fn events_are_byte_for_byte_what_tensorboard_writes() {
        assert_eq!(encode::file_version(1.5), python::FILE_VERSION);
        assert_eq!(encode::scalar(2.25, 7, "epoch_loss", 0.125), python::SCALAR);
        assert_eq!(encode::scalar(2.5, 1 << 40, "batch_lr", 0.0), python::SCALAR_ZERO);
        assert_eq!(encode::scalar(3.0, 3, "epoch_accuracy", -2.5e-8), python::SCALAR_NEGATIVE);
        let h = Histogram {
            min: -1.5,
            max: 2.0,
            num: 5.0,
            sum: 1.25,
            sum_squares: 8.5,
            bucket_limit: vec![0.0, 1.0, 2.0],
            bucket: vec![2.0, 0.0, 3.0],
        };
        assert_eq!(encode::histogram(3.25, 12, "weights/0.weight", &h), python::HISTOGRAM);
        assert_eq!(encode::session_log_start(3.75, 42), python::SESSION_START);
        let start = |name: &str, v: HParam| encode::hparams_start(4.5, &[(name.to_string(), v)], "", 3.5);
        assert_eq!(start("dropout", HParam::Number(0.25)), python::HPARAMS_START_NUMBER);
        assert_eq!(start("optimizer", HParam::from("adam")), python::HPARAMS_START_TEXT);
        assert_eq!(start("warmup", HParam::Bool(false)), python::HPARAMS_START_BOOL);
        assert_eq!(encode::hparams_end(5.5, SessionStatus::Success, 4.0), python::HPARAMS_END);
        let data = encode::scalar(2.25, 7, "epoch_loss", 0.125);
        let framed = [&record_head(&data)[..], &data, &masked_crc(&data).to_le_bytes()].concat();
        assert_eq!(framed, python::SCALAR_RECORD);
    }

    #[test]
    fn the_reader_decodes_what_tensorboard_writes() {
        let dir = std::env::temp_dir().join(format!("ferrograd-tb-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.out.tfevents.fixture");
        let mut bytes = Vec::new();
        let records = [
            python::FILE_VERSION,
            python::SCALAR,
            python::HISTOGRAM,
            python::SESSION_START,
            python::HPARAMS_START_TEXT,
        ];
        for data in records {
            bytes.extend_from_slice(&record_head(data));
            bytes.extend_from_slice(data);
            bytes.extend_from_slice(&masked_crc(data).to_le_bytes());
        }
        fs::write(&path, &bytes).unwrap();
        let events = read_events(&path).unwrap();
        assert_eq!(events[0].what, EventData::FileVersion("brain.Event:2".into()));
        assert_eq!(events[1].scalars(), vec![("epoch_loss".to_string(), 7, 0.125)]);
        match &events[2].what {
            EventData::Summary(v) => match &v[0].value {
                SummaryData::Histogram(h) => assert_eq!(h.bucket, vec![2.0, 0.0, 3.0]),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert_eq!((events[3].step, &events[3].what), (42, &EventData::SessionLog(1)));
        let hp = events[4].hparams().unwrap();
        assert_eq!(hp.into_iter().collect::<Vec<_>>(), vec![("optimizer".to_string(), HParam::Text("adam".into()))]);
        // A flipped bit anywhere is caught by a CRC.
        bytes[30] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(read_events(&path).unwrap_err().to_string().contains("CRC"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // RFC 3720, B.4: 32 bytes of zeros, and of 0xff.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c::crc32c(&[0xffu8; 32]), 0x62a8_ab43);
    }

    #[test]
    fn histogram_buckets_close_on_the_right() {
        let h = Histogram::of(&[0.0, 1.0, 2.0, 2.0, 4.0, f64::NAN], 4).unwrap();
        assert_eq!(h.bucket_limit, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(h.bucket, vec![2.0, 2.0, 0.0, 1.0]);
        assert_eq!((h.min, h.max, h.num, h.sum, h.sum_squares), (0.0, 4.0, 5.0, 9.0, 25.0));
        let flat = Histogram::of(&[3.0, 3.0], 30).unwrap();
        assert_eq!((flat.bucket_limit, flat.bucket), (vec![3.0], vec![2.0]));
        assert!(Histogram::of(&[f64::NAN], 3).is_none());
    }
}
