//! Data augmentation on image tensors `[.., C, H, W]`, driven by a seeded RNG.
//!
//! Every dim before the last three is a batch dim: each image `[C, H, W]` gets its own random
//! draw (flip or not, crop offset, angle), all its channels the same one. The same RNG state
//! gives the same result, so a seeded [`StdRng`] makes a run reproducible.
//!
//! ```
//! use ferrograd_nn::data::augment::{Compose, Normalize, RandomCrop, RandomHorizontalFlip, Transform};
//! use ferrograd_tensor::Tensor;
//! use rand::{rngs::StdRng, SeedableRng};
//! let augment = Compose::new(vec![
//!     Box::new(RandomCrop::new(28, 2)),
//!     Box::new(RandomHorizontalFlip::new(0.5)),
//!     Box::new(Normalize::new(vec![0.1307], vec![0.3081])),
//! ]);
//! let batch = Tensor::<f32>::zeros(&[8, 1, 28, 28]);
//! let out = augment.apply(&batch, &mut StdRng::seed_from_u64(0));
//! assert_eq!(out.shape(), &[8, 1, 28, 28]);
//! ```

use ferrograd_tensor::{Element, Float, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

/// A (possibly random) map from an image tensor to another.
pub trait Transform<F: Float>: Send + Sync {
    /// Transforms `x` (`[.., C, H, W]`), drawing randomness from `rng`.
    fn apply(&self, x: &Tensor<F>, rng: &mut StdRng) -> Tensor<F>;
}

/// The image dims of `x`: `(leading dims, images, C, H, W)`.
#[track_caller]
fn image_dims(op: &str, x: &Tensor<impl Element>) -> (Vec<usize>, usize, usize, usize, usize) {
    let s = x.shape();
    assert!(s.len() >= 3, "{op}: expected an image tensor [.., C, H, W], got shape {s:?}");
    let r = s.len();
    let lead = s[..r - 3].to_vec();
    (lead.clone(), lead.iter().product(), s[r - 3], s[r - 2], s[r - 1])
}

fn with_hw(lead: &[usize], c: usize, h: usize, w: usize) -> Vec<usize> {
    let mut shape = lead.to_vec();
    shape.extend([c, h, w]);
    shape
}

/// Mirrors each image left-right with probability `p`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomHorizontalFlip {
    /// Probability of flipping an image.
    pub p: f64,
}

impl RandomHorizontalFlip {
    /// Flips with probability `p` (torchvision's default is 0.5).
    ///
    /// # Panics
    /// If `p` is outside `[0, 1]`.
    #[track_caller]
    pub fn new(p: f64) -> Self {
        assert!((0.0..=1.0).contains(&p), "RandomHorizontalFlip: p must be in [0, 1], got {p}");
        RandomHorizontalFlip { p }
    }
}

impl<F: Float> Transform<F> for RandomHorizontalFlip {
    fn apply(&self, x: &Tensor<F>, rng: &mut StdRng) -> Tensor<F> {
        let (_, n, c, h, w) = image_dims("RandomHorizontalFlip", x);
        let mut data = x.contiguous().to_vec();
        for image in data.chunks_mut((c * h * w).max(1)).take(n) {
            if rng.random::<f64>() < self.p {
                image.chunks_mut(w.max(1)).for_each(<[F]>::reverse);
            }
        }
        Tensor::from_vec(data, x.shape())
    }
}

/// Pads each image with `padding` zeros on every side, then cuts a `size` window at a random
/// position (torchvision's `RandomCrop(size, padding)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RandomCrop {
    /// Output height and width.
    pub size: (usize, usize),
    /// Zeros added on each side before cropping.
    pub padding: usize,
}

impl RandomCrop {
    /// A square `size x size` crop after padding by `padding`.
    pub fn new(size: usize, padding: usize) -> Self {
        RandomCrop { size: (size, size), padding }
    }
}

impl<F: Float> Transform<F> for RandomCrop {
    #[track_caller]
    fn apply(&self, x: &Tensor<F>, rng: &mut StdRng) -> Tensor<F> {
        let (lead, n, c, h, w) = image_dims("RandomCrop", x);
        let (oh, ow, p) = (self.size.0, self.size.1, self.padding);
        assert!(
            oh <= h + 2 * p && ow <= w + 2 * p,
            "RandomCrop: crop {oh}x{ow} is larger than the padded image {}x{} (shape {:?}, padding {p})",
            h + 2 * p,
            w + 2 * p,
            x.shape()
        );
        let src = x.contiguous().to_vec();
        let mut out = vec![F::zero(); n * c * oh * ow];
        for img in 0..n {
            // Offsets in padded coordinates; subtracting the padding gives the source row/col.
            let top = rng.random_range(0..=h + 2 * p - oh);
            let left = rng.random_range(0..=w + 2 * p - ow);
            for ch in 0..c {
                let (src_plane, dst_plane) = ((img * c + ch) * h * w, (img * c + ch) * oh * ow);
                for i in 0..oh {
                    let Some(si) = (top + i).checked_sub(p).filter(|&si| si < h) else { continue };
                    for j in 0..ow {
                        if let Some(sj) = (left + j).checked_sub(p).filter(|&sj| sj < w) {
                            out[dst_plane + i * ow + j] = src[src_plane + si * w + sj];
                        }
                    }
                }
            }
        }
        Tensor::from_vec(out, &with_hw(&lead, c, oh, ow))
    }
}

/// Rotates each image about its centre by an angle drawn uniformly from
/// `[min_degrees, max_degrees]`, counter-clockwise as displayed (rows going down, like
/// torchvision), with bilinear sampling and zeros where the source falls outside.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomRotation {
    /// Smallest angle, in degrees.
    pub min_degrees: f64,
    /// Largest angle, in degrees.
    pub max_degrees: f64,
}

impl RandomRotation {
    /// Angles in `[-degrees, degrees]`.
    ///
    /// # Panics
    /// If `degrees` is not finite.
    #[track_caller]
    pub fn new(degrees: f64) -> Self {
        Self::range(-degrees.abs(), degrees.abs())
    }

    /// Angles in `[min_degrees, max_degrees]`.
    ///
    /// # Panics
    /// If `min_degrees > max_degrees` or either is not finite.
    #[track_caller]
    pub fn range(min_degrees: f64, max_degrees: f64) -> Self {
        assert!(
            min_degrees.is_finite() && max_degrees.is_finite() && min_degrees <= max_degrees,
            "RandomRotation: bad angle range [{min_degrees}, {max_degrees}]"
        );
        RandomRotation { min_degrees, max_degrees }
    }
}

impl<F: Float> Transform<F> for RandomRotation {
    fn apply(&self, x: &Tensor<F>, rng: &mut StdRng) -> Tensor<F> {
        let (_, n, c, h, w) = image_dims("RandomRotation", x);
        let src = x.contiguous().to_vec();
        let mut out = vec![F::zero(); src.len()];
        let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
        for img in 0..n {
            let angle = if self.min_degrees == self.max_degrees {
                self.min_degrees
            } else {
                rng.random_range(self.min_degrees..=self.max_degrees)
            };
            let (sin, cos) = angle.to_radians().sin_cos();
            for i in 0..h {
                for j in 0..w {
                    let (dx, dy) = (j as f64 - cx, i as f64 - cy);
                    // Inverse map: where in the source this output pixel comes from.
                    let (sx, sy) = (cos * dx - sin * dy + cx, sin * dx + cos * dy + cy);
                    let (x0, y0) = (sx.floor(), sy.floor());
                    let (fx, fy) = (sx - x0, sy - y0);
                    let taps = [(y0, x0, (1.0 - fy) * (1.0 - fx)), (y0, x0 + 1.0, (1.0 - fy) * fx)];
                    let taps = taps.into_iter().chain([(y0 + 1.0, x0, fy * (1.0 - fx)), (y0 + 1.0, x0 + 1.0, fy * fx)]);
                    let inside: Vec<(usize, f64)> = taps
                        .filter(|&(y, x, wt)| wt != 0.0 && y >= 0.0 && x >= 0.0 && y < h as f64 && x < w as f64)
                        .map(|(y, x, wt)| (y as usize * w + x as usize, wt))
                        .collect();
                    for ch in 0..c {
                        let plane = (img * c + ch) * h * w;
                        let v: f64 = inside.iter().map(|&(k, wt)| src[plane + k].to_f64() * wt).sum();
                        out[plane + i * w + j] = <F as Element>::from_f64(v);
                    }
                }
            }
        }
        Tensor::from_vec(out, x.shape())
    }
}

/// `(x - mean[c]) / std[c]` per channel (deterministic).
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    /// Per-channel means.
    pub mean: Vec<f64>,
    /// Per-channel standard deviations.
    pub std: Vec<f64>,
}

impl Normalize {
    /// One mean and one standard deviation per channel.
    ///
    /// # Panics
    /// If the lengths differ or a standard deviation is not positive.
    #[track_caller]
    pub fn new(mean: Vec<f64>, std: Vec<f64>) -> Self {
        assert_eq!(mean.len(), std.len(), "Normalize: {} means but {} stds", mean.len(), std.len());
        assert!(std.iter().all(|&s| s > 0.0), "Normalize: stds must be positive, got {std:?}");
        Normalize { mean, std }
    }
}

impl<F: Float> Transform<F> for Normalize {
    #[track_caller]
    fn apply(&self, x: &Tensor<F>, _rng: &mut StdRng) -> Tensor<F> {
        let (_, _, c, h, w) = image_dims("Normalize", x);
        assert_eq!(c, self.mean.len(), "Normalize: {} channels in shape {:?}, {} means", c, x.shape(), self.mean.len());
        let mut data = x.contiguous().to_vec();
        for (k, plane) in data.chunks_mut((h * w).max(1)).enumerate() {
            let (m, s) = (<F as Element>::from_f64(self.mean[k % c]), <F as Element>::from_f64(self.std[k % c]));
            plane.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
        Tensor::from_vec(data, x.shape())
    }
}

/// Several transforms applied in order.
pub struct Compose<F: Float> {
    transforms: Vec<Box<dyn Transform<F>>>,
}

impl<F: Float> Compose<F> {
    /// Applies `transforms` first to last.
    pub fn new(transforms: Vec<Box<dyn Transform<F>>>) -> Self {
        Compose { transforms }
    }
}

impl<F: Float> Transform<F> for Compose<F> {
    fn apply(&self, x: &Tensor<F>, rng: &mut StdRng) -> Tensor<F> {
        self.transforms.iter().fold(x.clone(), |acc, t| t.apply(&acc, rng))
    }
}
