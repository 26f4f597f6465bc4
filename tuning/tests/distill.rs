//! Distillation loss: gradient, the reductions to cross-entropy and to zero, and the training loop.

use ferrograd_autograd::check::gradcheck;
use ferrograd_autograd::Var;
use ferrograd_nn::data::{DataLoader, TensorDataset};
use ferrograd_nn::layers::{Linear, ReLU, Sequential};
use ferrograd_nn::loss::cross_entropy;
use ferrograd_nn::Module;
use ferrograd_optim::{GroupOptions, Optim, Sgd};
use ferrograd_tensor::Tensor;
use ferrograd_tuning::distill::{distill_epoch, distill_epoch_cached, distillation_loss, DistillOptions, TeacherCache};
use rand::{rngs::StdRng, SeedableRng};

fn logits(seed: u64, shape: &[usize]) -> Tensor<f64> {
    Tensor::rand_normal(shape, 0.0, 2.0, &mut StdRng::seed_from_u64(seed))
}

#[test]
fn gradient_matches_finite_differences() {
    let teacher = logits(1, &[4, 5]);
    let labels = Tensor::from_vec(vec![0i64, 4, 2, 2], &[4]);
    for (t, alpha) in [(1.0, 0.5), (3.0, 0.9), (5.0, 1.0)] {
        gradcheck(|v| distillation_loss(&v[0], &teacher, &labels, t, alpha), &[logits(2, &[4, 5])])
            .unwrap_or_else(|e| panic!("T={t} alpha={alpha}: {e}"));
    }
}

#[test]
fn alpha_zero_is_cross_entropy() {
    let student = Var::leaf(logits(3, &[6, 4]));
    let labels = Tensor::from_vec(vec![0i64, 1, 2, 3, 0, 1], &[6]);
    let ce = cross_entropy(&student, &labels);
    let d = distillation_loss(&student, &logits(4, &[6, 4]), &labels, 1.0, 0.0);
    assert_eq!(d.item(), ce.item());
    assert_eq!(d.backward().get(&student).unwrap().to_vec(), ce.backward().get(&student).unwrap().to_vec());
}

#[test]
fn alpha_one_with_teacher_equal_to_student_is_zero() {
    let s = logits(5, &[3, 7]);
    let labels = Tensor::from_vec(vec![1i64, 2, 3], &[3]);
    for t in [1.0, 4.0] {
        let student = Var::leaf(s.clone());
        let loss = distillation_loss(&student, &s, &labels, t, 1.0);
        assert!(loss.item().abs() < 1e-12, "T={t}: loss {}", loss.item());
        let g = loss.backward().get(&student).unwrap().to_vec();
        assert!(g.iter().all(|v| v.abs() < 1e-12), "T={t}: gradient {g:?}");
    }
}

#[test]
fn matches_hand_formula() {
    // One sample, two classes, T = 2, alpha = 0.25, computed with plain f64 arithmetic.
    let (s, t, temp, alpha) = ([0.3f64, -0.7], [1.1f64, 0.4], 2.0, 0.25);
    let soft = |x: [f64; 2]| {
        let (a, b) = ((x[0] / temp).exp(), (x[1] / temp).exp());
        [a / (a + b), b / (a + b)]
    };
    let (ps, pt) = (soft(s), soft(t));
    let kl: f64 = (0..2).map(|i| pt[i] * (pt[i] / ps[i]).ln()).sum();
    let ce = -(s[1].exp() / (s[0].exp() + s[1].exp())).ln();
    let expected = alpha * temp * temp * kl + (1.0 - alpha) * ce;
    let got = distillation_loss(
        &Var::constant(Tensor::from_vec(s.to_vec(), &[1, 2])),
        &Tensor::from_vec(t.to_vec(), &[1, 2]),
        &Tensor::from_vec(vec![1i64], &[1]),
        temp,
        alpha,
    );
    assert!((got.item() - expected).abs() < 1e-12, "{} vs {expected}", got.item());
}

fn toy_data() -> DataLoader<f32, i64> {
    let mut rng = StdRng::seed_from_u64(9);
    let x = Tensor::<f32>::rand_normal(&[64, 6], 0.0, 1.0, &mut rng);
    let y: Vec<i64> =
        (0..64).map(|i| (x.at(&[i, 0]) > x.at(&[i, 1])) as i64 + 2 * (x.at(&[i, 2]) > 0.0) as i64).collect();
    DataLoader::new(TensorDataset::new(x, Tensor::from_vec(y, &[64])), 16).shuffle(3)
}

fn mlp(seed: u64, hidden: usize) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new().add(Linear::new(6, hidden, &mut rng)).add(ReLU).add(Linear::new(hidden, 4, &mut rng))
}

#[test]
fn cached_and_uncached_teacher_give_the_same_training() {
    let loader = toy_data();
    let teacher = mlp(1, 16);
    let cache = TeacherCache::new(&teacher, &loader);
    assert_eq!(cache.logits().shape(), &[64, 4]);
    // Teacher run per batch, cached per epoch, cached once for the whole run.
    let mut losses = Vec::new();
    for variant in 0..3 {
        let student = mlp(2, 4);
        let mut opt = Optim::new(Sgd::default(), student.parameters(), GroupOptions::lr(0.1));
        let opts = DistillOptions { temperature: 3.0, alpha: 0.8, cache_teacher: variant == 1 };
        let l: Vec<f64> = (0..3)
            .map(|e| match variant {
                2 => distill_epoch_cached(&student, &cache, &loader, &mut opt, e, &opts),
                _ => distill_epoch(&student, &teacher, &loader, &mut opt, e, &opts),
            })
            .collect();
        losses.push(l);
    }
    for other in &losses[1..] {
        for (a, b) in losses[0].iter().zip(other) {
            assert!((a - b).abs() < 1e-6, "{losses:?}");
        }
    }
    assert!(losses[0][2] < losses[0][0], "the loss does not go down: {losses:?}");
}

#[test]
#[should_panic(expected = "the teacher cache has 64 rows of logits but the dataset has 16 samples")]
fn cache_of_another_dataset_is_refused() {
    let cache = TeacherCache::new(&mlp(1, 16), &toy_data());
    let mut rng = StdRng::seed_from_u64(4);
    let x = Tensor::<f32>::rand_normal(&[16, 6], 0.0, 1.0, &mut rng);
    let small = DataLoader::new(TensorDataset::new(x, Tensor::from_vec(vec![0i64; 16], &[16])), 8);
    let student = mlp(2, 4);
    let mut opt = Optim::new(Sgd::default(), student.parameters(), GroupOptions::lr(0.1));
    distill_epoch_cached(&student, &cache, &small, &mut opt, 0, &DistillOptions::default());
}
