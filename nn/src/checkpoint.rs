//! Checkpoints: named tensors in the [safetensors](https://huggingface.co/docs/safetensors) format.
//!
//! The files are the ones PyTorch reads with `safetensors.torch.load_file` and writes with
//! `safetensors.torch.save_file`: a little-endian `u64` header length, a JSON header (padded with
//! spaces to a multiple of 8 bytes) mapping each name to its dtype string (`"F32"`), shape and
//! `data_offsets`, then the tensors' bytes back to back. The header layout and its validation
//! come from Hugging Face's `safetensors` crate, so both sides agree on what a valid file is.
//!
//! - Writing is atomic ([`write_atomic`]): the bytes go to a fresh temporary file in the target's
//!   directory, which is flushed to disk and then renamed over the target. A crash or an error at
//!   any point leaves the previous file intact, an error removes the temporary file, and the
//!   temporary file of a process killed mid-write is removed by the next write to the same place.
//! - Reading memory-maps the file and copies each tensor once, into its [`Tensor`]. Everything
//!   wrong with the bytes (short file, bad JSON, offsets out of range or overlapping, a dtype
//!   ferrograd cannot hold) is an [`NnError`] naming the file and, where there is one, the
//!   tensor; no input makes the reader panic.
//! - A module's checkpoint is its [`Module::state_dict`] (parameters and buffers by dotted name,
//!   as in PyTorch): [`save_module`] and [`load_module`]. Loading checks every tensor's name,
//!   dtype and shape before assigning any, so a refused checkpoint leaves the module unchanged.
//! - Tensors of mixed element types (an optimizer's `i64` step counter beside its `f32` moments)
//!   travel as [`AnyTensor`]s through [`save_any_tensors`] and [`load_any_tensors`].

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferrograd_tensor::{DType, Element, Float, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::{Module, NnError};

/// The safetensors reader refuses larger headers; so does our writer, rather than write a file
/// nobody can read.
const MAX_HEADER_BYTES: usize = 100_000_000;

/// Elements encoded per write call when streaming a tensor's bytes.
const CHUNK_ELEMENTS: usize = 8192;

/// A tensor of any element type a checkpoint can hold.
///
/// ```
/// use ferrograd_nn::AnyTensor;
/// use ferrograd_tensor::{DType, Tensor};
/// let step = AnyTensor::from(Tensor::from_vec(vec![10i64], &[1]));
/// assert_eq!(step.dtype(), DType::I64);
/// assert!(step.clone().into_typed::<f32>().is_none());
/// assert_eq!(step.into_typed::<i64>().unwrap().to_vec(), vec![10]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum AnyTensor {
    /// `F32` in the file.
    F32(Tensor<f32>),
    /// `F64` in the file.
    F64(Tensor<f64>),
    /// `I64` in the file.
    I64(Tensor<i64>),
    /// `I32` in the file.
    I32(Tensor<i32>),
    /// `I8` in the file.
    I8(Tensor<i8>),
    /// `U8` in the file.
    U8(Tensor<u8>),
    /// `BOOL` in the file.
    Bool(Tensor<bool>),
}

macro_rules! each_variant {
    ($any:expr, $t:ident => $body:expr) => {
        match $any {
            AnyTensor::F32($t) => $body,
            AnyTensor::F64($t) => $body,
            AnyTensor::I64($t) => $body,
            AnyTensor::I32($t) => $body,
            AnyTensor::I8($t) => $body,
            AnyTensor::U8($t) => $body,
            AnyTensor::Bool($t) => $body,
        }
    };
}

impl AnyTensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        each_variant!(self, t => t.dtype())
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        each_variant!(self, t => t.shape())
    }

    /// The tensor as `Tensor<E>`, or `None` when it holds another element type.
    pub fn into_typed<E: CheckpointElement>(self) -> Option<Tensor<E>> {
        E::unwrap(self)
    }
}

impl<E: CheckpointElement> From<Tensor<E>> for AnyTensor {
    fn from(t: Tensor<E>) -> Self {
        E::wrap(t)
    }
}

/// An element type with a safetensors dtype: f32, f64, i64, i32, i8, u8 and bool.
///
/// Sealed: the byte encoding is the format's, not something to extend.
pub trait CheckpointElement: Element + sealed::Sealed {}

mod sealed {
    use super::{AnyTensor, Dtype, Element, Tensor};

    pub trait Sealed: Element {
        /// The dtype tag in the file.
        const FILE_DTYPE: Dtype;
        /// Appends the little-endian bytes of `self`.
        fn put(self, out: &mut Vec<u8>);
        /// Reads a value from exactly `size_in_bytes` little-endian bytes.
        fn get(bytes: &[u8]) -> Self;
        fn wrap(t: Tensor<Self>) -> AnyTensor;
        fn unwrap(t: AnyTensor) -> Option<Tensor<Self>>;
    }
}

macro_rules! checkpoint_element {
    ($t:ty, $variant:ident, $file:ident) => {
        impl sealed::Sealed for $t {
            const FILE_DTYPE: Dtype = Dtype::$file;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
            fn wrap(t: Tensor<Self>) -> AnyTensor {
                AnyTensor::$variant(t)
            }
            fn unwrap(t: AnyTensor) -> Option<Tensor<Self>> {
                match t {
                    AnyTensor::$variant(t) => Some(t),
                    _ => None,
                }
            }
        }
        impl CheckpointElement for $t {}
    };
}
checkpoint_element!(f32, F32, F32);
checkpoint_element!(f64, F64, F64);
checkpoint_element!(i64, I64, I64);
checkpoint_element!(i32, I32, I32);
checkpoint_element!(i8, I8, I8);
checkpoint_element!(u8, U8, U8);

impl sealed::Sealed for bool {
    const FILE_DTYPE: Dtype = Dtype::BOOL;
    fn put(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn get(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn wrap(t: Tensor<Self>) -> AnyTensor {
        AnyTensor::Bool(t)
    }
    fn unwrap(t: AnyTensor) -> Option<Tensor<Self>> {
        match t {
            AnyTensor::Bool(t) => Some(t),
            _ => None,
        }
    }
}
impl CheckpointElement for bool {}

// ------------------------------------------------------------------------------------- writing

/// Saves tensors of one element type to a safetensors file, atomically.
///
/// ```
/// use std::collections::BTreeMap;
/// use ferrograd_nn::checkpoint::{load_tensors, save_tensors};
/// use ferrograd_tensor::Tensor;
/// let path = std::env::temp_dir().join(format!("doc-save-tensors-{}.safetensors", std::process::id()));
/// let mut tensors = BTreeMap::new();
/// tensors.insert("w".to_string(), Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]));
/// save_tensors(&path, &tensors)?;
/// assert_eq!(load_tensors::<f32>(&path)?, tensors);
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), ferrograd_nn::NnError>(())
/// ```
pub fn save_tensors<E: CheckpointElement>(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, Tensor<E>>,
) -> Result<(), NnError> {
    let entries: Vec<(&str, AnyTensor)> =
        tensors.iter().map(|(n, t)| (n.as_str(), AnyTensor::from(t.clone()))).collect();
    save_entries(path.as_ref(), &entries)
}

/// Saves tensors of mixed element types to a safetensors file, atomically.
pub fn save_any_tensors(path: impl AsRef<Path>, tensors: &BTreeMap<String, AnyTensor>) -> Result<(), NnError> {
    let entries: Vec<(&str, AnyTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    save_entries(path.as_ref(), &entries)
}

fn save_entries(path: &Path, entries: &[(&str, AnyTensor)]) -> Result<(), NnError> {
    let header = header_bytes(entries).map_err(|problem| NnError::Format { path: path.to_path_buf(), problem })?;
    write_atomic(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for (_, t) in sorted(entries) {
            each_variant!(t, t => write_data(w, t))?;
        }
        Ok(())
    })
}

/// The order the safetensors crate (and so PyTorch) lays tensors out in: largest alignment
/// first, then by name, so every tensor's data starts aligned to its element size.
fn sorted<'a>(entries: &'a [(&'a str, AnyTensor)]) -> Vec<&'a (&'a str, AnyTensor)> {
    let mut order: Vec<&(&str, AnyTensor)> = entries.iter().collect();
    order.sort_by(|(ln, lt), (rn, rt)| file_dtype(rt).cmp(&file_dtype(lt)).then(ln.cmp(rn)));
    order
}

fn file_dtype(t: &AnyTensor) -> Dtype {
    fn of<E: CheckpointElement>(_: &Tensor<E>) -> Dtype {
        E::FILE_DTYPE
    }
    each_variant!(t, t => of(t))
}

/// The JSON header, padded with spaces to a multiple of 8 bytes.
fn header_bytes(entries: &[(&str, AnyTensor)]) -> Result<Vec<u8>, String> {
    if entries.iter().any(|(name, _)| *name == "__metadata__") {
        return Err("tensor name `__metadata__` is reserved by the safetensors format".into());
    }
    let mut offset = 0usize;
    let mut infos = Vec::with_capacity(entries.len());
    for (name, t) in sorted(entries) {
        let len = t.shape().iter().product::<usize>() * t.dtype().size_in_bytes();
        infos.push((
            name.to_string(),
            TensorInfo { dtype: file_dtype(t), shape: t.shape().to_vec(), data_offsets: (offset, offset + len) },
        ));
        offset += len;
    }
    let format = HashMap::from([("format".to_string(), "pt".to_string())]);
    let metadata = Metadata::new(Some(format), infos).map_err(|e| format!("cannot describe the tensors: {e}"))?;
    let mut header = serde_json::to_vec(&metadata).map_err(|e| format!("cannot write the header: {e}"))?;
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() > MAX_HEADER_BYTES {
        return Err(format!("header of {} bytes exceeds the format's limit of {MAX_HEADER_BYTES}", header.len()));
    }
    Ok(header)
}

fn write_data<E: CheckpointElement>(w: &mut dyn Write, t: &Tensor<E>) -> io::Result<()> {
    let contiguous = t.contiguous();
    let mut buf = Vec::with_capacity(CHUNK_ELEMENTS * E::DTYPE.size_in_bytes());
    for chunk in contiguous.as_slice().expect("contiguous() gives a contiguous tensor").chunks(CHUNK_ELEMENTS) {
        buf.clear();
        for &v in chunk {
            v.put(&mut buf);
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces the file at `path` with the bytes `write` produces, atomically, and removes what
/// earlier writes to `path` left behind when their process was killed.
///
/// The bytes go to a new temporary file `.NAME.PID.N.tmp` in the same directory (so the rename
/// cannot cross file systems), which is flushed and fsynced, then renamed over `path`; the
/// directory is fsynced too where the platform allows, so the rename itself survives a power
/// loss. Readers see either the old file or the new one, never a mix. If `write` or any step
/// fails (or panics), the temporary file is removed and `path` is untouched.
///
/// A process killed mid-write (SIGKILL, power loss) cannot remove its temporary file, so every
/// write first removes the temporary files of earlier writes to the same `path` whose writer is
/// gone. A writer holds an exclusive lock ([`File::try_lock`]) on its temporary file from
/// creation to rename, and the operating system drops the lock when the process dies, so a
/// temporary file that can be locked is a leftover, and one that cannot belongs to a live
/// writer (another thread or process saving to the same place) and is left alone. Where the
/// platform or file system has no file locks, leftovers are kept rather than risk removing a
/// live writer's file.
///
/// ```
/// use std::io::Write;
/// let path = std::env::temp_dir().join(format!("doc-write-atomic-{}.txt", std::process::id()));
/// ferrograd_nn::checkpoint::write_atomic(&path, |w| w.write_all(b"hello"))?;
/// assert_eq!(std::fs::read(&path).unwrap(), b"hello");
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), ferrograd_nn::NnError>(())
/// ```
pub fn write_atomic(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), NnError> {
    let path = path.as_ref();
    let io_err = |source| NnError::Io { path: path.to_path_buf(), source };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .ok_or_else(|| io_err(io::Error::new(io::ErrorKind::InvalidInput, "not a file name")))?;
    let dir = parent_dir(path);
    remove_leftovers(dir, &name);
    let (temp, file) = create_temp(dir, &name).map_err(io_err)?;
    let written = (|| {
        let mut w = BufWriter::new(&file);
        write(&mut w)?;
        w.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        // Renamed while still locked, so no other writer takes it for a leftover in between.
        fs::rename(&temp.path, path)
    })();
    written.map_err(io_err)?;
    temp.persisted();
    drop(file);
    sync_dir(dir);
    Ok(())
}

/// A temporary file that removes itself unless renamed into place, also when `write` panics.
struct TempFile {
    path: PathBuf,
    renamed: bool,
}

impl TempFile {
    fn persisted(mut self) {
        self.renamed = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            // Ours and useless now; failing to remove it must not hide the error that got us here.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates and locks a fresh temporary file for `name` in `dir`.
fn create_temp(dir: &Path, name: &str) -> io::Result<(TempFile, File)> {
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let file = match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => file,
            // A leftover of a crashed process that had our pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let guard = TempFile { path: temp, renamed: false };
        // Without file locks (unsupported here, or refused by the file system) the write is just
        // as atomic; only leftovers can no longer be told from live files, and so are kept.
        if file.lock().is_err() {
            return Ok((guard, file));
        }
        // Between `open` and `lock`, another writer's clean-up may have found the file unlocked
        // and removed it: then it has no name left, and we start again under a new one.
        if still_linked(&file, &guard.path)? {
            return Ok((guard, file));
        }
    }
}

/// Whether `file` (opened as `path`) still has a name in its directory.
fn still_linked(file: &File, path: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = path;
        Ok(file.metadata()?.nlink() > 0)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(path.exists())
    }
}

/// Whether `file_name` is a temporary file [`create_temp`] makes for the target `name`:
/// `.NAME.PID.N.tmp`, with PID and N decimal numbers (so the temporary files of `a.1` are never
/// taken for those of `a`).
fn is_temp_of(file_name: &str, name: &str) -> bool {
    let middle = file_name
        .strip_prefix('.')
        .and_then(|s| s.strip_prefix(name))
        .and_then(|s| s.strip_prefix('.'))
        .and_then(|s| s.strip_suffix(".tmp"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    middle.and_then(|m| m.split_once('.')).is_some_and(|(pid, n)| digits(pid) && digits(n))
}

/// Removes the temporary files that writers of `path` killed mid-write left behind (as
/// [`write_atomic`] does before it writes), for a reader about to use `path` without writing it.
pub(crate) fn remove_leftovers_of(path: &Path) {
    if let Some(name) = path.file_name() {
        remove_leftovers(parent_dir(path), &name.to_string_lossy());
    }
}

/// The directory a file `path` is in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Removes the temporary files of earlier writes to `dir/name` whose writers are gone (see
/// [`write_atomic`]). Best effort: a directory that cannot be listed or a file that cannot be
/// removed only means a leftover stays, which must not fail the write that follows.
fn remove_leftovers(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if !entry.file_name().to_str().is_some_and(|f| is_temp_of(f, name)) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else { continue };
        // Locked: a live writer's. No locks here: no way to tell, so it stays.
        if file.try_lock().is_ok() {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Makes a rename durable. Best effort: some platforms and file systems cannot open or sync a
/// directory, and the rename has already happened, so a failure here is not the caller's error.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

// ------------------------------------------------------------------------------------- reading

/// Loads every tensor of a safetensors file, whatever its element type.
pub fn load_any_tensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, AnyTensor>, NnError> {
    let path = path.as_ref();
    let io_err = |source| NnError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io_err)?;
    if file.metadata().map_err(io_err)?.len() == 0 {
        return decode(&[], path);
    }
    // SAFETY: the map is read-only and dropped before we return. Another process truncating the
    // file while we copy from it would fault, as with any memory-mapped reader (PyTorch's
    // included); our own writer never modifies a file in place, it renames a new one over it.
    let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
    decode(&map, path)
}

/// Loads a safetensors file whose tensors all have element type `E`.
///
/// A tensor of another dtype is an [`NnError::DTypeMismatch`] naming it.
pub fn load_tensors<E: CheckpointElement>(path: impl AsRef<Path>) -> Result<BTreeMap<String, Tensor<E>>, NnError> {
    let path = path.as_ref();
    load_any_tensors(path)?.into_iter().map(|(name, t)| Ok((name.clone(), typed(path, name, t)?))).collect()
}

fn typed<E: CheckpointElement>(path: &Path, name: String, t: AnyTensor) -> Result<Tensor<E>, NnError> {
    let found = t.dtype();
    t.into_typed::<E>().ok_or_else(|| NnError::DTypeMismatch {
        path: path.to_path_buf(),
        name,
        expected: E::DTYPE,
        found,
    })
}

fn decode(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, AnyTensor>, NnError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| header_error(bytes, path, e))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.iter() {
        let shape = view.shape();
        let data = view.data();
        let t = match view.dtype() {
            Dtype::F32 => read::<f32>(data, shape),
            Dtype::F64 => read::<f64>(data, shape),
            Dtype::I64 => read::<i64>(data, shape),
            Dtype::I32 => read::<i32>(data, shape),
            Dtype::I8 => read::<i8>(data, shape),
            Dtype::U8 => read::<u8>(data, shape),
            Dtype::BOOL => read::<bool>(data, shape),
            other => {
                return Err(NnError::UnsupportedDType {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    dtype: other.to_string(),
                })
            }
        };
        let t = t.ok_or_else(|| NnError::Format {
            path: path.to_path_buf(),
            problem: format!("tensor `{name}`: shape {shape:?} is too large to index"),
        })?;
        out.insert(name.to_string(), t);
    }
    Ok(out)
}

/// The tensor, or `None` when its shape cannot be given strides (the safetensors crate has
/// already checked that `data` holds exactly the shape's elements).
fn read<E: CheckpointElement>(data: &[u8], shape: &[usize]) -> Option<AnyTensor> {
    shape.iter().try_fold(1isize, |acc, &d| acc.checked_mul(isize::try_from(d.max(1)).ok()?))?;
    let values: Vec<E> = data.chunks_exact(E::DTYPE.size_in_bytes()).map(E::get).collect();
    Tensor::try_from_vec(values, shape).ok().map(E::wrap)
}

/// Turns the safetensors crate's error into ours, naming the tensor where the crate does not.
fn header_error(bytes: &[u8], path: &Path, e: SafeTensorError) -> NnError {
    let format = |problem: String| NnError::Format { path: path.to_path_buf(), problem };
    match e {
        SafeTensorError::HeaderTooSmall => format("file too short for a safetensors header (8 bytes)".into()),
        SafeTensorError::HeaderTooLarge => {
            format(format!("header length exceeds the limit of {MAX_HEADER_BYTES} bytes"))
        }
        SafeTensorError::InvalidHeaderLength => format("header runs past the end of the file (truncated?)".into()),
        SafeTensorError::MetadataIncompleteBuffer => {
            format("data section does not match the tensors' offsets (truncated file or trailing bytes)".into())
        }
        SafeTensorError::InvalidOffset(name) => {
            format(format!("tensor `{name}`: data offsets overlap or leave a gap after the previous tensor"))
        }
        other => diagnose(bytes, path).unwrap_or_else(|| format(format!("invalid safetensors header: {other}"))),
    }
}

/// Finds the tensor a header-level error is about: an unknown dtype string, or offsets that do
/// not span the shape's bytes. Only called on a header the crate has already refused.
fn diagnose(bytes: &[u8], path: &Path) -> Option<NnError> {
    let len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(len)?)?).ok()?;
    for (name, entry) in header.as_object()?.iter().filter(|(n, _)| *n != "__metadata__") {
        let Some(dtype) = entry.get("dtype").and_then(|d| d.as_str()) else { continue };
        let Ok(known) = serde_json::from_value::<Dtype>(dtype.into()) else {
            return Some(NnError::UnsupportedDType {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: dtype.to_string(),
            });
        };
        let Ok(info) = serde_json::from_value::<TensorInfo>(entry.clone()) else { continue };
        let (start, end) = info.data_offsets;
        let needed = info.shape.iter().try_fold(known.bitsize(), |acc, &d| acc.checked_mul(d)).map(|bits| bits / 8);
        if end.checked_sub(start) != needed {
            return Some(NnError::Format {
                path: path.to_path_buf(),
                problem: format!(
                    "tensor `{name}`: dtype {dtype} and shape {:?} do not fit its data offsets [{start}, {end}]",
                    info.shape
                ),
            });
        }
    }
    None
}

// ------------------------------------------------------------------------------------- modules

/// Saves a module's [`Module::state_dict`] (parameters and buffers by dotted name).
///
/// ```
/// use ferrograd_autograd::{Param, Var};
/// use ferrograd_nn::{load_module, save_module, Module};
/// use ferrograd_tensor::Tensor;
///
/// struct Scale {
///     w: Param,
/// }
/// impl Module for Scale {
///     fn forward(&self, x: &Var) -> Var {
///         x * &self.w.var()
///     }
///     fn params(&self) -> Vec<(&str, &Param)> {
///         vec![("weight", &self.w)]
///     }
/// }
///
/// let path = std::env::temp_dir().join(format!("doc-module-{}.safetensors", std::process::id()));
/// let trained = Scale { w: Param::new(Tensor::from_vec(vec![2.0, 3.0], &[2])) };
/// save_module(&path, &trained)?;
/// let fresh = Scale { w: Param::new(Tensor::zeros(&[2])) };
/// load_module(&path, &fresh)?;
/// assert_eq!(fresh.w.value().to_vec(), vec![2.0, 3.0]);
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), ferrograd_nn::NnError>(())
/// ```
pub fn save_module<F, M>(path: impl AsRef<Path>, module: &M) -> Result<(), NnError>
where
    F: Float + CheckpointElement,
    M: Module<F> + ?Sized,
{
    save_tensors(path, &module.state_dict())
}

/// Restores a module from a checkpoint written by [`save_module`] or by PyTorch's
/// `safetensors.torch.save_file(model.state_dict(), path)` for the same architecture.
///
/// Every tensor is checked first: a missing or extra name, a different shape or a different
/// dtype is an error naming the tensor, and then no parameter has been touched.
///
/// PyTorch's BatchNorm layers also save `num_batches_tracked`, an i64 counter that only matters
/// for `momentum=None`, which ferrograd's BatchNorm does not offer; such entries are skipped when
/// the module has no tensor of that name, so PyTorch checkpoints of BatchNorm models load.
pub fn load_module<F, M>(path: impl AsRef<Path>, module: &M) -> Result<(), NnError>
where
    F: Float + CheckpointElement,
    M: Module<F> + ?Sized,
{
    let path = path.as_ref();
    let own = module.state_dict();
    let state = load_any_tensors(path)?
        .into_iter()
        .filter(|(name, _)| own.contains_key(name) || !name.ends_with("num_batches_tracked"))
        .map(|(name, t)| Ok((name.clone(), typed(path, name, t)?)))
        .collect::<Result<BTreeMap<String, Tensor<F>>, NnError>>()?;
    module.load_state_dict(&state)
}
