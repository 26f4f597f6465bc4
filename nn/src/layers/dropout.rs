//! `Dropout`: inverted dropout, as `torch.nn.Dropout`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use ferrograd_autograd::Var;
use ferrograd_tensor::{Float, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Module;

/// In training, zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`,
/// so the expected output equals the input; in evaluation, the identity.
///
/// The mask comes from the layer's own generator, seeded at construction: two layers built with
/// the same seed draw the same masks in the same order.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::{layers::Dropout, Module};
/// use ferrograd_tensor::Tensor;
/// let drop = Dropout::new(0.5, 42);
/// let x = Var::constant(Tensor::<f32>::ones(&[1000]));
/// let y = drop.forward(&x).to_vec();
/// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
/// drop.eval();
/// assert_eq!(drop.forward(&x).to_vec(), x.to_vec());
/// ```
#[derive(Debug, Module)]
#[module(any_float)]
pub struct Dropout {
    #[module(skip)]
    p: f64,
    #[module(skip)]
    rng: Mutex<StdRng>,
    #[module(training)]
    training: AtomicBool,
}

impl Dropout {
    /// A layer dropping with probability `p`, its masks drawn from a generator seeded with `seed`.
    ///
    /// # Panics
    /// If `p` is not in `[0, 1]`.
    #[track_caller]
    pub fn new(p: f64, seed: u64) -> Self {
        assert!((0.0..=1.0).contains(&p), "Dropout: probability {p} is not in [0, 1]");
        Dropout { p, rng: Mutex::new(StdRng::seed_from_u64(seed)), training: AtomicBool::new(true) }
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// Switches to training (`true`) or evaluation mode; the same as [`Module::train`], callable
    /// without naming the float type (`Dropout` is a `Module<F>` for every `F`).
    pub fn train(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    /// Switches to evaluation mode (see [`Dropout::train`]).
    pub fn eval(&self) {
        self.train(false);
    }
}

impl Dropout {
    /// Drops elements in training mode, the identity in evaluation (also [`Module::forward`]).
    #[track_caller]
    pub fn forward<F: Float>(&self, input: &Var<F>) -> Var<F> {
        if !self.is_training() || self.p == 0.0 {
            return input.clone();
        }
        // p = 1 drops everything (PyTorch returns zeros rather than dividing by zero).
        let keep = if self.p < 1.0 { F::from_f64(1.0 / (1.0 - self.p)) } else { F::zero() };
        let mut rng = self.rng.lock().expect("Dropout generator lock poisoned");
        let mask = Tensor::from_fn(input.shape(), |_| if rng.random::<f64>() < self.p { F::zero() } else { keep });
        input * &Var::constant(mask)
    }
}
