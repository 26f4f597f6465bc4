//! SVG charts of a study, in the spirit of Optuna's visualisations: the optimisation history
//! (every complete trial's value and the best so far), the intermediate values each trial
//! reported (pruned ones stand out), and parameter importances (computed elsewhere; given here
//! as `(name, importance)` pairs).
//!
//! They read a study through its public API ([`Study::trials`], [`FrozenTrial`]) and draw with
//! `ferrograd_train::plot`, so they work with every storage.
//!
//! ```
//! use ferrograd_tuning::plots::{optimization_history, param_importances};
//! use ferrograd_tuning::search::{Direction, Study};
//! let study = Study::builder().direction(Direction::Minimize).seed(0).build();
//! study.optimize(10, |t| -> Result<f64, ferrograd_tuning::SearchError> {
//!     let x = t.suggest_float("x", -2.0, 2.0, false)?;
//!     Ok(x * x)
//! })?;
//! let svg = optimization_history(&study.trials(), Direction::Minimize).to_svg(640, 400).unwrap();
//! assert!(svg.contains("best value"));
//! let bars = param_importances(&[("x".to_string(), 1.0)]);
//! assert!(bars.to_svg(480, 240).unwrap().contains("<rect"));
//! # Ok::<(), ferrograd_tuning::SearchError>(())
//! ```

use std::path::{Path, PathBuf};

use ferrograd_train::plot::{write_svg, BarChart, Chart, Series};
use ferrograd_train::TrainError;

use crate::search::{Direction, FrozenTrial, Study, TrialState};

/// Every complete trial's value against its number, and the best value so far as a line.
pub fn optimization_history(trials: &[FrozenTrial], direction: Direction) -> Chart {
    let mut values = Vec::new();
    let mut best_line = Vec::new();
    let mut best: Option<f64> = None;
    for t in trials {
        if let (TrialState::Complete, Some(v)) = (t.state, t.value) {
            values.push((t.number as f64, v));
            if best.is_none_or(|b| direction.loss(v) < direction.loss(b)) {
                best = Some(v);
            }
        }
        if let Some(b) = best {
            best_line.push((t.number as f64, b));
        }
    }
    Chart::new("optimization history", "trial", "objective value")
        .series(Series::points("objective value", values))
        .series(Series::line("best value", best_line).color(3))
}

/// The intermediate values of every trial against their step: complete trials in one colour,
/// pruned ones in another (and any other state in grey), one legend entry per state.
pub fn intermediate_values(trials: &[FrozenTrial]) -> Chart {
    let mut chart = Chart::new("intermediate values", "step", "intermediate value");
    let mut named = Vec::new();
    for t in trials.iter().filter(|t| !t.intermediate.is_empty()) {
        let (label, color) = match t.state {
            TrialState::Complete => ("complete", 0),
            TrialState::Pruned => ("pruned", 3),
            TrialState::Running => ("running", 2),
            TrialState::Waiting => ("waiting", 5),
            TrialState::Failed => ("failed", 7),
        };
        let name = if named.contains(&label) {
            String::new()
        } else {
            named.push(label);
            label.to_string()
        };
        let points = t.intermediate.iter().map(|(&s, &v)| (s as f64, v)).collect();
        chart = chart.series(Series::line(name, points).color(color));
    }
    chart
}

/// One bar per parameter, most important first.
pub fn param_importances(importances: &[(String, f64)]) -> BarChart {
    let mut bars = importances.to_vec();
    bars.sort_by(|a, b| b.1.total_cmp(&a.1));
    BarChart::new("hyperparameter importances", "importance", bars)
}

/// Writes `optimization_history.svg`, `intermediate_values.svg` and, when importances are
/// given, `param_importances.svg` into `dir` (created if needed); returns the files written.
///
/// # Errors
/// Drawing or writing a file fails.
pub fn write_study_plots(
    study: &Study,
    dir: impl AsRef<Path>,
    importances: Option<&[(String, f64)]>,
) -> Result<Vec<PathBuf>, TrainError> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io { path: dir.to_path_buf(), source })?;
    let trials = study.trials();
    let mut svgs = vec![
        ("optimization_history.svg", optimization_history(&trials, study.direction()).to_svg(720, 440)),
        ("intermediate_values.svg", intermediate_values(&trials).to_svg(720, 440)),
    ];
    if let Some(imp) = importances {
        svgs.push(("param_importances.svg", param_importances(imp).to_svg(640, 120 + 40 * imp.len() as u32)));
    }
    let mut written = Vec::new();
    for (name, svg) in svgs {
        let path = dir.join(name);
        let svg = svg.map_err(|problem| TrainError::Plot { path: path.clone(), problem })?;
        write_svg(&path, &svg)?;
        written.push(path);
    }
    Ok(written)
}
