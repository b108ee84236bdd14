//! `--plot FILE.svg`: per flood kind, two charts side by side: failed
//! client requests and the client's p99 against the achieved flood rate,
//! one line per setup. plotters, SVG backend only.

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// One step as the plot sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub setup: String,
    pub kind: String,
    /// The achieved flood rate, packets per second.
    pub pps: f64,
    /// Failed requests, short and keep-alive.
    pub failed: u64,
    /// The worse of the short and keep-alive p99s, ms (a client that got
    /// no answer at all counts as its timeout).
    pub p99_ms: f64,
}

/// One line: a setup's points of one kind, by rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub setup: String,
    /// (achieved pps, failed, p99 ms), by pps.
    pub points: Vec<(f64, u64, f64)>,
}

/// The kinds in their first order, and for each its lines (setups in
/// their first order), each line's points sorted by achieved rate.
pub fn lines(points: &[Point]) -> Vec<(String, Vec<Line>)> {
    let mut out: Vec<(String, Vec<Line>)> = Vec::new();
    for p in points {
        let ki = match out.iter().position(|(k, _)| *k == p.kind) {
            Some(i) => i,
            None => {
                out.push((p.kind.clone(), Vec::new()));
                out.len() - 1
            }
        };
        let lines = &mut out[ki].1;
        let li = match lines.iter().position(|l| l.setup == p.setup) {
            Some(i) => i,
            None => {
                lines.push(Line {
                    setup: p.setup.clone(),
                    points: Vec::new(),
                });
                lines.len() - 1
            }
        };
        lines[li].points.push((p.pps, p.failed, p.p99_ms));
    }
    for (_, lines) in &mut out {
        for l in lines {
            l.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
    out
}

/// The upper end of an axis showing `max` (a little room above; at
/// least 1).
fn axis_top(max: f64) -> f64 {
    if max.is_finite() && max > 0.0 {
        max * 1.1
    } else {
        1.0
    }
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Draws the plot of `points` into `path` (SVG).
pub fn draw(path: &Path, points: &[Point], nodes: u32, seconds: u64) -> Result<()> {
    let kinds = lines(points);
    if kinds.is_empty() {
        return Err(anyhow!("nothing to plot"));
    }
    let rows = kinds.len();
    let root = SVGBackend::new(path, (1100, 40 + 320 * rows as u32)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| anyhow!("plotting: {e}");
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (title, body) = root.split_vertically(40);
    title
        .titled(
            &format!(
                "herd-bench flood: {nodes} nodes, {seconds} s per step; client requests against the achieved flood rate"
            ),
            ("sans-serif", 20),
        )
        .map_err(|x| e(&x))?;
    let areas = body.split_evenly((rows, 2));
    let x_max = axis_top(points.iter().map(|p| p.pps).fold(0.0, f64::max));
    for (row, (kind, lines)) in kinds.iter().enumerate() {
        for col in 0..2 {
            let area = &areas[row * 2 + col];
            let value = |p: &(f64, u64, f64)| if col == 0 { p.1 as f64 } else { p.2 };
            let y_max = axis_top(
                lines
                    .iter()
                    .flat_map(|l| l.points.iter().map(value))
                    .fold(0.0, f64::max),
            );
            let caption = if col == 0 {
                format!("{kind}: failed requests")
            } else {
                format!("{kind}: client p99 (ms)")
            };
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..x_max, 0f64..y_max)
                .map_err(|x| e(&x))?;
            chart
                .configure_mesh()
                .x_desc("achieved flood rate (packets/s)")
                .y_desc(if col == 0 { "failed" } else { "p99 ms" })
                .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
                .draw()
                .map_err(|x| e(&x))?;
            for (i, line) in lines.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let pts: Vec<(f64, f64)> = line.points.iter().map(|p| (p.0, value(p))).collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(|x| e(&x))?
                    .label(line.setup.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(|x| e(&x))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(|x| e(&x))?;
        }
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(setup: &str, kind: &str, pps: f64, failed: u64, p99: f64) -> Point {
        Point {
            setup: setup.into(),
            kind: kind.into(),
            pps,
            failed,
            p99_ms: p99,
        }
    }

    #[test]
    fn lines_group_by_kind_and_setup_sorted_by_rate() {
        let pts = vec![
            p("af_packet", "syn", 80000.0, 3, 20.0),
            p("af_packet", "syn", 10000.0, 0, 1.0),
            p("nftables", "syn", 9990.0, 0, 0.5),
            p("af_packet", "udp", 10000.0, 0, 1.0),
        ];
        let l = lines(&pts);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].0, "syn");
        assert_eq!(l[0].1.len(), 2);
        assert_eq!(l[0].1[0].setup, "af_packet");
        assert_eq!(
            l[0].1[0].points,
            vec![(10000.0, 0, 1.0), (80000.0, 3, 20.0)]
        );
        assert_eq!(l[0].1[1].points, vec![(9990.0, 0, 0.5)]);
        assert_eq!(l[1].0, "udp");
        assert_eq!(axis_top(0.0), 1.0);
        assert!((axis_top(10.0) - 11.0).abs() < 1e-9);
    }

    #[test]
    fn draws_an_svg() {
        let dir = std::env::temp_dir().join(format!("herd-flood-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.svg");
        let pts = vec![
            p("af_packet", "syn", 10000.0, 0, 1.0),
            p("af_packet", "syn", 80000.0, 3, 20.0),
            p("nftables", "syn", 9990.0, 0, 0.5),
        ];
        draw(&file, &pts, 3, 5).unwrap();
        let svg = std::fs::read_to_string(&file).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("af_packet") && svg.contains("nftables"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
