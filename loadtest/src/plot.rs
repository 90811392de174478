//! The report's picture: throughput and capture-to-ack latency (p50, p99) per second of
//! the run, one panel each, as SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Point;

/// Draws the timeline into `path`.
pub fn timeline(points: &[Point], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (top, bottom) = root.split_vertically(300);
    let t_max = points.len().max(2) as u64;

    let fps_max = points
        .iter()
        .map(|p| p.frames_per_s)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(&top)
        .caption("throughput (published acks per second)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0u64..t_max, 0f64..fps_max * 1.1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("frames/s")
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.t, p.frames_per_s as f64)),
            &BLUE,
        ))
        .map_err(plot_err)?;

    let ms_max = points.iter().map(|p| p.p99_ms).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("capture-to-ack latency (ms)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..t_max, 0f64..ms_max * 1.1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("ms")
        .draw()
        .map_err(plot_err)?;
    let with_acks = || points.iter().filter(|p| p.frames_per_s > 0);
    chart
        .draw_series(LineSeries::new(
            with_acks().map(|p| (p.t, p.p50_ms)),
            &GREEN,
        ))
        .map_err(plot_err)?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    chart
        .draw_series(LineSeries::new(with_acks().map(|p| (p.t, p.p99_ms)), &RED))
        .map_err(plot_err)?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting the timeline: {e}")
}
