//! TPE quality. The checked benchmarks (Branin, Hartmann6, a 10-D sphere: medians over seeds of
//! the best value found) hold the default `TpeSampler::new()` to the targets on two
//! separate seed sets, and `TpeSampler::tuned()` and Optuna 4's `univariate()` to theirs; ZDT1
//! holds the multi-objective default to Optuna's MOTPE.
//!
//! The default was chosen on 38 other functions (2 to 20 dimensions, 100 or 200 trials, seeds
//! 100..140; see `TpeSampler::new`), never on the checked ones: the ignored test
//! `choose_default` prints that comparison:
//! `cargo test --release -p ferrograd-tuning --test all -- --ignored --nocapture search_tpe::`.

use std::ops::Range;

use ferrograd_tuning::search::multi::hypervolume;
use ferrograd_tuning::search::{Direction, RandomSampler, Sampler, SearchError, Study, TpeSampler, Trial, TrialState};

type Objective = fn(&mut Trial<'_>) -> Result<f64, SearchError>;

const NAMES: [&str; 10] = ["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9"];

fn branin(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let x1 = t.suggest_float("x1", -5.0, 10.0, false)?;
    let x2 = t.suggest_float("x2", 0.0, 15.0, false)?;
    let pi = std::f64::consts::PI;
    let (b, c, r, s, tt) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 6.0, 10.0, 1.0 / (8.0 * pi));
    Ok((x2 - b * x1 * x1 + c * x1 - r).powi(2) + s * (1.0 - tt) * x1.cos() + s)
}

/// The Hartmann functions: `-sum_i alpha_i exp(-sum_j a_ij (x_j - p_ij)^2)` on `[0, 1]^d`.
fn hartmann<const D: usize>(t: &mut Trial<'_>, a: &[[f64; D]; 4], p: &[[f64; D]; 4]) -> Result<f64, SearchError> {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    let mut x = [0.0; D];
    for (i, xi) in x.iter_mut().enumerate() {
        *xi = t.suggest_float(NAMES[i], 0.0, 1.0, false)?;
    }
    let mut f = 0.0;
    for i in 0..4 {
        let e: f64 = (0..D).map(|j| a[i][j] * (x[j] - p[i][j]).powi(2)).sum();
        f -= ALPHA[i] * (-e).exp();
    }
    Ok(f)
}

fn hartmann6(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    hartmann(t, &A, &P)
}

fn sphere10(t: &mut Trial<'_>) -> Result<f64, SearchError> {
    let mut s = 0.0;
    for name in NAMES {
        let x = t.suggest_float(name, -5.0, 5.0, false)?;
        s += x * x;
    }
    Ok(s)
}

// The functions the default was chosen on, by name and dimension ("ackley12"); standard ranges.

fn xs(t: &mut Trial<'_>, d: usize, low: f64, high: f64) -> Result<Vec<f64>, SearchError> {
    (0..d).map(|i| t.suggest_float(&format!("x{i}"), low, high, false)).collect()
}

/// The selection function `name` (a family and a dimension) and its minimum.
fn selection(name: &str, t: &mut Trial<'_>) -> Result<f64, SearchError> {
    use std::f64::consts::PI;
    let family: String = name.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let d: usize = name[family.len()..].parse().unwrap_or(2);
    Ok(match family.as_str() {
        "ackley" => {
            let x = xs(t, d, -32.768, 32.768)?;
            let sq = x.iter().map(|v| v * v).sum::<f64>() / d as f64;
            let cos = x.iter().map(|v| (2.0 * PI * v).cos()).sum::<f64>() / d as f64;
            -20.0 * (-0.2 * sq.sqrt()).exp() - cos.exp() + 20.0 + std::f64::consts::E
        }
        "rosenbrock" => {
            let x = xs(t, d, -2.048, 2.048)?;
            x.windows(2).map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2)).sum()
        }
        "levy" => {
            let w: Vec<f64> = xs(t, d, -10.0, 10.0)?.iter().map(|v| 1.0 + (v - 1.0) / 4.0).collect();
            let mid: f64 =
                w[..d - 1].iter().map(|wi| (wi - 1.0).powi(2) * (1.0 + 10.0 * (PI * wi + 1.0).sin().powi(2))).sum();
            (PI * w[0]).sin().powi(2) + mid + (w[d - 1] - 1.0).powi(2) * (1.0 + (2.0 * PI * w[d - 1]).sin().powi(2))
        }
        "styblinski" => 0.5 * xs(t, d, -5.0, 5.0)?.iter().map(|v| v.powi(4) - 16.0 * v * v + 5.0 * v).sum::<f64>(),
        "rastrigin" => {
            let x = xs(t, d, -5.12, 5.12)?;
            10.0 * d as f64 + x.iter().map(|v| v * v - 10.0 * (2.0 * PI * v).cos()).sum::<f64>()
        }
        "griewank" => {
            let x = xs(t, d, -600.0, 600.0)?;
            let prod: f64 = x.iter().enumerate().map(|(i, v)| (v / ((i + 1) as f64).sqrt()).cos()).product();
            1.0 + x.iter().map(|v| v * v).sum::<f64>() / 4000.0 - prod
        }
        "zakharov" => {
            let x = xs(t, d, -5.0, 10.0)?;
            let s: f64 = x.iter().enumerate().map(|(i, v)| 0.5 * (i + 1) as f64 * v).sum();
            x.iter().map(|v| v * v).sum::<f64>() + s.powi(2) + s.powi(4)
        }
        "dixonprice" => {
            let x = xs(t, d, -10.0, 10.0)?;
            let rest: f64 =
                x.windows(2).enumerate().map(|(i, w)| (i + 2) as f64 * (2.0 * w[1] * w[1] - w[0]).powi(2)).sum();
            (x[0] - 1.0).powi(2) + rest
        }
        "ellipsoid" => {
            // Condition 1e3 along axes turned by Givens rotations, the optimum off centre.
            let mut y: Vec<f64> =
                xs(t, d, -5.0, 5.0)?.iter().enumerate().map(|(i, v)| v - 1.0 + 0.3 * i as f64).collect();
            for i in 0..d - 1 {
                let (c, s) = ((0.7 + i as f64).cos(), (0.7 + i as f64).sin());
                let (a, b) = (y[i], y[i + 1]);
                y[i] = c * a - s * b;
                y[i + 1] = s * a + c * b;
            }
            y.iter().enumerate().map(|(i, v)| 1000f64.powf(i as f64 / (d - 1) as f64) * v * v).sum()
        }
        "hartmann" => {
            const A: [[f64; 3]; 4] = [[3.0, 10.0, 30.0], [0.1, 10.0, 35.0], [3.0, 10.0, 30.0], [0.1, 10.0, 35.0]];
            const P: [[f64; 3]; 4] = [
                [0.3689, 0.1170, 0.2673],
                [0.4699, 0.4387, 0.7470],
                [0.1091, 0.8732, 0.5547],
                [0.0381, 0.5743, 0.8828],
            ];
            hartmann(t, &A, &P)?
        }
        "camel" => {
            let x = t.suggest_float("x0", -3.0, 3.0, false)?;
            let y = t.suggest_float("x1", -2.0, 2.0, false)?;
            (4.0 - 2.1 * x * x + x.powi(4) / 3.0) * x * x + x * y + (-4.0 + 4.0 * y * y) * y * y
        }
        "goldstein" => {
            let (x, y) = (t.suggest_float("x0", -2.0, 2.0, false)?, t.suggest_float("x1", -2.0, 2.0, false)?);
            (1.0 + (x + y + 1.0).powi(2) * (19.0 - 14.0 * x + 3.0 * x * x - 14.0 * y + 6.0 * x * y + 3.0 * y * y))
                * (30.0
                    + (2.0 * x - 3.0 * y).powi(2)
                        * (18.0 - 32.0 * x + 12.0 * x * x + 48.0 * y - 36.0 * x * y + 27.0 * y * y))
        }
        "beale" => {
            let (x, y) = (t.suggest_float("x0", -4.5, 4.5, false)?, t.suggest_float("x1", -4.5, 4.5, false)?);
            (1.5 - x + x * y).powi(2) + (2.25 - x + x * y * y).powi(2) + (2.625 - x + x * y.powi(3)).powi(2)
        }
        _ => panic!("no selection function {name}"),
    })
}

/// The minimum of selection function `name`.
fn selection_minimum(name: &str) -> f64 {
    let family: String = name.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let d: f64 = name[family.len()..].parse().unwrap_or(2.0);
    match family.as_str() {
        "styblinski" => -39.166_165_7 * d,
        "hartmann" => -3.862_78,
        "camel" => -1.031_628_5,
        "goldstein" => 3.0,
        _ => 0.0,
    }
}

/// The best value of one study per seed.
fn bests<S: Sampler + 'static>(sampler: impl Fn() -> S, n_trials: usize, f: Objective, seeds: Range<u64>) -> Vec<f64> {
    seeds
        .map(|seed| {
            let study = Study::builder().sampler(sampler()).seed(seed).build();
            study.optimize(n_trials, f).unwrap();
            study.best_value().expect("trials completed")
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    0.5 * (v[(n - 1) / 2] + v[n / 2])
}

fn median_best<S: Sampler + 'static>(sampler: impl Fn() -> S, n_trials: usize, f: Objective, seeds: Range<u64>) -> f64 {
    median(bests(sampler, n_trials, f, seeds))
}

/// The default's median best on seeds 0..10 and, separately, 10..30, at most `bound`.
fn default_reaches(n_trials: usize, f: Objective, bound: f64) {
    for seeds in [0..10, 10..30] {
        let m = median_best(TpeSampler::new, n_trials, f, seeds.clone());
        println!("default, seeds {seeds:?}: median best {m}");
        assert!(m <= bound, "seeds {seeds:?}: median best {m} > {bound}");
    }
}

// The targets: Branin (200 trials) at most 0.401, Hartmann6 (100) at most -3.20,
// 10-D sphere (100) at most 4.0, on both seed sets.

#[test]
fn default_branin_200_trials() {
    default_reaches(200, branin, 0.401);
}

#[test]
fn default_hartmann6_100_trials() {
    default_reaches(100, hartmann6, -3.20);
}

#[test]
fn default_sphere10_100_trials() {
    default_reaches(100, sphere10, 4.0);
}

#[test]
fn tuned_reaches_its_targets() {
    let m = median_best(TpeSampler::tuned, 200, branin, 0..10);
    assert!(m <= 0.42, "branin median best {m}");
    let m = median_best(TpeSampler::tuned, 100, hartmann6, 0..10);
    assert!(m <= -3.15, "hartmann6 median best {m}");
    let m = median_best(TpeSampler::tuned, 100, sphere10, 0..10);
    assert!(m <= 4.0, "sphere median best {m}");
}

#[test]
fn optuna4_univariate_reaches_branin_and_random_search_does_not_reach_the_sphere() {
    let m = median_best(TpeSampler::univariate, 200, branin, 0..10);
    assert!(m <= 0.42, "median best {m}");
    let r = median_best(RandomSampler::new, 100, sphere10, 0..10);
    assert!(r > 15.0, "median best {r}");
}

/// Prints, for candidate settings, the median best value (seeds 100..140) on the 38 functions
/// the default was chosen on, each setting's mean rank over them and its mean log regret
/// relative to Optuna 5's settings (negative: better).
#[test]
#[ignore = "a comparison to read (several minutes in release), not a check"]
fn choose_default() {
    let mut functions: Vec<(&str, usize)> = [
        "ackley5",
        "ackley8",
        "ackley12",
        "ackley20",
        "rosenbrock4",
        "rosenbrock8",
        "rosenbrock12",
        "rosenbrock20",
        "levy4",
        "levy8",
        "levy12",
        "styblinski5",
        "styblinski8",
        "styblinski12",
        "rastrigin4",
        "hartmann3",
        "camel",
        "griewank8",
        "griewank12",
        "zakharov8",
        "zakharov12",
        "dixonprice8",
        "dixonprice12",
        "ellipsoid8",
        "ellipsoid12",
        "ellipsoid20",
    ]
    .into_iter()
    .map(|f| (f, 100))
    .collect();
    functions.extend(
        [
            "camel",
            "hartmann3",
            "levy2",
            "rosenbrock2",
            "goldstein",
            "beale",
            "styblinski2",
            "ackley2",
            "rastrigin2",
            "styblinski3",
            "levy3",
            "rosenbrock3",
        ]
        .into_iter()
        .map(|f| (f, 200)),
    );
    type Make = Box<dyn Fn() -> TpeSampler + Sync>;
    let optuna5 = |gamma: f64, candidates: usize| {
        TpeSampler::new()
            .weigh_good_trials(false)
            .scale_good_bandwidths(false)
            .gamma(gamma)
            .unwrap()
            .n_ei_candidates(candidates)
    };
    let mut settings: Vec<(String, Make)> = vec![
        ("optuna 5 (gamma 0.1, 24)".into(), Box::new(move || optuna5(0.1, 24))),
        ("previous default (0.15, 48)".into(), Box::new(move || optuna5(0.15, 48))),
        ("tuned".into(), Box::new(TpeSampler::tuned)),
        ("scaled only (0.1, 48)".into(), Box::new(move || optuna5(0.1, 48).scale_good_bandwidths(true))),
    ];
    for gamma in [0.1, 0.125, 0.15, 0.2] {
        for candidates in [24, 48] {
            let make = move || TpeSampler::new().gamma(gamma).unwrap().n_ei_candidates(candidates);
            settings.push((format!("both, gamma {gamma}, {candidates}"), Box::new(make)));
        }
    }
    let medians: Vec<Vec<f64>> = settings
        .iter()
        .map(|(_, make)| {
            functions
                .iter()
                .map(|(name, n)| {
                    let bests = (100..140u64)
                        .map(|seed| {
                            let study = Study::builder().sampler(make()).seed(seed).build();
                            study.optimize(*n, |t| selection(name, t)).unwrap();
                            study.best_value().expect("trials completed")
                        })
                        .collect();
                    median(bests)
                })
                .collect()
        })
        .collect();
    print!("{:<30}", "setting");
    functions.iter().for_each(|(name, n)| print!("{:>14}", format!("{name}@{n}")));
    println!("{:>10}{:>10}", "mean rank", "log vs o5");
    for (i, (name, _)) in settings.iter().enumerate() {
        print!("{name:<30}");
        medians[i].iter().for_each(|m| print!("{m:>14.4}"));
        let j_all = 0..functions.len();
        let rank: f64 =
            j_all.clone().map(|j| medians.iter().filter(|m| m[j] < medians[i][j]).count() as f64 + 1.0).sum();
        let regret = |k: usize, j: usize| medians[k][j] - selection_minimum(functions[j].0) + 1e-9;
        let log: f64 = j_all.map(|j| (regret(i, j) / regret(0, j)).ln()).sum();
        println!("{:>10.2}{:>10.3}", rank / functions.len() as f64, log / functions.len() as f64);
    }
}

/// Optuna 5.1's multi-objective TPE (`TPESampler(seed=s)`) on ZDT1, median hypervolume over seeds
/// 0..9 (benches/compare/zdt1_optuna.py motpe).
const OPTUNA_MOTPE_ZDT1: f64 = 10.8699;

fn zdt1(t: &mut Trial<'_>) -> Result<[f64; 2], SearchError> {
    let x: Vec<f64> = (0..10).map(|i| t.suggest_float(NAMES[i], 0.0, 1.0, false)).collect::<Result<_, _>>()?;
    let f1 = x[0];
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / 9.0;
    Ok([f1, g * (1.0 - (f1 / g).sqrt())])
}

fn zdt1_hypervolume(sampler: TpeSampler, seed: u64) -> f64 {
    let study =
        Study::builder().directions(&[Direction::Minimize, Direction::Minimize]).sampler(sampler).seed(seed).build();
    study.optimize(300, zdt1).unwrap();
    let points: Vec<Vec<f64>> =
        study.trials().into_iter().filter(|t| t.state == TrialState::Complete).map(|t| t.values).collect();
    hypervolume(&points, &[1.1, 11.0])
}

#[test]
fn multi_objective_zdt1_hypervolume_at_least_optunas() {
    // The target: at least Optuna's median. Per-seed values of both samplers spread over
    // about 10.4..11.1, so the margin is small (see the rustdoc of `TpeSampler::new`).
    let hvs: Vec<f64> = (0..10).map(|s| zdt1_hypervolume(TpeSampler::new(), s)).collect();
    let m = median(hvs.clone());
    println!("MOTPE ZDT1 hypervolumes {hvs:?} median {m:.4} (Optuna {OPTUNA_MOTPE_ZDT1})");
    assert!(m >= OPTUNA_MOTPE_ZDT1, "median hypervolume {m:.4}, Optuna's {OPTUNA_MOTPE_ZDT1}");
    let random: Vec<f64> = (0..10)
        .map(|s| {
            let study = Study::builder()
                .directions(&[Direction::Minimize, Direction::Minimize])
                .sampler(RandomSampler::new())
                .seed(s)
                .build();
            study.optimize(300, zdt1).unwrap();
            let points: Vec<Vec<f64>> =
                study.trials().into_iter().filter(|t| t.state == TrialState::Complete).map(|t| t.values).collect();
            hypervolume(&points, &[1.1, 11.0])
        })
        .collect();
    assert!(m > median(random.clone()) + 0.3, "random search {:.4}", median(random));
}

type Objective2 = fn(&mut Trial<'_>) -> Result<[f64; 2], SearchError>;

fn zdt(t: &mut Trial<'_>, kind: u8) -> Result<[f64; 2], SearchError> {
    let x: Vec<f64> = (0..10).map(|i| t.suggest_float(NAMES[i], 0.0, 1.0, false)).collect::<Result<_, _>>()?;
    let f1 = x[0];
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / 9.0;
    let r = f1 / g;
    Ok([
        f1,
        g * match kind {
            2 => 1.0 - r * r,
            _ => 1.0 - r.sqrt() - r * (10.0 * std::f64::consts::PI * f1).sin(),
        },
    ])
}

/// Prints the median hypervolume (seeds 100..120, 300 trials, reference point (1.1, 11.0)) of
/// multi-objective settings on ZDT2 and ZDT3, the functions the multi-objective behaviour of the
/// default was chosen on (ZDT1 is the checked one). Earlier runs (seeds 100..110) put independent
/// sampling ahead of joint sampling on both; weighing the good trials by hypervolume contribution
/// beats weighing them alike by about 0.3 on each, while gamma and the candidates matter within
/// noise (see `TpeSampler::new`).
#[test]
#[ignore = "a comparison to read, not a check"]
fn choose_multi_objective_default() {
    type Make = Box<dyn Fn() -> TpeSampler>;
    let alike = |gamma: f64, candidates: usize| {
        TpeSampler::new().weigh_good_trials(false).gamma(gamma).unwrap().n_ei_candidates(candidates)
    };
    let weighted = |gamma: f64, candidates: usize| TpeSampler::new().gamma(gamma).unwrap().n_ei_candidates(candidates);
    let settings: Vec<(&str, Make)> = vec![
        ("alike (Optuna 5), gamma 0.1, 24", Box::new(move || alike(0.1, 24))),
        ("alike, gamma 0.15, 48", Box::new(move || alike(0.15, 48))),
        ("weighted, gamma 0.1, 24", Box::new(move || weighted(0.1, 24))),
        ("weighted, gamma 0.125, 24 (default)", Box::new(TpeSampler::new)),
        ("weighted, gamma 0.15, 24", Box::new(move || weighted(0.15, 24))),
        ("weighted, gamma 0.1, 48", Box::new(move || weighted(0.1, 48))),
        ("weighted, gamma 0.125, 48", Box::new(move || weighted(0.125, 48))),
        ("weighted, gamma 0.15, 48", Box::new(move || weighted(0.15, 48))),
    ];
    let objectives: [(&str, Objective2); 2] = [("zdt2", |t| zdt(t, 2)), ("zdt3", |t| zdt(t, 3))];
    for (name, make) in &settings {
        print!("{name:<40}");
        for (_, f) in &objectives {
            let hvs: Vec<f64> = (100..120)
                .map(|seed| {
                    let study = Study::builder()
                        .directions(&[Direction::Minimize, Direction::Minimize])
                        .sampler(make())
                        .seed(seed)
                        .build();
                    study.optimize(300, *f).unwrap();
                    let points: Vec<Vec<f64>> = study
                        .trials()
                        .into_iter()
                        .filter(|t| t.state == TrialState::Complete)
                        .map(|t| t.values)
                        .collect();
                    hypervolume(&points, &[1.1, 11.0])
                })
                .collect();
            print!("{:>12.4}", median(hvs));
        }
        println!();
    }
}
