//! Knowledge distillation (Hinton, Vinyals and Dean, 2015): a small student learns from the
//! softened outputs of a frozen teacher as well as from the hard labels.
//!
//! The loss is `alpha * T² * KL(softmax(teacher / T) || softmax(student / T))` (KL averaged over
//! the batch) plus `(1 - alpha) * cross_entropy(student, labels)`. The `T²` factor keeps the
//! soft-target gradients on the same scale as the hard-label ones when `T` changes.
//!
//! ```
//! use ferrograd_autograd::Var;
//! use ferrograd_tensor::Tensor;
//! use ferrograd_tuning::distill::distillation_loss;
//! let student = Var::leaf(Tensor::from_vec(vec![1.0f32, 0.0, -1.0, 0.5, 0.2, 0.1], &[2, 3]));
//! let teacher = Tensor::from_vec(vec![3.0f32, 0.0, -2.0, 0.0, 2.0, 0.5], &[2, 3]);
//! let labels = Tensor::from_vec(vec![0i64, 1], &[2]);
//! let loss = distillation_loss(&student, &teacher, &labels, 4.0, 0.7);
//! let grads = loss.backward();
//! assert!(loss.item() > 0.0);
//! assert_eq!(grads.get(&student).unwrap().shape(), &[2, 3]);
//! ```

use ferrograd_autograd::{no_grad, Var};
use ferrograd_nn::data::DataLoader;
use ferrograd_nn::loss::{cross_entropy, kl_div_with, KlDivOptions, KlReduction};
use ferrograd_nn::Module;
use ferrograd_optim::Optimizer;
use ferrograd_tensor::{Element, Float, Tensor};

/// The distillation loss of a batch: `alpha * T² * KL(softmax(teacher/T) || softmax(student/T))`
/// (batch mean) `+ (1 - alpha) * cross_entropy(student, labels)`.
///
/// The teacher's logits are data, not part of the graph: gradients flow to `student_logits` only.
///
/// # Panics
/// If the logits are not `[batch, classes]` of the same shape, if `labels` is not `[batch]`,
/// if `temperature <= 0` or `alpha` is outside `[0, 1]`.
#[track_caller]
pub fn distillation_loss<F: Float>(
    student_logits: &Var<F>,
    teacher_logits: &Tensor<F>,
    labels: &Tensor<i64>,
    temperature: f64,
    alpha: f64,
) -> Var<F> {
    assert!(
        student_logits.rank() == 2 && student_logits.shape() == teacher_logits.shape(),
        "distillation_loss: student logits shape {:?} and teacher logits shape {:?} must be the same [batch, classes]",
        student_logits.shape(),
        teacher_logits.shape()
    );
    assert!(temperature > 0.0, "distillation_loss: temperature must be positive, got {temperature}");
    assert!((0.0..=1.0).contains(&alpha), "distillation_loss: alpha must be in [0, 1], got {alpha}");
    let f = <F as Element>::from_f64;
    let hard = cross_entropy(student_logits, labels);
    if alpha == 0.0 {
        return hard;
    }
    let inv_t = f(1.0 / temperature);
    let log_p_student = student_logits.mul_scalar(inv_t).log_softmax(1);
    let log_p_teacher = Var::constant(teacher_logits.mul_scalar(inv_t).log_softmax(1));
    let opts = KlDivOptions { reduction: KlReduction::BatchMean, log_target: true };
    let soft = kl_div_with(&log_p_student, &log_p_teacher, &opts);
    let soft = soft.mul_scalar(f(alpha * temperature * temperature));
    if alpha == 1.0 {
        soft
    } else {
        soft + hard.mul_scalar(f(1.0 - alpha))
    }
}

/// Options of [`distill_epoch`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistillOptions {
    /// Softmax temperature `T` (Hinton et al. use values between 2 and 20).
    pub temperature: f64,
    /// Weight of the soft-target term; `1 - alpha` weighs the hard-label cross-entropy.
    pub alpha: f64,
    /// In [`distill_epoch`], compute the teacher's logits for the whole dataset once, before the
    /// epoch, instead of batch by batch (same values: the teacher is frozen and in eval mode).
    pub cache_teacher: bool,
}

impl Default for DistillOptions {
    fn default() -> Self {
        DistillOptions { temperature: 4.0, alpha: 0.9, cache_teacher: false }
    }
}

/// The teacher's logits for every sample of a dataset, computed once.
#[derive(Clone, Debug)]
pub struct TeacherCache<F: Float> {
    logits: Tensor<F>,
}

impl<F: Float> TeacherCache<F> {
    /// Runs `teacher` (in eval mode, under no-grad) over every input of `loader`'s dataset in
    /// order, `loader.batch_size()` samples at a time.
    pub fn new(teacher: &dyn Module<F>, loader: &DataLoader<F, i64>) -> Self {
        let inputs = loader.dataset().inputs();
        let n = inputs.size(0);
        let bs = loader.batch_size();
        teacher.eval();
        let parts: Vec<Tensor<F>> = no_grad(|| {
            (0..n)
                .step_by(bs)
                .map(|start| teacher.forward(&Var::constant(inputs.narrow(0, start, bs.min(n - start)))).into_data())
                .collect()
        });
        let refs: Vec<&Tensor<F>> = parts.iter().collect();
        TeacherCache { logits: Tensor::cat(&refs, 0) }
    }

    /// The cached logits, `[samples, classes]`, in dataset order.
    pub fn logits(&self) -> &Tensor<F> {
        &self.logits
    }
}

/// One epoch of distillation: for each batch of `loader` (epoch `epoch`'s order), the teacher's
/// logits (under no-grad, or from a cache built for this epoch when `opts.cache_teacher`), the
/// student's forward pass, [`distillation_loss`], and one optimizer step on the student. Returns
/// the mean loss over the samples.
///
/// The teacher is put in eval mode and the student in training mode. To compute the teacher's
/// logits only once for a whole run, build a [`TeacherCache`] and call [`distill_epoch_cached`].
pub fn distill_epoch<F: Float>(
    student: &dyn Module<F>,
    teacher: &dyn Module<F>,
    loader: &DataLoader<F, i64>,
    optimizer: &mut dyn Optimizer<F>,
    epoch: u64,
    opts: &DistillOptions,
) -> f64 {
    if opts.cache_teacher {
        let cache = TeacherCache::new(teacher, loader);
        return distill_epoch_cached(student, &cache, loader, optimizer, epoch, opts);
    }
    teacher.eval();
    distill_batches(student, loader, optimizer, epoch, opts, |x, _| no_grad(|| teacher.forward(x).into_data()))
}

/// [`distill_epoch`] with the teacher's logits taken from `cache` (built once by
/// [`TeacherCache::new`] over the same `loader`, and reusable for every epoch since the teacher
/// is frozen). `opts.cache_teacher` is ignored.
///
/// ```
/// use ferrograd_nn::data::{DataLoader, TensorDataset};
/// use ferrograd_nn::layers::{Linear, Sequential};
/// use ferrograd_nn::Module;
/// use ferrograd_optim::{GroupOptions, Optim, Sgd};
/// use ferrograd_tensor::Tensor;
/// use ferrograd_tuning::distill::{distill_epoch_cached, DistillOptions, TeacherCache};
/// use rand::{rngs::StdRng, SeedableRng};
/// let mut rng = StdRng::seed_from_u64(0);
/// let x = Tensor::<f32>::rand_normal(&[32, 4], 0.0, 1.0, &mut rng);
/// let y = Tensor::from_vec((0..32).map(|i| i % 3).collect(), &[32]);
/// let loader = DataLoader::new(TensorDataset::new(x, y), 8).shuffle(1);
/// let teacher = Sequential::new().add(Linear::new(4, 3, &mut rng));
/// let student = Sequential::new().add(Linear::new(4, 3, &mut rng));
/// let cache = TeacherCache::new(&teacher, &loader);
/// let mut opt = Optim::new(Sgd::default(), student.parameters(), GroupOptions::lr(0.1));
/// for epoch in 0..3 {
///     let loss = distill_epoch_cached(&student, &cache, &loader, &mut opt, epoch, &DistillOptions::default());
///     assert!(loss.is_finite());
/// }
/// ```
///
/// # Panics
/// If the cache does not hold one row of logits per sample of `loader`'s dataset.
pub fn distill_epoch_cached<F: Float>(
    student: &dyn Module<F>,
    cache: &TeacherCache<F>,
    loader: &DataLoader<F, i64>,
    optimizer: &mut dyn Optimizer<F>,
    epoch: u64,
    opts: &DistillOptions,
) -> f64 {
    let samples = loader.dataset().inputs().size(0);
    assert_eq!(
        cache.logits().size(0),
        samples,
        "distill_epoch_cached: the teacher cache has {} rows of logits but the dataset has {samples} samples",
        cache.logits().size(0)
    );
    let order = loader.epoch_order(epoch);
    let bs = loader.batch_size();
    distill_batches(student, loader, optimizer, epoch, opts, |_, (i, n)| {
        let idx: Vec<i64> = order[i * bs..i * bs + n].iter().map(|&j| j as i64).collect();
        cache.logits().index_select(0, &Tensor::from_vec(idx, &[n]))
    })
}

/// The training loop shared by both entry points; `teacher_logits(inputs, (batch index, batch
/// size))` gives the teacher's logits of a batch.
fn distill_batches<F: Float>(
    student: &dyn Module<F>,
    loader: &DataLoader<F, i64>,
    optimizer: &mut dyn Optimizer<F>,
    epoch: u64,
    opts: &DistillOptions,
    teacher_logits: impl Fn(&Var<F>, (usize, usize)) -> Tensor<F>,
) -> f64 {
    student.train(true);
    let (mut loss_sum, mut seen) = (0.0f64, 0usize);
    for (i, (inputs, labels)) in loader.iter_epoch(epoch).enumerate() {
        let n = labels.numel();
        let x = Var::constant(inputs);
        let t = teacher_logits(&x, (i, n));
        let loss = distillation_loss(&student.forward(&x), &t, &labels, opts.temperature, opts.alpha);
        optimizer.step(&loss.backward());
        loss_sum += loss.item().to_f64() * n as f64;
        seen += n;
    }
    loss_sum / seen.max(1) as f64
}
