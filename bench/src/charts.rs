//! SVG charts and CSV samples of a run: latency against offered load (ingest, end to end), the
//! noisy-tenant comparison, and every ratio of BENCHMARKS.md against its target. A full run
//! writes them into `docs/bench/` beside BENCHMARKS.md; a quick run into `target/bench/charts/`,
//! so the smoke test draws them too without touching the committed ones.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::prelude::*;

use crate::stats::Latencies;

/// Where a run with results file `out` puts its charts: `docs/bench/` when `out` is the
/// workspace's BENCHMARKS.md, else `charts/` beside `out`.
pub fn dir_for(root: &Path, out: &Path) -> PathBuf {
    if out == root.join("BENCHMARKS.md") {
        root.join("docs").join("bench")
    } else {
        out.parent().unwrap_or(root).join("charts")
    }
}

/// Latency samples under one name.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// The samples.
    pub latencies: Latencies,
}

impl Series {
    /// A named series.
    pub fn new(name: impl Into<String>, latencies: Latencies) -> Self {
        Self { name: name.into(), latencies }
    }
}

/// One load point of a latency sweep: offered rate and the samples measured at it.
pub struct LoadPoint {
    /// Offered events per second.
    pub offered: f64,
    /// Latency samples at that rate (every repeat).
    pub latencies: Latencies,
}

const COLOURS: [RGBColor; 4] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), BLACK];

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// "docs/bench/x.svg, docs/bench/x.csv" for a note.
fn names(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", ")
}

/// A log-scale latency range covering `values` (ms) with some room.
fn ms_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return 0.1..10.0;
    }
    (lo * 0.7).max(0.05)..hi * 1.5
}

/// Latency (p50, p99, p99.9) against offered load: `<name>.svg` and every sample in `<name>.csv`.
pub fn latency_vs_load(dir: &Path, name: &str, title: &str, points: &mut [LoadPoint]) -> anyhow::Result<String> {
    let mut csv = String::from("offered_per_s,latency_ms\n");
    let mut lines: Vec<(&str, Vec<(f64, f64)>)> = vec![("p50", Vec::new()), ("p99", Vec::new()), ("p99.9", Vec::new())];
    for p in points.iter_mut() {
        for us in p.latencies.samples_us() {
            let _ = writeln!(csv, "{:.2},{:.3}", p.offered, *us as f64 / 1000.0);
        }
        for (line, q) in lines.iter_mut().zip([50.0, 99.0, 99.9]) {
            line.1.extend(p.latencies.percentile_ms(q).map(|ms| (p.offered, ms)));
        }
    }
    let csv_path = write(dir, &format!("{name}.csv"), &csv)?;
    let svg_path = dir.join(format!("{name}.svg"));
    let x_max = points.iter().map(|p| p.offered).fold(0.0f64, f64::max) * 1.1;
    let y = ms_range(lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)));
    {
        let root = SVGBackend::new(&svg_path, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max.max(1.0), y.log_scale())?;
        chart.configure_mesh().x_desc("offered load (events/s)").y_desc("latency (ms, log scale)").draw()?;
        for ((label, line), colour) in lines.iter().zip(COLOURS) {
            chart
                .draw_series(LineSeries::new(line.iter().copied(), colour.stroke_width(2)))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            chart.draw_series(line.iter().map(|p| Circle::new(*p, 4, colour.filled())))?;
        }
        chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).draw()?;
        root.present()?;
    }
    Ok(names(&[svg_path, csv_path]))
}

/// The quiet tenants' latency percentiles per series, with the target as a dashed line:
/// `noisy.svg` and every sample in `noisy.csv`.
pub fn noisy(dir: &Path, series: &[Series], target_ms: f64) -> anyhow::Result<String> {
    const QUANTILES: [f64; 5] = [50.0, 90.0, 95.0, 99.0, 99.9];
    let mut csv = String::from("series,latency_ms\n");
    let mut lines = Vec::new();
    for s in series {
        for us in s.latencies.samples_us() {
            let _ = writeln!(csv, "\"{}\",{:.3}", s.name.replace('"', "'"), *us as f64 / 1000.0);
        }
        let mut l = s.latencies.clone();
        let pts: Vec<(i32, f64)> =
            QUANTILES.iter().enumerate().filter_map(|(i, q)| l.percentile_ms(*q).map(|ms| (i as i32, ms))).collect();
        lines.push((s.name.as_str(), pts));
    }
    let csv_path = write(dir, "noisy.csv", &csv)?;
    let svg_path = dir.join("noisy.svg");
    let y = ms_range(lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)).chain([target_ms]));
    // Room above the highest line for the legend (a log axis: a factor, not a margin).
    let y = y.start..y.end * 8.0;
    {
        let root = SVGBackend::new(&svg_path, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Quiet tenants' latency (ingest's 200 → reply) beside a noisy tenant", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.3f64..QUANTILES.len() as f64 - 0.7, y.log_scale())?;
        chart
            .configure_mesh()
            .x_labels(QUANTILES.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && i >= 0.0 {
                    QUANTILES.get(i as usize).map_or_else(String::new, |q| format!("p{q}"))
                } else {
                    String::new()
                }
            })
            .x_desc("percentile")
            .y_desc("latency (ms, log scale)")
            .draw()?;
        for ((label, pts), colour) in lines.iter().zip(COLOURS) {
            let pts: Vec<(f64, f64)> = pts.iter().map(|(i, ms)| (f64::from(*i), *ms)).collect();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, colour.filled())))?;
        }
        let dashes = (0..QUANTILES.len() * 4).map(|k| {
            let x = -0.3 + k as f64 * 0.25;
            PathElement::new(vec![(x, target_ms), (x + 0.12, target_ms)], BLACK.stroke_width(1))
        });
        chart
            .draw_series(dashes)?
            .label(format!("target ≤ {target_ms:.1} ms (from the p99 alone)"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], BLACK.stroke_width(1)));
        chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).draw()?;
        root.present()?;
    }
    Ok(names(&[svg_path, csv_path]))
}

/// One row of BENCHMARKS.md with a ratio and a ratio target.
struct RatioRow {
    label: String,
    ratio: f64,
    /// `≥` (at least) or `≤` (at most) and the bound.
    target: (char, f64),
    pass: bool,
}

/// `0.85×`, or `0.85× (0.70–0.90, n=3)` (a median with its spread) → 0.85.
fn times(cell: &str) -> Option<f64> {
    cell.split_whitespace().next()?.strip_suffix('×')?.parse().ok()
}

/// The rows of every block of `markdown` whose ratio has a target of the form `≥ 0.80×` or
/// `≤ 2.0×`; other targets (milliseconds, "report") are not ratios and are left out.
fn ratio_rows(markdown: &str) -> Vec<RatioRow> {
    let mut block = String::new();
    let mut rows = Vec::new();
    for line in markdown.lines() {
        if let Some(key) = line.strip_prefix("<!-- bench:").and_then(|l| l.strip_suffix(":begin -->")) {
            block = key.to_owned();
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        if !line.starts_with("| ") || cells.len() != 6 {
            continue;
        }
        let target = cells[4].trim();
        let op = target.chars().next().filter(|c| *c == '≥' || *c == '≤');
        let (Some(op), Some(ratio)) = (op, times(cells[3])) else { continue };
        // The whole target must be the bound: `≤ 2× alone + 10 ms` is not a ratio target.
        let bound = target.trim_start_matches(['≥', '≤', ' ']).strip_suffix('×').and_then(|b| b.parse().ok());
        let Some(bound) = bound else { continue };
        let metric: String = cells[0].trim_start_matches("| ").chars().take(70).collect();
        rows.push(RatioRow {
            label: format!("{block}: {metric}"),
            ratio,
            target: (op, bound),
            pass: cells[5].trim_end_matches(" |").trim() == "PASS",
        });
    }
    rows
}

/// Every ratio of `markdown` (the results file) beside its target: `ratios.svg` and `ratios.csv`.
pub fn ratios(dir: &Path, markdown: &str) -> anyhow::Result<String> {
    let rows = ratio_rows(markdown);
    let mut csv = String::from("row,ratio,target,verdict\n");
    for r in &rows {
        let verdict = if r.pass { "PASS" } else { "FAIL" };
        let _ = writeln!(csv, "\"{}\",{},{} {},{verdict}", r.label.replace('"', "'"), r.ratio, r.target.0, r.target.1);
    }
    let csv_path = write(dir, "ratios.csv", &csv)?;
    let svg_path = dir.join("ratios.svg");
    let x_max = rows.iter().map(|r| r.ratio.max(r.target.1)).fold(1.0f64, f64::max) * 1.1;
    let n = rows.len() as i32;
    {
        let root = SVGBackend::new(&svg_path, (1100, 120 + 26 * n.max(1) as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Each ratio against its target (dot: measured, green PASS / red FAIL; cross: target)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(520)
            .build_cartesian_2d(0.0..x_max, -1..n)?;
        let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
        chart
            .configure_mesh()
            .y_labels(rows.len() + 1)
            .y_label_formatter(&|y| {
                usize::try_from(n - 1 - *y).ok().and_then(|i| labels.get(i).cloned()).unwrap_or_default()
            })
            .x_desc("ratio to the ceiling or baseline measured in the same run")
            .draw()?;
        for (i, r) in rows.iter().enumerate() {
            // The file's first row at the top.
            let y = n - 1 - i as i32;
            let colour = if r.pass { COLOURS[2] } else { COLOURS[1] };
            chart.draw_series(std::iter::once(Circle::new((r.ratio, y), 5, colour.filled())))?;
            chart.draw_series(std::iter::once(Cross::new((r.target.1, y), 6, BLACK.stroke_width(2))))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{} {}×", r.target.0, r.target.1),
                (r.target.1, y),
                ("sans-serif", 12).into_font(),
            )))?;
        }
        root.present()?;
    }
    Ok(names(&[svg_path, csv_path]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_rows_keep_only_ratio_targets() {
        let md = "<!-- bench:ingest:begin -->\n\
                  | Metric | Value | Ceiling | Ratio | Target | |\n\
                  | accepts/s | 1/s | 2/s | 0.50× | ≥ 0.80× | FAIL |\n\
                  | p99 | 6 ms | p50 |  | ≤ 10 ms, no errors | PASS |\n\
                  | noisy | 9 ms | 4 ms | 2.25× | ≤ 2× alone + 10 ms = 18 ms | PASS |\n\
                  <!-- bench:console:begin -->\n\
                  | page | 2 ms | 1 ms | 1.07× | ≤ 2.0× | PASS |\n\
                  | fleet | 2/s | 3/s | 0.79× (0.70–0.85, n=3) | ≥ 0.70× | PASS |\n";
        let rows = ratio_rows(md);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].ratio, 0.79);
        assert_eq!((rows[0].ratio, rows[0].target, rows[0].pass), (0.5, ('≥', 0.8), false));
        assert_eq!(rows[1].label, "console: page");
        assert!(rows[1].pass);
    }
}
