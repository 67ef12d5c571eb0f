//! The chart: goodput against offered load, a line per configuration (plotters, SVG).

use std::path::Path;

use plotters::prelude::*;

use super::report::LoadRow;

const COLORS: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(31, 119, 180),
];

/// Draws `rows` (goodput as a share of the capacity measured before its run, against
/// offered load in multiples of it) into an SVG file at `path`.
pub fn write(path: &Path, rows: &[LoadRow], configs: &[&str]) -> Result<(), String> {
    draw(path, rows, configs).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn draw(path: &Path, rows: &[LoadRow], configs: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = rows
        .iter()
        .map(|r| 100.0 * r.goodput / r.capacity)
        .fold(100.0f64, f64::max)
        * 1.1;
    let right = rows.iter().map(|r| r.multiple).fold(4.0f64, f64::max) + 0.25;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "goodput under overload (share of each run's measured capacity)",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..right, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("offered load (x capacity)")
        .y_desc("goodput (% of capacity)")
        .x_label_formatter(&|x| format!("{x:.1}x"))
        .y_label_formatter(&|y| format!("{y:.0}%"))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 100.0), (right, 100.0)],
            ShapeStyle::from(&RGBColor(150, 150, 150)).stroke_width(1),
        ))?
        .label("capacity")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RGBColor(150, 150, 150)));
    // The first configurations are drawn widest, so a line another one covers still shows.
    for (i, config) in configs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let width = 2 * (configs.len() - i) as u32 + 1;
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.config == *config)
            .map(|r| (r.multiple, 100.0 * r.goodput / r.capacity))
            .collect();
        chart.draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, width / 2 + 3, color.filled())),
        )?;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(width)))?
            .label(*config)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
