//! An SVG picture of benchmark rows: throughput against request size, the
//! ring path and the direct CPU call side by side, with a bound marked.
//! Written by hand (no plotting crate): a log2 x axis, a linear y axis.

use crate::bench::{human, Row};
use std::fmt::Write;

const W: f64 = 960.0;
const H: f64 = 520.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

/// One line of the picture.
struct Series {
    name: String,
    dashed: bool,
    colour: &'static str,
    points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Builds the SVG. For each mode: the best ring throughput over the depths
/// measured at each size (solid), and the direct CPU figure (dashed).
/// `bound` draws a horizontal line (for example the PCIe limit) with a label.
pub fn svg(rows: &[Row], title: &str, bound: Option<(f64, &str)>) -> String {
    let mut modes: Vec<&str> = Vec::new();
    for r in rows {
        if !modes.contains(&r.mode.as_str()) {
            modes.push(&r.mode);
        }
    }
    let mut series = Vec::new();
    for (i, m) in modes.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut sizes: Vec<u64> = rows
            .iter()
            .filter(|r| r.mode == *m)
            .map(|r| r.size)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        let best = |sz: u64| {
            rows.iter()
                .filter(|r| r.mode == *m && r.size == sz)
                .map(|r| r.ring_gbps)
                .fold(0.0, f64::max)
        };
        series.push(Series {
            name: format!("{m} (ring)"),
            dashed: false,
            colour,
            points: sizes.iter().map(|&s| (s as f64, best(s))).collect(),
        });
        let direct: Vec<(f64, f64)> = sizes
            .iter()
            .filter_map(|&s| {
                rows.iter()
                    .find(|r| r.mode == *m && r.size == s)
                    .and_then(|r| r.direct_gbps)
                    .map(|d| (s as f64, d))
            })
            .collect();
        if !direct.is_empty() {
            series.push(Series {
                name: format!("{m} (1 CPU thread)"),
                dashed: true,
                colour,
                points: direct,
            });
        }
    }
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let (xmin, xmax) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xs.is_empty() {
        (4096.0, 16.0 * 1048576.0)
    } else {
        // Whole powers of two at both ends, so the ticks fall on round sizes.
        (
            xmin.log2().floor().exp2(),
            xmax.log2().ceil().exp2().max(xmin * 2.0),
        )
    };
    let ymax_data = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(bound.map(|b| b.0))
        .fold(1.0, f64::max);
    let ystep = nice_step(ymax_data / 5.0);
    let ymax = (ymax_data / ystep).ceil() * ystep;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |v: f64| LEFT + (v.log2() - xmin.log2()) / (xmax.log2() - xmin.log2()) * pw;
    let y = |v: f64| TOP + ph - v / ymax * ph;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        esc(title)
    );
    // Grid and axes.
    let mut v = 0.0;
    while v <= ymax + 1e-9 {
        let yy = y(v);
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>"##,
            LEFT + pw
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            yy + 4.0,
            trim(v)
        );
        v += ystep;
    }
    let mut s = xmin;
    while s <= xmax * 1.0001 {
        let xx = x(s);
        let _ = writeln!(
            o,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/>"##,
            TOP + ph
        );
        let _ = writeln!(
            o,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            human(s as u64)
        );
        s *= 2.0;
    }
    let _ = writeln!(
        o,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">request size (bytes)</text>"#,
        LEFT + pw / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        o,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">GB/s</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    if let Some((b, label)) = bound {
        let yy = y(b);
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#555" stroke-dasharray="2,4" stroke-width="1.5"/>"##,
            LEFT + pw
        );
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" fill="#555">{}</text>"##,
            LEFT + 6.0,
            yy - 5.0,
            esc(label)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let _ = writeln!(
            o,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            pts.join(" "),
            s.colour
        );
        for &(a, b) in &s.points {
            let _ = writeln!(
                o,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                x(a),
                y(b),
                s.colour
            );
        }
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let lx = LEFT + pw + 12.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
            lx + 22.0,
            s.colour
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 28.0,
            ly + 4.0,
            esc(&s.name)
        );
    }
    o.push_str("</svg>\n");
    o
}

fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.max(1e-9).log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if raw <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn trim(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: &str, size: u64, ring: f64, direct: Option<f64>) -> Row {
        Row {
            mode: mode.into(),
            size,
            depth: 1,
            requests: 1,
            ring_gbps: ring,
            p50_us: 1.0,
            p99_us: 1.0,
            helper_cores: None,
            direct_gbps: direct,
            ratio: None,
            on_gpu: 0,
        }
    }

    #[test]
    fn draws_every_series_and_the_bound() {
        let rows = vec![
            row("aes128-xts", 4096, 0.3, Some(2.5)),
            row("aes128-xts", 1 << 20, 35.0, Some(3.0)),
            row("aes128-xts", 1 << 20, 30.0, Some(3.0)),
            row("raid6-gen16", 1 << 20, 44.0, None),
        ];
        let s = svg(&rows, "t <x>", Some((39.0, "PCIe bound")));
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(
            s.matches("<polyline").count(),
            3,
            "ring xts, cpu xts, ring raid6"
        );
        assert!(s.contains("PCIe bound") && s.contains("t &lt;x&gt;"));
        assert!(s.contains("aes128-xts (1 CPU thread)"));
        // The best depth is drawn: 35, not 30, at 1 MiB (y of 35 on a 0..50 axis).
        assert_eq!(nice_step(44.0 / 5.0), 10.0);
    }
}
