//! The study plots parse as XML and show every trial: one dot per complete trial at its value,
//! a best-so-far line that only improves, one intermediate-value line per trial that reported
//! (pruned ones in their own colour), one bar per importance.

use ferrograd_tuning::plots::{intermediate_values, optimization_history, param_importances, write_study_plots};
use ferrograd_tuning::search::{Direction, MedianPruner, Study, TrialState};
use ferrograd_tuning::SearchError;

fn polylines(svg: &str, color: &str) -> Vec<Vec<(f64, f64)>> {
    let doc = roxmltree::Document::parse(svg).expect("well-formed XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(color))
        .map(|n| {
            n.attribute("points")
                .unwrap()
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

fn circles(svg: &str) -> Vec<(f64, f64)> {
    let doc = roxmltree::Document::parse(svg).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("circle"))
        .map(|n| (n.attribute("cx").unwrap().parse().unwrap(), n.attribute("cy").unwrap().parse().unwrap()))
        .collect()
}

/// A study of a noisy quadratic whose trials report 5 intermediate values; the median pruner
/// stops some of them.
fn study() -> Study {
    let study = Study::builder().direction(Direction::Minimize).pruner(MedianPruner::new(3, 1)).seed(3).build();
    study
        .optimize(16, |t| -> Result<f64, SearchError> {
            let x = t.suggest_float("x", -3.0, 3.0, false)?;
            for step in 0..5u64 {
                t.report(step, x * x + 1.0 / (step + 1) as f64);
                if t.should_prune() {
                    return Err(t.pruned());
                }
            }
            Ok(x * x)
        })
        .unwrap();
    study
}

#[test]
fn the_history_has_a_dot_per_complete_trial_and_a_falling_best_line() {
    let s = study();
    let trials = s.trials();
    let complete: Vec<_> = trials.iter().filter(|t| t.state == TrialState::Complete).collect();
    assert!(complete.len() >= 4 && complete.len() < trials.len(), "{} complete of {}", complete.len(), trials.len());
    let svg = optimization_history(&trials, Direction::Minimize).to_svg(720, 440).unwrap();
    let mut dots = circles(&svg);
    // A dot per complete trial, then the legend's dot for the series.
    assert_eq!(dots.len(), complete.len() + 1);
    dots.pop();
    // Dots left to right in trial order; a smaller value sits lower (a larger pixel y).
    for (w, pair) in dots.windows(2).zip(complete.windows(2)) {
        assert!(w[0].0 < w[1].0);
        let (a, b) = (pair[0].value.unwrap(), pair[1].value.unwrap());
        if (a - b).abs() > 0.05 {
            assert_eq!(a < b, w[0].1 > w[1].1, "values {a} and {b} at pixels {w:?}");
        }
    }
    let best = polylines(&svg, "#D62728").into_iter().find(|p| p.len() > 2).expect("the best-value line");
    assert!(best.windows(2).all(|w| w[1].1 >= w[0].1), "minimising: the best line never rises on screen");
    assert!(svg.contains("best value") && svg.contains("objective value") && svg.contains("trial"));
}

#[test]
fn intermediate_values_show_pruned_trials_apart() {
    let s = study();
    let trials = s.trials();
    let svg = intermediate_values(&trials).to_svg(720, 440).unwrap();
    let count = |state| trials.iter().filter(|t| t.state == state).count();
    // Complete trials report 5 values: one 5-point line each, in the first colour.
    let complete_lines = polylines(&svg, "#1F77B4").into_iter().filter(|p| p.len() == 5).count();
    assert_eq!(complete_lines, count(TrialState::Complete));
    // Pruned ones stopped early: all their points in red (besides the 2-point legend sample).
    let pruned_points: usize =
        trials.iter().filter(|t| t.state == TrialState::Pruned).map(|t| t.intermediate.len()).sum();
    let red: Vec<Vec<(f64, f64)>> = polylines(&svg, "#D62728");
    assert_eq!(red.len(), count(TrialState::Pruned) + 1);
    assert_eq!(red.iter().map(Vec::len).sum::<usize>() - 2, pruned_points);
    assert!(svg.contains("pruned") && svg.contains("complete"));
}

#[test]
fn importances_and_files() {
    let bars = param_importances(&[("width".to_string(), 0.2), ("lr".to_string(), 0.8)]);
    assert_eq!(bars.bars[0].0, "lr", "most important first");
    let dir = std::env::temp_dir().join(format!("ferrograd-study-plots-{}", std::process::id()));
    let written = write_study_plots(&study(), &dir, Some(&[("x".to_string(), 1.0)])).unwrap();
    assert_eq!(written.len(), 3);
    for path in &written {
        let text = std::fs::read_to_string(path).unwrap();
        roxmltree::Document::parse(&text).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
