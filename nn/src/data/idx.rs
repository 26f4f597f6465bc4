//! The IDX format (MNIST's) read through a memory map, and the MNIST dataset on top of it.
//!
//! An IDX file is a big-endian header (`0x00 0x00 dtype rank`, then one `u32` per dim) followed
//! by the data, row-major. Only unsigned bytes (dtype `0x08`, all MNIST files) are supported.
//! Every property of the header is checked against the file's size before any data is touched,
//! and dims that no tensor could hold (their product, or that of the non-zero ones, overflows)
//! are refused, so a damaged file gives an [`NnError`] naming it and the problem, never a panic.
//!
//! A `.gz` file is decompressed once into a cache file beside it (the name without `.gz`), then
//! mapped. The header is checked from the first decompressed bytes, and no more data is
//! decompressed than it declares (at most [`MAX_DECOMPRESSED_BYTES`]), so a bad or hostile
//! `.gz` fails before it costs time or disk. The cache is written atomically, and a small stamp
//! file beside it (`NAME.source`) records which `.gz` it was made from: the `.gz`'s length and
//! modification time, the CRC-32 and length of its content that the gzip format keeps in its
//! last 8 bytes, and the cache's own length and modification time. The cache is reused only
//! while all of these still hold, so replacing the `.gz` (or the cache) is noticed without
//! reading either file in full; a crash between writing the cache and its stamp leaves a cache
//! whose stamp does not match, which the next read rebuilds.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use ferrograd_tensor::Tensor;
use memmap2::Mmap;

use super::TensorDataset;
use crate::checkpoint::{remove_leftovers_of, write_atomic};
use crate::NnError;

const U8_DTYPE: u8 = 0x08;

/// The most bytes a `.gz` IDX file may decompress to, header included (4 GiB; MNIST's largest
/// file is 47 MB, EMNIST's 640 MB). A header that declares more is refused before anything is
/// decompressed.
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 32;

/// What is wrong with an IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    /// No tensor can have these dims: their product (or the header plus it) does not fit in
    /// `usize`, or the product of the non-zero ones does not fit in `isize` (an empty array with
    /// huge other dims).
    DimsOverflow {
        /// The dims of the header.
        dims: Vec<usize>,
    },
    /// A compressed file whose header declares more than [`MAX_DECOMPRESSED_BYTES`].
    TooLarge {
        /// The dims of the header.
        dims: Vec<usize>,
        /// Bytes the header and data would take.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A compressed file whose data goes on past what its dims call for.
    TrailingData {
        /// The dims of the header.
        dims: Vec<usize>,
        /// Data bytes the dims call for.
        expected: usize,
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
            IdxProblem::TooLarge { dims, bytes, limit } => {
                write!(f, "IDX dims {dims:?} call for {bytes} bytes, over the limit of {limit} for a compressed file")
            }
            IdxProblem::TrailingData { dims, expected } => {
                write!(f, "the decompressed IDX data goes on past the {expected} bytes its dims {dims:?} call for")
            }
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
/// decompressed into a cache beside it, which later calls reuse for as long as the `.gz` is
/// unchanged (see the [module documentation](self)).
///
/// The file must not be modified by another process while the returned array is alive (the
/// usual contract of a memory map).
///
/// # Errors
/// [`NnError::Io`] if the file cannot be read (or the cache written) or the `.gz` is corrupt;
/// [`NnError::Idx`] naming the file if its header or size is invalid.
///
/// ```no_run
/// let labels = ferrograd_nn::data::read_idx("data/mnist/train-labels-idx1-ubyte.gz")?;
/// assert_eq!(labels.shape(), &[60000]);
/// # Ok::<(), ferrograd_nn::NnError>(())
/// ```
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray, NnError> {
    let path = path.as_ref();
    if is_gz(path) {
        let cache = path.with_extension("");
        let stamp_path = stamp_path(&cache);
        remove_leftovers_of(&cache);
        remove_leftovers_of(&stamp_path);
        let fresh =
            fs::read(&stamp_path).ok().is_some_and(|s| stamp(path, &cache).is_ok_and(|now| s == now.as_bytes()));
        if !fresh {
            decompress(path, &cache)?;
            let now = stamp(path, &cache).map_err(io_error(path))?;
            write_atomic(&stamp_path, |w| w.write_all(now.as_bytes()))?;
        }
        map_idx(&cache)
    } else {
        map_idx(path)
    }
}

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// The stamp file of a cache: `NAME.source` beside it.
fn stamp_path(cache: &Path) -> PathBuf {
    let mut name = cache.as_os_str().to_owned();
    name.push(".source");
    PathBuf::from(name)
}

/// What the stamp of a cache made from `gz` must say (see the module documentation).
fn stamp(gz: &Path, cache: &Path) -> io::Result<String> {
    let identity = |meta: &fs::Metadata| {
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        format!("{} {}", meta.len(), mtime.map_or("unknown".into(), |d| d.as_nanos().to_string()))
    };
    let mut file = File::open(gz)?;
    let meta = file.metadata()?;
    let mut trailer = [0u8; 8];
    if meta.len() >= 8 {
        file.seek(SeekFrom::End(-8))?;
        file.read_exact(&mut trailer)?;
    }
    Ok(format!(
        "ferrograd IDX cache\nsource {} {:016x}\ncache {}\n",
        identity(&meta),
        u64::from_le_bytes(trailer),
        identity(&fs::metadata(cache)?)
    ))
}

/// Reads until `buf` is full or the input ends; the number of bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Decompresses `gz` into `cache` (atomically: an interrupted run leaves the previous cache or
/// none), checking the header from the first bytes and decompressing only the data it declares.
fn decompress(gz: &Path, cache: &Path) -> Result<(), NnError> {
    let file = File::open(gz).map_err(io_error(gz))?;
    // Every member, as gunzip and Python's gzip read them.
    let mut input = flate2::read::MultiGzDecoder::new(io::BufReader::new(file));
    let mut header = vec![0u8; 4];
    let found = read_up_to(&mut input, &mut header).map_err(io_error(gz))?;
    if found < 4 {
        return Err(idx_error(gz, IdxProblem::TruncatedHeader { needed: 4, found }));
    }
    let header_len = header_len(&header).map_err(|p| idx_error(gz, p))?;
    header.resize(header_len, 0);
    let found = 4 + read_up_to(&mut input, &mut header[4..]).map_err(io_error(gz))?;
    if found < header_len {
        return Err(idx_error(gz, IdxProblem::TruncatedHeader { needed: header_len, found }));
    }
    let (dims, data_len) = parse_dims(&header).map_err(|p| idx_error(gz, p))?;
    let bytes = header_len as u64 + data_len as u64;
    if bytes > MAX_DECOMPRESSED_BYTES {
        return Err(idx_error(gz, IdxProblem::TooLarge { dims, bytes, limit: MAX_DECOMPRESSED_BYTES }));
    }
    // What went wrong on the `.gz` side, as opposed to writing the cache.
    let mut failure = None;
    let written = write_atomic(cache, |w| {
        let mut fail = |e: NnError| {
            failure = Some(e);
            io::Error::other("the .gz is invalid")
        };
        w.write_all(&header)?;
        let mut buf = vec![0u8; 1 << 16];
        let mut copied = 0;
        while copied < data_len {
            let want = buf.len().min(data_len - copied);
            let n = read_up_to(&mut input, &mut buf[..want]).map_err(|e| fail(io_error(gz)(e)))?;
            if n == 0 {
                let problem = IdxProblem::SizeMismatch { dims: dims.clone(), expected: data_len, found: copied };
                return Err(fail(idx_error(gz, problem)));
            }
            w.write_all(&buf[..n])?;
            copied += n;
        }
        // Reading on to the end also checks the gzip trailer (CRC-32 and length).
        if read_up_to(&mut input, &mut buf[..1]).map_err(|e| fail(io_error(gz)(e)))? > 0 {
            return Err(fail(idx_error(gz, IdxProblem::TrailingData { dims: dims.clone(), expected: data_len })));
        }
        Ok(())
    });
    match (written, failure) {
        (Err(_), Some(e)) => Err(e),
        (written, _) => written,
    }
}

/// The header's length from its first 4 bytes (magic, dtype and rank), checked.
fn header_len(first: &[u8]) -> Result<usize, IdxProblem> {
    let magic = u32::from_be_bytes([first[0], first[1], first[2], first[3]]);
    let (code, rank) = (first[2], first[3] as usize);
    if first[0] != 0 || first[1] != 0 || rank == 0 {
        return Err(IdxProblem::BadMagic { magic });
    }
    if code != U8_DTYPE {
        return Err(if matches!(code, 0x09 | 0x0B | 0x0C | 0x0D | 0x0E) {
            IdxProblem::UnsupportedDtype { code }
        } else {
            IdxProblem::BadMagic { magic }
        });
    }
    Ok(4 + 4 * rank)
}

/// The dims of a whole header and the data bytes they call for, refusing dims no tensor can
/// have (see [`IdxProblem::DimsOverflow`]).
fn parse_dims(header: &[u8]) -> Result<(Vec<usize>, usize), IdxProblem> {
    let dims: Vec<usize> =
        header[4..].chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let indexable = dims.iter().try_fold(1isize, |acc, &d| acc.checked_mul(isize::try_from(d.max(1)).ok()?)).is_some();
    let numel = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|n| indexable && n.checked_add(header.len()).is_some());
    match numel {
        Some(n) => Ok((dims, n)),
        None => Err(IdxProblem::DimsOverflow { dims }),
    }
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
    let header_len = header_len(&map[..4]).map_err(|p| idx_error(path, p))?;
    if found < header_len {
        return Err(idx_error(path, IdxProblem::TruncatedHeader { needed: header_len, found }));
    }
    let (dims, expected) = parse_dims(&map[..header_len]).map_err(|p| idx_error(path, p))?;
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
    /// Loads the four standard files from `dir`: for each, `train-images-idx3-ubyte.gz` (etc.)
    /// if present, through its cache (see [`read_idx`]), else the uncompressed
    /// `train-images-idx3-ubyte`.
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

/// The `.gz` if there is one: the plain file beside it is its cache, valid only while it matches.
fn locate(dir: &Path, name: &str) -> PathBuf {
    let gz = dir.join(format!("{name}.gz"));
    if gz.exists() {
        gz
    } else {
        dir.join(name)
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

/// Writes an IDX file of unsigned bytes (used to build test files and small datasets),
/// atomically (see [`write_atomic`]).
///
/// # Errors
/// [`NnError::Io`] naming the file.
///
/// # Panics
/// If `data.len()` is not the product of `dims`, or there are more than 255 dims, at the
/// caller's line.
#[track_caller]
pub fn write_idx(path: impl AsRef<Path>, dims: &[u32], data: &[u8]) -> Result<(), NnError> {
    let path = path.as_ref();
    let numel: usize = dims.iter().map(|&d| d as usize).product();
    assert_eq!(numel, data.len(), "write_idx: dims {dims:?} need {numel} bytes, got {}", data.len());
    let rank = u8::try_from(dims.len()).expect("write_idx: at most 255 dims");
    let mut bytes = vec![0, 0, U8_DTYPE, rank];
    bytes.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
    bytes.extend_from_slice(data);
    write_atomic(path, |w| w.write_all(&bytes))
}
