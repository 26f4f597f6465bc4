//! The SVG plots parse as XML and contain the plotted series: each line is a polyline whose
//! pixels are an affine image of the data (so the points are where the data says), each dot
//! series a run of circles, with titles, axis labels and legend entries as text.

use ferrograd_train::plot::{charts_to_svg, training_curves, BarChart, Chart, Series};
use ferrograd_train::{EpochLogs, History};

/// Every `<polyline>`'s points and stroke, every `<circle>`'s centre and fill, every text.
struct Svg {
    polylines: Vec<(String, Vec<(f64, f64)>)>,
    circles: Vec<(String, (f64, f64))>,
    rects: Vec<(String, f64, f64)>,
    texts: Vec<String>,
}

fn parse(svg: &str) -> Svg {
    let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let mut out = Svg { polylines: Vec::new(), circles: Vec::new(), rects: Vec::new(), texts: Vec::new() };
    for n in doc.descendants().filter(|n| n.is_element()) {
        let attr = |a: &str| n.attribute(a).unwrap_or_default().to_string();
        let num = |a: &str| attr(a).parse::<f64>().unwrap();
        match n.tag_name().name() {
            "polyline" => {
                let pts = attr("points")
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect();
                out.polylines.push((attr("stroke"), pts));
            }
            "circle" => out.circles.push((attr("fill"), (num("cx"), num("cy")))),
            "rect" => out.rects.push((attr("fill"), num("width"), num("height"))),
            "text" => out.texts.push(n.text().unwrap_or_default().trim().to_string()),
            _ => {}
        }
    }
    out
}

/// `pixels` is `a + b * data` on both axes (to within the 1-pixel rounding), with y flipped.
fn assert_affine(data: &[(f64, f64)], pixels: &[(f64, f64)]) {
    assert_eq!(data.len(), pixels.len());
    for axis in 0..2 {
        let d: Vec<f64> = data.iter().map(|p| if axis == 0 { p.0 } else { p.1 }).collect();
        let px: Vec<f64> = pixels.iter().map(|p| if axis == 0 { p.0 } else { p.1 }).collect();
        let (i, j) = (0, d.len() - 1);
        let b = (px[j] - px[i]) / (d[j] - d[i]);
        assert!(if axis == 0 { b > 0.0 } else { b < 0.0 }, "axis {axis}: scale {b}");
        for k in 0..d.len() {
            let expected = px[i] + b * (d[k] - d[i]);
            assert!((px[k] - expected).abs() <= 1.5, "axis {axis}, point {k}: pixel {} vs {expected}", px[k]);
        }
    }
}

/// The polyline with `n` points drawn in `color`.
fn line<'s>(svg: &'s Svg, color: &str, n: usize) -> &'s [(f64, f64)] {
    let found: Vec<_> = svg.polylines.iter().filter(|(c, p)| c == color && p.len() == n).collect();
    assert_eq!(found.len(), 1, "one {n}-point polyline in {color}");
    &found[0].1
}

#[test]
fn a_chart_holds_its_lines_and_dots() {
    let train = vec![(1.0, 0.9), (2.0, 0.5), (3.0, 0.45), (4.0, 0.3), (5.0, 0.31)];
    let dots = vec![(1.0, 0.8), (2.0, 0.6), (3.0, 0.55), (4.0, f64::NAN), (5.0, 0.5)];
    let chart = Chart::new("loss per epoch", "epoch", "cross-entropy")
        .series(Series::line("train", train.clone()))
        .series(Series::points("validation", dots.clone()));
    let svg = parse(&chart.to_svg(640, 400).unwrap());
    assert_affine(&train, line(&svg, "#1F77B4", 5));
    let finite: Vec<(f64, f64)> = dots.iter().copied().filter(|p| p.1.is_finite()).collect();
    let mut centres: Vec<(f64, f64)> = svg.circles.iter().filter(|(c, _)| c == "#FF7F0E").map(|c| c.1).collect();
    // The data's dots, then the legend's one dot.
    assert_eq!(centres.len(), finite.len() + 1);
    centres.pop();
    assert_affine(&finite, &centres);
    // Both series on one scale: the dot at epoch 1 (0.8) sits below the line's start (0.9).
    assert!(centres[0].1 > line(&svg, "#1F77B4", 5)[0].1);
    for text in ["loss per epoch", "epoch", "cross-entropy", "train", "validation"] {
        assert!(svg.texts.iter().any(|t| t == text), "no text `{text}` in {:?}", svg.texts);
    }
}

fn history() -> History {
    let epochs = (0..6)
        .map(|e| {
            let x = e as f64;
            EpochLogs {
                epoch: e,
                values: vec![
                    ("loss".into(), 1.0 / (1.0 + x)),
                    ("accuracy".into(), 0.5 + 0.08 * x),
                    ("val_loss".into(), 1.1 / (1.0 + x) + 0.01 * x),
                    ("val_accuracy".into(), 0.45 + 0.07 * x),
                    ("lr".into(), 1e-3 * 0.5f64.powi(e as i32)),
                    ("seconds".into(), 1.5),
                ],
            }
        })
        .collect();
    History { epochs, ..History::default() }
}

#[test]
fn training_curves_draw_train_and_validation_per_figure() {
    let h = history();
    let charts = training_curves(&h);
    let titles: Vec<&str> = charts.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(titles, vec!["loss", "accuracy", "learning rate"]);
    let svg = parse(&charts_to_svg(&charts, 560, 380).unwrap());
    let curve = |name: &str| -> Vec<(f64, f64)> { h.series(name).iter().map(|&(e, v)| ((e + 1) as f64, v)).collect() };
    // Each panel has its own scale: check each series against its own pixels.
    let blue: Vec<&Vec<(f64, f64)>> =
        svg.polylines.iter().filter(|(c, p)| c == "#1F77B4" && p.len() == 6).map(|p| &p.1).collect();
    let orange: Vec<&Vec<(f64, f64)>> =
        svg.polylines.iter().filter(|(c, p)| c == "#FF7F0E" && p.len() == 6).map(|p| &p.1).collect();
    assert_eq!((blue.len(), orange.len()), (3, 2), "train lines in 3 panels, validation in 2");
    assert_affine(&curve("loss"), blue[0]);
    assert_affine(&curve("accuracy"), blue[1]);
    assert_affine(&curve("lr"), blue[2]);
    assert_affine(&curve("val_loss"), orange[0]);
    assert_affine(&curve("val_accuracy"), orange[1]);
    assert!(!svg.texts.iter().any(|t| t == "seconds"));
}

#[test]
fn bars_are_as_long_as_their_values() {
    let bars = vec![("lr".to_string(), 0.6), ("width".to_string(), 0.3), ("dropout".to_string(), 0.1)];
    let svg = parse(&BarChart::new("importances", "importance", bars.clone()).to_svg(600, 260).unwrap());
    let widths: Vec<f64> = svg.rects.iter().filter(|r| r.0 == "#1F77B4").map(|r| r.1).collect();
    assert_eq!(widths.len(), 3);
    // Drawn in the given order (the first bar at the top); widths proportional to the values.
    let per_unit = widths[0] / 0.6;
    for (w, (_, v)) in widths.iter().zip(&bars) {
        assert!((w - v * per_unit).abs() <= 1.5, "{w} vs {}", v * per_unit);
    }
    for name in ["lr", "width", "dropout", "importance", "importances"] {
        assert!(svg.texts.iter().any(|t| t == name), "no `{name}` in {:?}", svg.texts);
    }
}

/// The numeric tick labels of an SVG (texts that parse as numbers).
fn numeric_labels(svg: &Svg) -> Vec<String> {
    svg.texts.iter().filter(|t| !t.is_empty() && t.parse::<f64>().is_ok()).cloned().collect()
}

#[test]
fn epoch_axes_label_whole_epochs_only() {
    // Three epochs: plotters would put ticks at 1.2, 1.4, ... on a 1..3 axis.
    let chart =
        Chart::new("loss", "epoch", "loss").series(Series::line("train", vec![(1.0, 0.9), (2.0, 0.5), (3.0, 0.4)]));
    let svg = parse(&chart.to_svg(640, 400).unwrap());
    let labels = numeric_labels(&svg);
    for whole in ["1", "2", "3"] {
        assert!(labels.iter().any(|l| l == whole), "no epoch label {whole} in {labels:?}");
    }
    // Every label that is an epoch (>= 1, on the x axis) is whole; the loss axis (0.4..0.9) has
    // its own fractional labels, all below 1.
    for l in &labels {
        let v: f64 = l.parse().unwrap();
        assert!(v < 1.0 || v.fract() == 0.0, "fractional epoch label {l} in {labels:?}");
    }
}

#[test]
fn a_learning_rate_axis_uses_one_notation() {
    let lr: Vec<(f64, f64)> = (0..6).map(|e| ((e + 1) as f64, 1e-3 * 0.5f64.powi(e))).collect();
    let chart = Chart::new("learning rate", "epoch", "lr").series(Series::line("lr", lr));
    let svg = parse(&chart.to_svg(640, 400).unwrap());
    let y: Vec<String> = numeric_labels(&svg).into_iter().filter(|l| l.parse::<f64>().unwrap() < 0.5).collect();
    assert!(y.len() >= 3, "few lr labels: {y:?}");
    // Apart from a plain "0", every label is in scientific notation (no "0.001" beside "5.0e-4").
    assert!(y.iter().filter(|l| *l != "0").all(|l| l.contains('e')), "mixed notation: {y:?}");
    // The labels are distinct: no two ticks print the same.
    let mut unique = y.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), y.len(), "repeated labels: {y:?}");
}

#[test]
fn a_dot_series_has_a_dot_in_its_legend() {
    let chart = Chart::new("trials", "trial", "value")
        .series(Series::points("trials", vec![(0.0, 3.0), (1.0, 2.0), (2.0, 2.5)]))
        .series(Series::line("best", vec![(0.0, 3.0), (1.0, 2.0), (2.0, 2.0)]));
    let svg = parse(&chart.to_svg(640, 400).unwrap());
    // Three data dots plus one legend dot in the first colour; no short legend line in it.
    let dots = svg.circles.iter().filter(|(c, _)| c == "#1F77B4").count();
    assert_eq!(dots, 4, "data dots and one legend dot");
    assert!(!svg.polylines.iter().any(|(c, p)| c == "#1F77B4" && p.len() == 2), "a line in the dots' legend");
    assert!(svg.polylines.iter().any(|(c, p)| c == "#FF7F0E" && p.len() == 2), "the line series' legend line");
}
