//! Datasets, the loader's epochs, the IDX reader on good, damaged and real (MNIST) files, and
//! augmentation.

use std::io::Write;
use std::path::{Path, PathBuf};

use ferrograd_nn::data::augment::{Compose, Normalize, RandomCrop, RandomHorizontalFlip, RandomRotation, Transform};
use ferrograd_nn::data::{
    read_idx, write_idx, DataLoader, Dataset, IdxProblem, Mnist, TensorDataset, MAX_DECOMPRESSED_BYTES,
};
use ferrograd_nn::NnError;
use ferrograd_tensor::Tensor;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// A fresh, empty directory under the system temp dir, unique to this process and `name`.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrograd-nn-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn numbered(n: usize) -> TensorDataset<f32, i64> {
    let x = Tensor::from_fn(&[n, 2], |i| (i / 2) as f32 * if i % 2 == 0 { 1.0 } else { -1.0 });
    TensorDataset::new(x, Tensor::from_fn(&[n], |i| i as i64))
}

/// The targets of every batch of an epoch, after checking each input row matches its target.
fn epoch_targets(loader: &DataLoader<f32, i64>, epoch: u64) -> Vec<Vec<i64>> {
    loader
        .iter_epoch(epoch)
        .map(|(x, y)| {
            let (xs, ys) = (x.to_vec(), y.to_vec());
            for (k, &t) in ys.iter().enumerate() {
                assert_eq!((xs[2 * k], xs[2 * k + 1]), (t as f32, -(t as f32)), "inputs stay paired with targets");
            }
            ys
        })
        .collect()
}

#[test]
fn tensor_dataset_rows_are_views() {
    let ds = numbered(5);
    assert_eq!(ds.len(), 5);
    assert!(!ds.is_empty());
    let (x, y) = ds.get(3);
    assert_eq!((x.to_vec(), y.item()), (vec![3.0, -3.0], 3));
    assert!(x.shares_storage(ds.inputs()));
    let (xb, yb) = ds.batch(&Tensor::from_vec(vec![4, 0], &[2]));
    assert_eq!((xb.shape(), yb.to_vec()), (&[2, 2][..], vec![4, 0]));
}

#[test]
#[should_panic(expected = "TensorDataset::new: inputs [3, 2] and targets [4] need the same first dim")]
fn tensor_dataset_rejects_different_counts() {
    TensorDataset::new(Tensor::<f32>::zeros(&[3, 2]), Tensor::<i64>::zeros(&[4]));
}

#[test]
fn loader_visits_every_sample_once_per_epoch_in_a_new_order() {
    let loader = DataLoader::new(numbered(23), 5).shuffle(7);
    assert_eq!(loader.num_batches(), 5);
    let mut orders = Vec::new();
    for epoch in 0..4 {
        let batches = epoch_targets(&loader, epoch);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![5, 5, 5, 5, 3]);
        let order: Vec<i64> = batches.concat();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..23).collect::<Vec<_>>(), "epoch {epoch} visits each sample once");
        orders.push(order);
    }
    for a in 0..orders.len() {
        for b in a + 1..orders.len() {
            assert_ne!(orders[a], orders[b], "epochs {a} and {b} have the same order");
        }
    }
    let again = DataLoader::new(numbered(23), 5).shuffle(7);
    for (epoch, order) in orders.iter().enumerate() {
        assert_eq!(&epoch_targets(&again, epoch as u64).concat(), order, "same seed, same order");
    }
    let other = DataLoader::new(numbered(23), 5).shuffle(8);
    assert_ne!(epoch_targets(&other, 0).concat(), orders[0]);
}

#[test]
fn loader_drops_or_keeps_the_last_batch() {
    let keep = DataLoader::new(numbered(23), 5).shuffle(1).drop_last(false);
    let drop = DataLoader::new(numbered(23), 5).shuffle(1).drop_last(true);
    assert_eq!((keep.num_batches(), drop.num_batches()), (5, 4));
    assert_eq!(keep.iter_epoch(0).len(), 5);
    let dropped = epoch_targets(&drop, 0);
    assert!(dropped.iter().all(|b| b.len() == 5));
    let mut seen = dropped.concat();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20, "20 distinct samples when the short batch is dropped");
    // Exact multiples lose nothing either way.
    let exact = DataLoader::new(numbered(20), 5).drop_last(true);
    assert_eq!(exact.num_batches(), 4);
    let plain = DataLoader::new(numbered(7), 3);
    assert_eq!(epoch_targets(&plain, 0), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]], "no shuffle: dataset order");
    assert_eq!(epoch_targets(&plain, 5), epoch_targets(&plain, 0));
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    b.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
    b.extend_from_slice(data);
    b
}

fn idx_problem(path: &Path) -> IdxProblem {
    match read_idx(path) {
        Err(e @ NnError::Idx { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "message names the file: {msg}");
            let NnError::Idx { problem, path: p } = e else { unreachable!() };
            assert_eq!(p, path);
            problem
        }
        Err(e) => panic!("expected an IDX error, got {e}"),
        Ok(a) => panic!("expected an error, read {:?}", a.shape()),
    }
}

#[test]
fn idx_round_trip() {
    let dir = temp_dir("roundtrip");
    let path = dir.join("a-idx3-ubyte");
    let data: Vec<u8> = (0..12).map(|i| i * 20).collect();
    write_idx(&path, &[3, 2, 2], &data).unwrap();
    let a = read_idx(&path).unwrap();
    assert_eq!(a.shape(), &[3, 2, 2]);
    assert_eq!(a.bytes(), data.as_slice());
    assert_eq!(a.to_tensor().to_vec(), data);
    assert_eq!(a.path(), path);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn damaged_idx_files_give_typed_errors_naming_the_file() {
    let dir = temp_dir("damaged");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let good = idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6]);

    let mut bad = good.clone();
    bad[0] = 1;
    let p = write("magic", &bad);
    assert_eq!(idx_problem(&p), IdxProblem::BadMagic { magic: 0x0100_0802 });
    let mut bad = good.clone();
    bad[2] = 0x0D;
    assert_eq!(idx_problem(&write("float", &bad)), IdxProblem::UnsupportedDtype { code: 0x0D });
    let mut bad = good.clone();
    bad[2] = 0x42;
    assert!(matches!(idx_problem(&write("dtype", &bad)), IdxProblem::BadMagic { .. }));
    let mut bad = good.clone();
    bad[3] = 0;
    assert!(matches!(idx_problem(&write("rank0", &bad)), IdxProblem::BadMagic { .. }));

    assert_eq!(idx_problem(&write("tiny", &[0, 0])), IdxProblem::TruncatedHeader { needed: 4, found: 2 });
    assert_eq!(idx_problem(&write("header", &good[..9])), IdxProblem::TruncatedHeader { needed: 12, found: 9 });
    let p = write("truncated", &good[..good.len() - 1]);
    assert_eq!(idx_problem(&p), IdxProblem::SizeMismatch { dims: vec![2, 3], expected: 6, found: 5 });
    assert!(read_idx(&p).unwrap_err().to_string().contains("truncated IDX data"));
    let mut extra = good.clone();
    extra.push(9);
    let p = write("extra", &extra);
    assert_eq!(idx_problem(&p), IdxProblem::SizeMismatch { dims: vec![2, 3], expected: 6, found: 7 });
    assert!(read_idx(&p).unwrap_err().to_string().contains("1 extra bytes"));
    let huge = idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[]);
    assert!(matches!(idx_problem(&write("overflow", &huge)), IdxProblem::DimsOverflow { .. }));

    let missing = dir.join("missing");
    assert!(matches!(read_idx(&missing), Err(NnError::Io { path, .. }) if path == missing));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A tiny MNIST-like directory: `n_train` images of 4x3 with `n_train_labels` labels.
fn fake_mnist(name: &str, n_train: u32, n_train_labels: u32) -> PathBuf {
    let dir = temp_dir(name);
    let images = |n: u32| -> Vec<u8> { (0..n * 12).map(|i| (i * 17 % 256) as u8).collect() };
    let labels = |n: u32| -> Vec<u8> { (0..n).map(|i| (i % 10) as u8).collect() };
    write_idx(dir.join("train-images-idx3-ubyte"), &[n_train, 4, 3], &images(n_train)).unwrap();
    write_idx(dir.join("train-labels-idx1-ubyte"), &[n_train_labels], &labels(n_train_labels)).unwrap();
    write_idx(dir.join("t10k-images-idx3-ubyte"), &[2, 4, 3], &images(2)).unwrap();
    write_idx(dir.join("t10k-labels-idx1-ubyte"), &[2], &labels(2)).unwrap();
    dir
}

#[test]
fn mnist_loads_small_files_and_rejects_count_mismatch() {
    let dir = fake_mnist("mnist-ok", 5, 5);
    let m = Mnist::load(&dir).unwrap();
    assert_eq!(m.train_images.shape(), &[5, 1, 4, 3]);
    assert_eq!(m.train_labels.to_vec(), vec![0, 1, 2, 3, 4]);
    assert_eq!(m.test_images.shape(), &[2, 1, 4, 3]);
    let want: Vec<f32> = (0..60u32).map(|i| (i * 17 % 256) as f32 / 255.0).collect();
    assert_eq!(m.train_images.to_vec(), want);
    assert_eq!(m.train().len(), 5);
    assert_eq!(m.test().len(), 2);
    std::fs::remove_dir_all(dir).unwrap();

    let dir = fake_mnist("mnist-mismatch", 5, 4);
    let err = Mnist::load(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, NnError::CountMismatch { first_count: 5, second_count: 4, .. }), "{msg}");
    assert!(msg.contains("train-images-idx3-ubyte") && msg.contains("train-labels-idx1-ubyte"), "{msg}");
    std::fs::remove_dir_all(dir).unwrap();

    let dir = fake_mnist("mnist-rank", 5, 5);
    write_idx(dir.join("t10k-labels-idx1-ubyte"), &[2, 1], &[0, 1]).unwrap();
    assert!(matches!(
        Mnist::load(&dir),
        Err(NnError::Idx { problem: IdxProblem::UnexpectedRank { expected: 1, .. }, .. })
    ));
    write_idx(dir.join("t10k-labels-idx1-ubyte"), &[2], &[0, 10]).unwrap();
    assert!(matches!(
        Mnist::load(&dir),
        Err(NnError::Idx { problem: IdxProblem::LabelOutOfRange { index: 1, label: 10, .. }, .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn gz_is_decompressed_once_into_a_cache_beside_it() {
    let dir = temp_dir("gz");
    let gz = dir.join("x-idx1-ubyte.gz");
    std::fs::write(&gz, gzip(&idx_bytes(&[4], &[9, 8, 7, 6]))).unwrap();
    let a = read_idx(&gz).unwrap();
    assert_eq!((a.shape(), a.bytes()), (&[4][..], &[9, 8, 7, 6][..]));
    let cache = dir.join("x-idx1-ubyte");
    assert_eq!(a.path(), cache);
    assert_eq!(std::fs::read(&cache).unwrap(), idx_bytes(&[4], &[9, 8, 7, 6]));
    // While the .gz is unchanged, later reads use the cache as it is.
    let modified = std::fs::metadata(&cache).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(read_idx(&gz).unwrap().bytes(), &[9, 8, 7, 6]);
    assert_eq!(std::fs::metadata(&cache).unwrap().modified().unwrap(), modified, "the cache was rewritten");
    assert_eq!(names(&dir), ["x-idx1-ubyte", "x-idx1-ubyte.gz", "x-idx1-ubyte.source"], "no temporary file left");

    // A corrupt .gz fails naming it, and leaves neither a cache nor a temporary file.
    let bad = dir.join("bad-idx1-ubyte.gz");
    std::fs::write(&bad, b"\x1f\x8b\x08\x00garbage").unwrap();
    assert!(matches!(read_idx(&bad), Err(NnError::Io { path, .. }) if path == bad));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_replaced_gz_is_decompressed_again() {
    let dir = temp_dir("gz-replaced");
    let gz = dir.join("x-idx1-ubyte.gz");
    std::fs::write(&gz, gzip(&idx_bytes(&[4], &[9, 8, 7, 6]))).unwrap();
    let modified = std::fs::metadata(&gz).unwrap().modified().unwrap();
    assert_eq!(read_idx(&gz).unwrap().bytes(), &[9, 8, 7, 6]);

    // Same length and modification time, other content: the gzip trailer's CRC-32 tells.
    std::fs::write(&gz, gzip(&idx_bytes(&[4], &[1, 2, 3, 4]))).unwrap();
    std::fs::File::options().write(true).open(&gz).unwrap().set_modified(modified).unwrap();
    assert_eq!(read_idx(&gz).unwrap().bytes(), &[1, 2, 3, 4]);

    // Another length: a bigger array.
    std::fs::write(&gz, gzip(&idx_bytes(&[6], &[5, 5, 5, 5, 5, 5]))).unwrap();
    assert_eq!(read_idx(&gz).unwrap().shape(), &[6]);

    // The cache itself replaced (by hand, or an older ferrograd): rebuilt from the .gz.
    write_idx(dir.join("x-idx1-ubyte"), &[1], &[0]).unwrap();
    assert_eq!(read_idx(&gz).unwrap().bytes(), &[5; 6]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_cache_made_from_a_bad_gz_is_not_reused_once_the_gz_is_fixed() {
    let dir = temp_dir("gz-fixed");
    let gz = dir.join("x-idx1-ubyte.gz");
    let good = idx_bytes(&[4], &[9, 8, 7, 6]);
    std::fs::write(&gz, gzip(&good[..good.len() - 1])).unwrap();
    assert!(matches!(
        read_idx(&gz),
        Err(NnError::Idx { problem: IdxProblem::SizeMismatch { expected: 4, found: 3, .. }, .. })
    ));
    assert_eq!(names(&dir), ["x-idx1-ubyte.gz"], "a bad .gz leaves no cache");
    std::fs::write(&gz, gzip(&good)).unwrap();
    assert_eq!(read_idx(&gz).unwrap().bytes(), &[9, 8, 7, 6]);

    // Mnist::load reads the .gz of a split when there is one, not a plain file beside it that
    // does not match it.
    let dir = fake_mnist("mnist-gz", 5, 5);
    let labels = dir.join("train-labels-idx1-ubyte");
    std::fs::write(labels.with_extension("gz"), gzip(&idx_bytes(&[5], &[3; 5]))).unwrap();
    assert_eq!(Mnist::load(&dir).unwrap().train_labels.to_vec(), vec![3; 5]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_gz_header_is_checked_before_its_data_is_decompressed() {
    let dir = temp_dir("gz-header");
    // The header declares 24 bytes; 64 MiB follow. Only the declared bytes (and one more, to
    // see the excess) are decompressed, and no cache is written.
    let gz = dir.join("bomb-idx3-ubyte.gz");
    let mut bytes = idx_bytes(&[2, 3, 4], &[1; 24]);
    bytes.resize(bytes.len() + (64 << 20), 0);
    std::fs::write(&gz, gzip(&bytes)).unwrap();
    assert!(matches!(
        read_idx(&gz),
        Err(NnError::Idx { problem: IdxProblem::TrailingData { expected: 24, .. }, path }) if path == gz
    ));

    // A bad magic number, then 64 MiB: refused from the first 4 bytes.
    let gz = dir.join("magic-idx3-ubyte.gz");
    bytes[0] = 7;
    std::fs::write(&gz, gzip(&bytes)).unwrap();
    assert!(matches!(read_idx(&gz), Err(NnError::Idx { problem: IdxProblem::BadMagic { .. }, .. })));

    // A header declaring 8 GiB: over the limit, refused before anything is written.
    let gz = dir.join("huge-idx3-ubyte.gz");
    std::fs::write(&gz, gzip(&idx_bytes(&[65536, 65536, 2], &[]))).unwrap();
    let err = read_idx(&gz).unwrap_err();
    assert!(
        matches!(&err, NnError::Idx { problem: IdxProblem::TooLarge { bytes: 8_589_934_608, limit, .. }, .. }
            if *limit == MAX_DECOMPRESSED_BYTES),
        "{err}"
    );
    assert!(err.to_string().contains("over the limit"), "{err}");
    let gz = dir.join("short-idx3-ubyte.gz");
    std::fs::write(&gz, gzip(&[0, 0, 8, 3, 0, 0])).unwrap();
    assert!(matches!(
        read_idx(&gz),
        Err(NnError::Idx { problem: IdxProblem::TruncatedHeader { needed: 16, found: 6 }, .. })
    ));
    assert_eq!(
        names(&dir),
        ["bomb-idx3-ubyte.gz", "huge-idx3-ubyte.gz", "magic-idx3-ubyte.gz", "short-idx3-ubyte.gz"],
        "no cache, stamp or temporary file"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_empty_array_with_huge_dims_is_refused_not_a_panic_later() {
    // The 16 bytes of the report: dims [0, 2^32 - 1, 2^32 - 1] and no data.
    let bytes = [0, 0, 8, 3, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let dir = fake_mnist("mnist-empty-huge", 5, 5);
    let images = dir.join("train-images-idx3-ubyte");
    std::fs::write(&images, bytes).unwrap();
    assert_eq!(idx_problem(&images), IdxProblem::DimsOverflow { dims: vec![0, u32::MAX as usize, u32::MAX as usize] });
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_bytes(&[0], &[])).unwrap();
    let err = Mnist::load(&dir).unwrap_err();
    assert!(
        matches!(&err, NnError::Idx { path, problem: IdxProblem::DimsOverflow { .. } } if *path == images),
        "{err}"
    );

    // Through a .gz too, before anything is written.
    let gz = dir.join("empty-idx3-ubyte.gz");
    std::fs::write(&gz, gzip(&bytes)).unwrap();
    assert!(matches!(read_idx(&gz), Err(NnError::Idx { problem: IdxProblem::DimsOverflow { .. }, .. })));
    assert!(!dir.join("empty-idx3-ubyte").exists());

    // Empty arrays whose dims a tensor can hold still load.
    let ok = dir.join("ok-idx3-ubyte");
    write_idx(&ok, &[0, 65536, 65536], &[]).unwrap();
    assert_eq!(read_idx(&ok).unwrap().to_tensor().shape(), &[0, 65536, 65536]);
    std::fs::remove_dir_all(dir).unwrap();
}

proptest! {
    // Each case writes and reads a small file: 256 cases stay well under a second.
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn mutated_idx_files_never_panic(
        flips in prop::collection::vec((0usize..40, any::<u8>()), 0..6),
        cut in prop::option::of(0usize..40),
    ) {
        let dir = temp_dir("proptest");
        let mut bytes = idx_bytes(&[2, 3, 4], &(0..24).collect::<Vec<u8>>());
        for (pos, v) in flips {
            let n = bytes.len();
            bytes[pos % n] = v;
        }
        if let Some(c) = cut {
            bytes.truncate(c);
        }
        let path = dir.join("m-idx3-ubyte");
        std::fs::write(&path, &bytes).unwrap();
        match read_idx(&path) {
            Ok(a) => prop_assert_eq!(a.shape().iter().product::<usize>() + 4 + 4 * a.shape().len(), bytes.len()),
            Err(e) => prop_assert!(e.to_string().contains("m-idx3-ubyte")),
        }
    }
}

#[test]
fn real_mnist_loads_with_sane_labels() {
    let m = Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist")).unwrap();
    assert_eq!(m.train_images.shape(), &[60000, 1, 28, 28]);
    assert_eq!(m.test_images.shape(), &[10000, 1, 28, 28]);
    assert_eq!((m.train_labels.shape(), m.test_labels.shape()), (&[60000][..], &[10000][..]));
    assert_eq!(m.train_labels.at(&[0]), 5, "MNIST's first training label is 5");
    for (labels, lo, hi) in [(&m.train_labels, 5000, 7000), (&m.test_labels, 800, 1200)] {
        let mut counts = [0usize; 10];
        labels.to_vec().iter().for_each(|&l| counts[l as usize] += 1);
        assert!(counts.iter().all(|&c| (lo..=hi).contains(&c)), "label counts {counts:?}");
    }
    let px = m.test_images.to_vec();
    assert!(px.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert!(px.contains(&1.0) && px.contains(&0.0));
}

fn image(shape: &[usize]) -> Tensor<f64> {
    Tensor::from_fn(shape, |i| ((i * 37 + 11) % 101) as f64 / 100.0)
}

#[test]
fn flips_twice_is_identity_and_matches_tensor_flip() {
    let x = image(&[3, 2, 4, 5]);
    let rng = &mut StdRng::seed_from_u64(0);
    let always = RandomHorizontalFlip::new(1.0);
    let once = always.apply(&x, rng);
    assert_eq!(once, x.flip(&[-1]).contiguous());
    assert_eq!(always.apply(&once, rng), x);
    assert_eq!(RandomHorizontalFlip::new(0.0).apply(&x, rng), x);
    // Half the images of a large batch flip, each on its own draw.
    let batch = image(&[200, 1, 2, 3]);
    let out = RandomHorizontalFlip::new(0.5).apply(&batch, rng);
    let flipped = (0..200).filter(|&i| out.select(0, i) != batch.select(0, i)).count();
    assert!((60..140).contains(&flipped), "{flipped} of 200 flipped");
}

#[test]
fn crop_is_identity_without_padding_and_a_shift_with_it() {
    let x = image(&[2, 3, 6, 5]);
    let rng = &mut StdRng::seed_from_u64(1);
    assert_eq!(RandomCrop { size: (6, 5), padding: 0 }.apply(&x, rng), x);
    let crop = RandomCrop { size: (6, 5), padding: 2 };
    let out = crop.apply(&x, rng);
    assert_eq!(out.shape(), x.shape());
    let padded = x.pad(&[(0, 0), (0, 0), (2, 2), (2, 2)], 0.0);
    for n in 0..2 {
        let found =
            (0..5).any(|t| (0..5).any(|l| padded.select(0, n).narrow(1, t, 6).narrow(2, l, 5) == out.select(0, n)));
        assert!(found, "image {n} is a window of the padded image");
    }
    let small = RandomCrop::new(3, 0).apply(&x, rng);
    assert_eq!(small.shape(), &[2, 3, 3, 3]);
}

#[test]
fn rotation_by_zero_is_identity_and_right_angles_permute_pixels() {
    let x = image(&[2, 2, 5, 5]);
    let rng = &mut StdRng::seed_from_u64(2);
    assert_eq!(RandomRotation::new(0.0).apply(&x, rng), x);
    let r90 = RandomRotation::range(90.0, 90.0).apply(&x, rng);
    // Counter-clockwise, as torch.rot90(x, 1, [-2, -1]): out[i][j] = x[j][n - 1 - i].
    let want = x.transpose(-2, -1).flip(&[-2]).contiguous();
    assert!(r90.max_abs_diff(&want) < 1e-12, "{:?}", r90.max_abs_diff(&want));
    let r180 = RandomRotation::range(180.0, 180.0).apply(&x, rng);
    assert!(r180.max_abs_diff(&x.flip(&[-2, -1]).contiguous()) < 1e-12);
    // A small angle keeps the centre pixel and fills uncovered corners with zeros.
    let ones = Tensor::<f64>::ones(&[1, 7, 7]);
    let r = RandomRotation::range(45.0, 45.0).apply(&ones, rng);
    assert!((r.at(&[0, 3, 3]) - 1.0).abs() < 1e-12);
    assert_eq!(r.at(&[0, 0, 0]), 0.0);
}

#[test]
fn normalize_matches_hand_computation() {
    let x = image(&[2, 2, 3, 3]);
    let norm = Normalize::new(vec![0.5, 0.25], vec![2.0, 0.5]);
    let out = norm.apply(&x, &mut StdRng::seed_from_u64(3));
    let (xv, ov) = (x.to_vec(), out.to_vec());
    for (k, (&a, &b)) in xv.iter().zip(&ov).enumerate() {
        let ch = (k / 9) % 2;
        let want = (a - [0.5, 0.25][ch]) / [2.0, 0.5][ch];
        assert!((b - want).abs() < 1e-15, "element {k}: {b} vs {want}");
    }
}

#[test]
fn augmentation_is_reproducible_from_the_seed() {
    let pipeline: Compose<f64> = Compose::new(vec![
        Box::new(RandomCrop::new(6, 2)),
        Box::new(RandomHorizontalFlip::new(0.5)),
        Box::new(RandomRotation::new(15.0)),
        Box::new(Normalize::new(vec![0.5], vec![0.25])),
    ]);
    let x = image(&[8, 1, 6, 6]);
    let a = pipeline.apply(&x, &mut StdRng::seed_from_u64(11));
    let b = pipeline.apply(&x, &mut StdRng::seed_from_u64(11));
    let c = pipeline.apply(&x, &mut StdRng::seed_from_u64(12));
    assert_eq!(a, b);
    assert_ne!(a, c);
}
