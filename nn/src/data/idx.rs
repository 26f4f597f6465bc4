//! The IDX format (MNIST's) read through a memory map, and the MNIST dataset on top of it.
//!
//! An IDX file is a big-endian header (`0x00 0x00 dtype rank`, then one `u32` per dim) followed
//! by the data, row-major. Only unsigned bytes (dtype `0x08`, all MNIST files) are supported.
//! Every property of the header is checked against the file's size before any data is touched,
//! so a damaged file gives an [`NnError`] naming it and the problem, never a panic. A `.gz` file
//! is decompressed once into a cache file beside it (the name without `.gz`), then mapped.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ferrograd_tensor::Tensor;
use memmap2::Mmap;

use super::TensorDataset;
use crate::NnError;

const U8_DTYPE: u8 = 0x08;

/// What is wrong with an IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdxProblem {
    /// Shorter than its header.
    TruncatedHeader {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes in the file.
        found: usize,
    },
    /// The first two bytes are not zero, or the rank is zero.
    BadMagic {
        /// The first four bytes, big-endian.
        magic: u32,
    },
    /// A valid IDX element type this reader does not support (only unsigned bytes).
    UnsupportedDtype {
        /// The type code (third byte).
        code: u8,
    },
    /// The product of the dims (or the header plus it) does not fit in `usize`.
    DimsOverflow {
        /// The dims of the header.
        dims: Vec<usize>,
    },
    /// The data is shorter or longer than the dims say.
    SizeMismatch {
        /// The dims of the header.
        dims: Vec<usize>,
        /// Data bytes the dims call for.
        expected: usize,
        /// Data bytes in the file.
        found: usize,
    },
    /// The array does not have the rank its role needs (MNIST images 3, labels 1).
    UnexpectedRank {
        /// The rank needed.
        expected: usize,
        /// The dims found.
        dims: Vec<usize>,
    },
    /// A class label outside the range the dataset allows.
    LabelOutOfRange {
        /// Position of the label.
        index: usize,
        /// Its value.
        label: u8,
        /// Number of classes.
        classes: usize,
    },
}

impl fmt::Display for IdxProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdxProblem::TruncatedHeader { needed, found } => {
                write!(f, "truncated IDX header: needs {needed} bytes, the file has {found}")
            }
            IdxProblem::BadMagic { magic } => write!(f, "bad IDX magic number {magic:#010x}"),
            IdxProblem::UnsupportedDtype { code } => {
                write!(f, "unsupported IDX element type {code:#04x} (only unsigned bytes, 0x08, are supported)")
            }
            IdxProblem::DimsOverflow { dims } => write!(f, "IDX dims {dims:?} overflow the address space"),
            IdxProblem::SizeMismatch { dims, expected, found } if found < expected => {
                write!(f, "truncated IDX data: dims {dims:?} need {expected} bytes, the file has {found}")
            }
            IdxProblem::SizeMismatch { dims, expected, found } => write!(
                f,
                "{} extra bytes after the IDX data: dims {dims:?} need {expected} bytes, the file has {found}",
                found - expected
            ),
            IdxProblem::UnexpectedRank { expected, dims } => {
                write!(f, "expected an IDX array of rank {expected}, found dims {dims:?}")
            }
            IdxProblem::LabelOutOfRange { index, label, classes } => {
                write!(f, "label {label} at index {index} is not one of the {classes} classes")
            }
        }
    }
}

/// A memory-mapped IDX array of unsigned bytes (zero-copy until [`IdxArray::to_tensor`]).
#[derive(Debug)]
pub struct IdxArray {
    path: PathBuf,
    dims: Vec<usize>,
    header_len: usize,
    map: Mmap,
}

impl IdxArray {
    /// The file that was mapped (the cache file for a `.gz`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The dims from the header.
    pub fn shape(&self) -> &[usize] {
        &self.dims
    }

    /// The data bytes, row-major, straight from the map.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.header_len..]
    }

    /// The data copied into a tensor.
    pub fn to_tensor(&self) -> Tensor<u8> {
        Tensor::from_slice(self.bytes(), &self.dims)
    }

    fn expect_rank(&self, rank: usize) -> Result<(), NnError> {
        if self.dims.len() == rank {
            Ok(())
        } else {
            Err(idx_error(&self.path, IdxProblem::UnexpectedRank { expected: rank, dims: self.dims.clone() }))
        }
    }
}

fn idx_error(path: &Path, problem: IdxProblem) -> NnError {
    NnError::Idx { path: path.to_path_buf(), problem }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> NnError + '_ {
    move |source| NnError::Io { path: path.to_path_buf(), source }
}

/// Reads an IDX file of unsigned bytes by memory-mapping it; a path ending in `.gz` is first
/// decompressed into a cache beside it (reused by later calls).
///
/// The file must not be modified by another process while the returned array is alive (the
/// usual contract of a memory map).
///
/// # Errors
/// [`NnError::Io`] if the file cannot be read (or the cache written); [`NnError::Idx`] naming
/// the file if its header or size is invalid.
///
/// ```no_run
/// let labels = ferrograd_nn::data::read_idx("data/mnist/train-labels-idx1-ubyte.gz")?;
/// assert_eq!(labels.shape(), &[60000]);
/// # Ok::<(), ferrograd_nn::NnError>(())
/// ```
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray, NnError> {
    let path = path.as_ref();
    if path.extension().is_some_and(|e| e == "gz") {
        let cache = path.with_extension("");
        if !cache.exists() {
            decompress(path, &cache)?;
        }
        map_idx(&cache)
    } else {
        map_idx(path)
    }
}

/// Decompresses `gz` into `cache` through a temporary file renamed into place, so an
/// interrupted run leaves either no cache or a complete one.
fn decompress(gz: &Path, cache: &Path) -> Result<(), NnError> {
    let file = File::open(gz).map_err(io_error(gz))?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut tmp_name = cache.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}-{stamp}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut out = io::BufWriter::new(File::create(&tmp).map_err(io_error(&tmp))?);
        io::copy(&mut flate2::read::GzDecoder::new(io::BufReader::new(file)), &mut out).map_err(io_error(gz))?;
        out.into_inner().map_err(|e| io_error(&tmp)(e.into_error()))?.sync_all().map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, cache).map_err(io_error(cache))
    })();
    if result.is_err() {
        // Best effort: the temporary file is useless now, and a failure to remove it changes
        // nothing about the error reported.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn map_idx(path: &Path) -> Result<IdxArray, NnError> {
    let file = File::open(path).map_err(io_error(path))?;
    let len = file.metadata().map_err(io_error(path))?.len();
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len < 4 {
        return Err(idx_error(path, IdxProblem::TruncatedHeader { needed: 4, found: len }));
    }
    // SAFETY: the map is only read, and `read_idx` documents that the file must not change
    // while the array lives; every offset below is checked against the mapped length.
    let map = unsafe { Mmap::map(&file) }.map_err(io_error(path))?;
    let found = map.len();
    let magic = u32::from_be_bytes([map[0], map[1], map[2], map[3]]);
    let (code, rank) = (map[2], map[3] as usize);
    if map[0] != 0 || map[1] != 0 || rank == 0 {
        return Err(idx_error(path, IdxProblem::BadMagic { magic }));
    }
    if code != U8_DTYPE {
        return Err(idx_error(
            path,
            if matches!(code, 0x09 | 0x0B | 0x0C | 0x0D | 0x0E) {
                IdxProblem::UnsupportedDtype { code }
            } else {
                IdxProblem::BadMagic { magic }
            },
        ));
    }
    let header_len = 4 + 4 * rank;
    if found < header_len {
        return Err(idx_error(path, IdxProblem::TruncatedHeader { needed: header_len, found }));
    }
    let dims: Vec<usize> =
        map[4..header_len].chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|n| n.checked_add(header_len).is_some())
        .ok_or_else(|| idx_error(path, IdxProblem::DimsOverflow { dims: dims.clone() }))?;
    if found - header_len != expected {
        return Err(idx_error(path, IdxProblem::SizeMismatch { dims, expected, found: found - header_len }));
    }
    Ok(IdxArray { path: path.to_path_buf(), dims, header_len, map })
}

/// The MNIST handwritten digits: 60000 training and 10000 test images of 28x28 pixels.
///
/// ```no_run
/// use ferrograd_nn::data::{DataLoader, Mnist};
/// let mnist = Mnist::load("data/mnist")?;
/// assert_eq!(mnist.train_images.shape(), &[60000, 1, 28, 28]);
/// let loader = DataLoader::new(mnist.train(), 64).shuffle(0);
/// # Ok::<(), ferrograd_nn::NnError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Mnist {
    /// Training images `[60000, 1, 28, 28]`, scaled to `[0, 1]`.
    pub train_images: Tensor<f32>,
    /// Training labels `[60000]`, 0 to 9.
    pub train_labels: Tensor<i64>,
    /// Test images `[10000, 1, 28, 28]`, scaled to `[0, 1]`.
    pub test_images: Tensor<f32>,
    /// Test labels `[10000]`, 0 to 9.
    pub test_labels: Tensor<i64>,
}

impl Mnist {
    /// Loads the four standard files from `dir`: for each, the uncompressed
    /// `train-images-idx3-ubyte` (etc.) if present, else the `.gz` (decompressed once into a
    /// cache beside it).
    ///
    /// # Errors
    /// A missing or malformed file, an array of the wrong rank, a label above 9, or image and
    /// label files with different sample counts (naming both files).
    pub fn load(dir: impl AsRef<Path>) -> Result<Mnist, NnError> {
        let dir = dir.as_ref();
        let (train_images, train_labels) = load_split(dir, "train")?;
        let (test_images, test_labels) = load_split(dir, "t10k")?;
        Ok(Mnist { train_images, train_labels, test_images, test_labels })
    }

    /// The training split as a dataset.
    pub fn train(&self) -> TensorDataset<f32, i64> {
        TensorDataset::new(self.train_images.clone(), self.train_labels.clone())
    }

    /// The test split as a dataset.
    pub fn test(&self) -> TensorDataset<f32, i64> {
        TensorDataset::new(self.test_images.clone(), self.test_labels.clone())
    }
}

fn locate(dir: &Path, name: &str) -> PathBuf {
    let plain = dir.join(name);
    if plain.exists() {
        plain
    } else {
        dir.join(format!("{name}.gz"))
    }
}

fn load_split(dir: &Path, prefix: &str) -> Result<(Tensor<f32>, Tensor<i64>), NnError> {
    let images = read_idx(locate(dir, &format!("{prefix}-images-idx3-ubyte")))?;
    let labels = read_idx(locate(dir, &format!("{prefix}-labels-idx1-ubyte")))?;
    images.expect_rank(3)?;
    labels.expect_rank(1)?;
    let (n, h, w) = (images.shape()[0], images.shape()[1], images.shape()[2]);
    if labels.shape()[0] != n {
        return Err(NnError::CountMismatch {
            first: images.path().to_path_buf(),
            first_count: n,
            second: labels.path().to_path_buf(),
            second_count: labels.shape()[0],
        });
    }
    if let Some((index, &label)) = labels.bytes().iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(idx_error(labels.path(), IdxProblem::LabelOutOfRange { index, label, classes: 10 }));
    }
    let pixels: Vec<f32> = images.bytes().iter().map(|&b| f32::from(b) / 255.0).collect();
    let targets: Vec<i64> = labels.bytes().iter().map(|&b| i64::from(b)).collect();
    Ok((Tensor::from_vec(pixels, &[n, 1, h, w]), Tensor::from_vec(targets, &[n])))
}

/// Writes an IDX file of unsigned bytes (used to build test files and small datasets).
///
/// # Errors
/// [`NnError::Io`] naming the file.
///
/// # Panics
/// If `data.len()` is not the product of `dims`, or there are more than 255 dims.
pub fn write_idx(path: impl AsRef<Path>, dims: &[u32], data: &[u8]) -> Result<(), NnError> {
    let path = path.as_ref();
    let numel: usize = dims.iter().map(|&d| d as usize).product();
    assert_eq!(numel, data.len(), "write_idx: dims {dims:?} need {numel} bytes, got {}", data.len());
    let rank = u8::try_from(dims.len()).expect("write_idx: at most 255 dims");
    let mut bytes = vec![0, 0, U8_DTYPE, rank];
    bytes.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
    bytes.extend_from_slice(data);
    File::create(path).and_then(|mut f| f.write_all(&bytes)).map_err(io_error(path))
}
