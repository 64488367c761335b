//! The SVG chart of `RESULTS.md`: throughput and p99 step latency against agent count, for
//! AgentOS and the direct baseline in `overhead` and `llm_bound`.

use std::path::Path;

use plotters::prelude::*;

use crate::report::ScenarioReport;

/// One line of the chart.
struct Series {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64, f64)>, // agents, tasks/s, p99 ms
}

/// Draws `reports` into `path` (SVG). Variants other than `agentos` and `tokio_direct`, and
/// skipped results, are left out.
pub fn draw(reports: &[ScenarioReport], path: &Path) -> anyhow::Result<()> {
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    let mut series = Vec::new();
    for r in reports {
        for variant in ["agentos", "tokio_direct"] {
            let points: Vec<_> = r
                .results
                .iter()
                .filter(|v| v.variant == variant && v.skipped.is_none() && v.tasks_per_sec > 0.0)
                .map(|v| (v.agents as f64, v.tasks_per_sec, v.step_p99_ms.max(1e-3)))
                .collect();
            if points.len() > 1 {
                series.push(Series {
                    label: format!("{} / {}", r.scenario, variant),
                    color: palette[series.len() % palette.len()],
                    points,
                });
            }
        }
    }
    let all = || series.iter().flat_map(|s| s.points.iter());
    let range = |f: fn(&(f64, f64, f64)) -> f64| {
        let lo = all().map(f).fold(f64::INFINITY, f64::min);
        let hi = all().map(f).fold(0.0, f64::max);
        if lo.is_finite() && hi > 0.0 {
            (lo / 2.0).max(1e-3)..hi * 2.0
        } else {
            1.0..10.0
        }
    };
    let (xs, ys, ls) = (range(|p| p.0), range(|p| p.1), range(|p| p.2));

    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(550);
    for (area, title, y_desc, pick, y_range) in [
        (&left, "Throughput", "tasks/s (log)", 1usize, ys),
        (&right, "Step latency p99", "ms (log)", 2usize, ls),
    ] {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(xs.clone().log_scale(), y_range.log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("concurrent agents (log)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y}")
                }
            })
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for s in &series {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|p| (p.0, if pick == 1 { p.1 } else { p.2 }))
                .collect();
            let color = s.color;
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::MiddleRight)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("chart: {e}")
}
