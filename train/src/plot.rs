//! SVG plots for people who would rather look than read: training curves of a run, and the
//! chart types `ferrograd_tuning` uses for a study (lines, points, horizontal bars).
//!
//! Drawn with plotters' SVG backend only (no fonts or system libraries: text is left to the
//! SVG viewer). Every chart has a title and labelled axes; each series is one `<polyline>`
//! (lines) or a run of `<circle>`s (points), in the order given, with a legend entry.
//!
//! ```
//! use ferrograd_train::plot::{Chart, Series};
//! let chart = Chart::new("loss", "epoch", "loss")
//!     .series(Series::line("train", vec![(1.0, 0.9), (2.0, 0.5), (3.0, 0.4)]))
//!     .series(Series::line("validation", vec![(1.0, 0.8), (2.0, 0.6), (3.0, 0.55)]));
//! let svg = chart.to_svg(640, 400).unwrap();
//! assert!(svg.starts_with("<svg") && svg.contains("validation"));
//! ```

use std::path::Path;

use ferrograd_nn::checkpoint::write_atomic;
use ferrograd_tensor::Float;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Callback, Context, Control, EpochLogs, History, TrainError};

/// Colours of successive series (Tableau's ten, readable on white).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A line through the points, in order.
    Line,
    /// A dot at each point.
    Points,
}

/// One named series of `(x, y)` points. Non-finite points are left out.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry (empty: no entry).
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
    /// Line or points.
    pub style: Style,
    /// An index into the palette; `None` takes the series' position.
    pub color: Option<usize>,
}

impl Series {
    /// A line.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, style: Style::Line, color: None }
    }

    /// Dots.
    pub fn points(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, style: Style::Points, color: None }
    }

    /// Uses palette colour `i` (series of one kind share a colour).
    pub fn color(mut self, i: usize) -> Self {
        self.color = Some(i);
        self
    }

    fn finite(&self) -> Vec<(f64, f64)> {
        self.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()
    }
}

/// A chart of lines and points with a title and axis labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// The title.
    pub title: String,
    /// The x axis' label.
    pub x_label: String,
    /// The y axis' label.
    pub y_label: String,
    /// The series.
    pub series: Vec<Series>,
}

/// A horizontal bar chart (parameter importances): one bar per `(name, value)`, top to bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct BarChart {
    /// The title.
    pub title: String,
    /// The value axis' label.
    pub x_label: String,
    /// The bars.
    pub bars: Vec<(String, f64)>,
}

fn plot_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A tick label: integers without a decimal point, ordinary magnitudes with at most four
/// decimals (trailing zeros dropped), very small or large ones in scientific notation.
fn tick(v: &f64) -> String {
    let v = *v;
    if v == 0.0 {
        return "0".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e6 {
        return format!("{v:.0}");
    }
    if (1e-3..1e5).contains(&v.abs()) {
        let s = format!("{v:.4}");
        return s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{v:.1e}")
}

/// The tick labels of one axis spanning `lo..hi`, all in one notation: scientific when the
/// axis' magnitude is very small or large (a learning rate of 1e-4), else fixed with as many
/// decimals as the tick spacing needs. With `integral` (epochs, trial numbers) ticks between
/// whole numbers get no label.
fn axis_labels(lo: f64, hi: f64, integral: bool) -> impl Fn(&f64) -> String {
    let magnitude = lo.abs().max(hi.abs());
    let scientific = magnitude > 0.0 && !(1e-2..1e5).contains(&magnitude);
    // plotters puts about ten ticks on an axis; their spacing sets the decimals needed.
    let spacing = ((hi - lo) / 10.0).abs();
    let decimals = if spacing > 0.0 && spacing < 1.0 { (-spacing.log10()).ceil().clamp(0.0, 8.0) as usize } else { 0 };
    move |v: &f64| {
        let v = *v;
        if integral && v.fract() != 0.0 {
            return String::new();
        }
        if v == 0.0 {
            return "0".into();
        }
        if scientific {
            return format!("{v:.1e}");
        }
        if integral {
            return format!("{v:.0}");
        }
        format!("{v:.decimals$}")
    }
}

/// The corner whose quarter of the plot holds the fewest points, for the legend.
fn emptiest_corner(points: &[(f64, f64)], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> SeriesLabelPosition {
    let count = |right: bool, upper: bool| {
        points
            .iter()
            .filter(|(x, y)| {
                let (fx, fy) = ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0));
                (if right { fx > 0.55 } else { fx < 0.45 }) && (if upper { fy > 0.6 } else { fy < 0.4 })
            })
            .count()
    };
    let corners = [
        (count(true, true), SeriesLabelPosition::UpperRight),
        (count(true, false), SeriesLabelPosition::LowerRight),
        (count(false, true), SeriesLabelPosition::UpperLeft),
        (count(false, false), SeriesLabelPosition::LowerLeft),
    ];
    corners.into_iter().min_by_key(|c| c.0).map(|c| c.1).expect("four corners")
}

/// The axis range of `values` with 5% room on each side (a unit range around a single value).
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
        let pad = (lo.abs() * 0.1).max(0.5);
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

impl Chart {
    /// An empty chart.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Chart { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), series: Vec::new() }
    }

    /// Adds a series.
    pub fn series(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }

    fn draw(&self, area: &DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String> {
        let all: Vec<(f64, f64)> = self.series.iter().flat_map(Series::finite).collect();
        let (x0, x1) = range(all.iter().map(|p| p.0));
        let (y0, y1) = range(all.iter().map(|p| p.1));
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        let integral_x = !all.is_empty() && all.iter().all(|p| p.0.fract() == 0.0);
        // At most one tick per whole number on an integral axis (three epochs: three ticks).
        let x_ticks = if integral_x { ((x1 - x0).floor() as usize + 1).clamp(2, 10) } else { 10 };
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_labels(x_ticks)
            .x_label_formatter(&axis_labels(x0, x1, integral_x))
            .y_label_formatter(&axis_labels(y0, y1, false))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        let mut legend = false;
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[s.color.unwrap_or(i) % COLORS.len()];
            let points = s.finite();
            let drawn = match s.style {
                Style::Line => chart.draw_series(LineSeries::new(points, color.stroke_width(2))).map_err(plot_err)?,
                Style::Points => chart
                    .draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                    .map_err(plot_err)?,
            };
            if !s.name.is_empty() {
                legend = true;
                let drawn = drawn.label(&s.name);
                // The legend shows the series as drawn: a short line, or a dot.
                match s.style {
                    Style::Line => {
                        drawn.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)))
                    }
                    Style::Points => drawn.legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled())),
                };
            }
        }
        if legend {
            chart
                .configure_series_labels()
                .position(emptiest_corner(&all, (x0, x1), (y0, y1)))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 14))
                .draw()
                .map_err(plot_err)?;
        }
        Ok(())
    }

    /// The chart as an SVG document of `width` x `height` pixels.
    ///
    /// # Errors
    /// plotters' message if drawing fails.
    pub fn to_svg(&self, width: u32, height: u32) -> Result<String, String> {
        render(width, height, 1, |areas| self.draw(&areas[0]))
    }
}

impl BarChart {
    /// A bar chart.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, bars: Vec<(String, f64)>) -> Self {
        BarChart { title: title.into(), x_label: x_label.into(), bars }
    }

    fn draw(&self, area: &DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String> {
        let n = self.bars.len().max(1);
        let max = self.bars.iter().map(|b| b.1).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
        let x1 = if max > 0.0 { max * 1.1 } else { 1.0 };
        let names: Vec<String> = self.bars.iter().map(|b| b.0.clone()).collect();
        let longest = names.iter().map(String::len).max().unwrap_or(4) as u32;
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size((longest * 8 + 20).clamp(60, 260))
            .build_cartesian_2d(0.0..x1, (0..n).into_segmented())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .x_label_formatter(&tick)
            .axis_desc_style(("sans-serif", 15))
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                // Bar 0 at the top: segment i holds bar n - 1 - i.
                SegmentValue::CenterOf(i) if *i < n => names.get(n - 1 - i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .disable_y_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        let color = COLORS[0];
        chart
            .draw_series(self.bars.iter().enumerate().filter(|(_, b)| b.1.is_finite()).map(|(i, b)| {
                let slot = n - 1 - i;
                let mut r = Rectangle::new(
                    [(0.0, SegmentValue::Exact(slot)), (b.1.max(0.0), SegmentValue::Exact(slot + 1))],
                    color.filled(),
                );
                r.set_margin(4, 4, 0, 0);
                r
            }))
            .map_err(plot_err)?;
        Ok(())
    }

    /// The chart as an SVG document.
    ///
    /// # Errors
    /// plotters' message if drawing fails.
    pub fn to_svg(&self, width: u32, height: u32) -> Result<String, String> {
        render(width, height, 1, |areas| self.draw(&areas[0]))
    }
}

/// Draws `count` panels side by side (wrapping after two) into one SVG.
fn render(
    width: u32,
    height: u32,
    count: usize,
    draw: impl FnOnce(&[DrawingArea<SVGBackend<'_>, Shift>]) -> Result<(), String>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let cols = count.clamp(1, 2);
        let rows = count.div_ceil(cols).max(1);
        let areas = root.split_evenly((rows, cols));
        draw(&areas)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Several charts in one SVG, two per row, each panel `panel_width` x `panel_height`.
///
/// # Errors
/// plotters' message if drawing fails.
pub fn charts_to_svg(charts: &[Chart], panel_width: u32, panel_height: u32) -> Result<String, String> {
    let cols = charts.len().clamp(1, 2) as u32;
    let rows = charts.len().div_ceil(2).max(1) as u32;
    render(panel_width * cols, panel_height * rows, charts.len(), |areas| {
        charts.iter().zip(areas).try_for_each(|(c, a)| c.draw(a))
    })
}

/// Writes `svg` to `path` atomically.
///
/// # Errors
/// The file cannot be written.
pub fn write_svg(path: impl AsRef<Path>, svg: &str) -> Result<(), TrainError> {
    write_atomic(path.as_ref(), |w| w.write_all(svg.as_bytes()))?;
    Ok(())
}

/// The training curves of a history, one chart per figure against the epoch (from 1): `loss`
/// with `val_loss`, each metric with its `val_` twin, and the learning rate when it changes.
/// Times and counters (`seconds`, `val_seconds`, `skipped_steps`) are left out.
pub fn training_curves(history: &History) -> Vec<Chart> {
    let names = history.names();
    let mut charts = Vec::new();
    let skip = ["lr", "seconds", "val_seconds", "skipped_steps"];
    for name in names.iter().filter(|n| !n.starts_with("val_") && !skip.contains(&n.as_str())) {
        let curve =
            |n: &str| -> Vec<(f64, f64)> { history.series(n).into_iter().map(|(e, v)| ((e + 1) as f64, v)).collect() };
        let mut chart = Chart::new(name.clone(), "epoch", name.clone()).series(Series::line("train", curve(name)));
        let val = format!("val_{name}");
        if names.contains(&val) {
            chart = chart.series(Series::line("validation", curve(&val)));
        }
        charts.push(chart);
    }
    // Validation-only figures (a metric the training pass does not compute).
    for val in names.iter().filter(|n| n.strip_prefix("val_").is_some_and(|b| !names.iter().any(|m| m == b))) {
        let points = history.series(val).into_iter().map(|(e, v)| ((e + 1) as f64, v)).collect();
        charts.push(Chart::new(val.clone(), "epoch", val.clone()).series(Series::line("validation", points)));
    }
    let lr = history.series("lr");
    if lr.windows(2).any(|w| w[0].1 != w[1].1) {
        let points = lr.into_iter().map(|(e, v)| ((e + 1) as f64, v)).collect();
        charts.push(Chart::new("learning rate", "epoch", "lr").series(Series::line("lr", points)));
    }
    charts
}

/// Writes [`training_curves`] as one SVG.
///
/// # Errors
/// Drawing or writing fails.
pub fn write_training_curves(history: &History, path: impl AsRef<Path>) -> Result<(), TrainError> {
    let path = path.as_ref();
    let svg = charts_to_svg(&training_curves(history), 560, 380)
        .map_err(|problem| TrainError::Plot { path: path.to_path_buf(), problem })?;
    write_svg(path, &svg)
}

/// Redraws the training curves into an SVG file at every epoch's end.
pub struct CurvesPlot {
    path: std::path::PathBuf,
}

impl CurvesPlot {
    /// Draws into `path` (its directory must exist or be creatable).
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        CurvesPlot { path: path.into() }
    }
}

impl<F: Float> Callback<F> for CurvesPlot {
    fn name(&self) -> String {
        "CurvesPlot".into()
    }

    fn main_process_only(&self) -> bool {
        true
    }

    fn on_epoch_end(&mut self, ctx: &mut Context<'_, F>, _logs: &EpochLogs) -> Result<Control, TrainError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
        let history = History { epochs: ctx.history.to_vec(), ..History::default() };
        write_training_curves(&history, &self.path)?;
        Ok(Control::Continue)
    }
}
