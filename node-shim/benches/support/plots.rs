//! PNG plots of a benchmark run (plotters, bitmap backend). Text needs a TrueType font: DejaVu Sans
//! from Debian's `fonts-dejavu-core`, or the file `$VK_PLOT_FONT` names.

use std::{path::Path, sync::Once};

use anyhow::Context;
use plotters::prelude::*;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const SIZE: (u32, u32) = (900, 540);

static REGISTER: Once = Once::new();

/// Registers the font as `sans-serif` once (plotters keeps it for the process).
fn font() -> anyhow::Result<()> {
    let path = std::env::var("VK_PLOT_FONT").unwrap_or_else(|_| FONT.to_owned());
    let bytes = std::fs::read(&path).with_context(|| {
        format!("reading the plot font {path} (apt install fonts-dejavu-core, or set VK_PLOT_FONT)")
    })?;
    let mut result = Ok(());
    REGISTER.call_once(|| {
        // plotters wants the bytes for the whole process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        result = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| anyhow::anyhow!("{path} is not a usable TrueType font"));
    });
    result
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e:?}")
}

/// How many samples fall in each of `bins` equal bins from 0 to the largest (ms), as (bin start,
/// count).
fn histogram(values: &[f64], bins: usize) -> (f64, Vec<(f64, usize)>) {
    let max = values.iter().copied().fold(0.0_f64, f64::max).max(1.0);
    #[allow(clippy::cast_precision_loss)]
    let width = max / bins as f64;
    let mut counts = vec![0usize; bins];
    for v in values {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = ((v / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    #[allow(clippy::cast_precision_loss)]
    let out = counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| (i as f64 * width, c))
        .collect();
    (width, out)
}

/// The create → Running latency distribution (ms), as a histogram.
pub fn latency_histogram(path: &Path, latencies_ms: &[f64], title: &str) -> anyhow::Result<()> {
    font()?;
    let (width, bins) = histogram(latencies_ms, 60);
    let top = bins.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1);
    let right = bins.last().map_or(1.0, |(x, _)| x + width);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..right, 0usize..top + top / 10 + 1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("create → Running (ms)")
        .y_desc("pods")
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(
            bins.iter()
                .map(|(x, c)| Rectangle::new([(*x, 0), (*x + width, *c)], BLUE.mix(0.6).filled())),
        )
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

/// Pods Running over time: `times` (seconds since the first create), sorted.
pub fn running_over_time(path: &Path, times: &[f64], title: &str) -> anyhow::Result<()> {
    font()?;
    let end = times.last().copied().unwrap_or(1.0).max(0.001);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end * 1.02, 0usize..times.len() + 1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first create")
        .y_desc("pods Running")
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(
            times.iter().enumerate().map(|(i, t)| (*t, i + 1)),
            &BLUE,
        ))
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

/// The shim's resident set (MB) against the number of pods Running when it was sampled.
pub fn rss_over_pods(path: &Path, samples: &[(usize, f64)], title: &str) -> anyhow::Result<()> {
    font()?;
    let most = samples.iter().map(|(n, _)| *n).max().unwrap_or(1).max(1);
    let top = samples.iter().map(|(_, m)| *m).fold(1.0_f64, f64::max);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0usize..most + most / 50 + 1, 0.0..top * 1.1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("pods Running")
        .y_desc("shim RSS (MB)")
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(samples.iter().copied(), &RED))
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}
