//! SVG charts (plotters, SVG backend only).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
];

/// A named line.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Latency CDF: x = latency in ms (log scale), y = fraction of messages.
pub fn latency_cdf(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    // Whole decades, so the log axis has labelled ticks.
    let lo = xs.clone().fold(f64::INFINITY, f64::min).max(0.01);
    let hi = xs.fold(0.0, f64::max).max(lo);
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_labels(20)
        .x_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            }
        })
        .x_desc("create → receipt latency (ms, log scale)")
        .y_desc("fraction of messages")
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    draw_lines(&mut chart, series, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// Rate over time: x = seconds since the start, y = per second.
pub fn rate_over_time(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    let x_hi = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(0.1);
    let y_hi = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1.0);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_hi * 1.02, 0.0..y_hi * 1.1)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc(y_desc)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    draw_lines(&mut chart, series, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: &[Series],
    legend: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(legend)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}
