//! Small line charts as inline SVG, drawn on the server: no script, no library, and the content
//! security policy stays strict (colours come from the stylesheet, by class).

use maud::{html, Markup};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One line: its legend name, its stylesheet class (`series-0`...) and its points (x, y).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Draws `series` over `x_range` (e.g. unix seconds), labelling x with `x_label` and y with
/// `y_label`; `empty` is said instead when there is no point.
pub fn line_chart(
    id: &str,
    series: &[Series],
    x_range: (f64, f64),
    x_label: impl Fn(f64) -> String,
    y_label: impl Fn(f64) -> String,
    empty: &str,
) -> Markup {
    let points = series.iter().map(|s| s.points.len()).sum::<usize>();
    if points == 0 {
        return html! { p.chart-empty #(id) { (empty) } };
    }
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_max = nice_ceiling(y_max);
    let (x0, x1) = (x_range.0, x_range.1.max(x_range.0 + 1.0));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |v: f64| LEFT + (v - x0) / (x1 - x0) * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let ticks = [0.0, 0.5, 1.0];
    html! {
        figure.chart #(id) data-points=(points) {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(id) {
                @for t in ticks {
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(t * y_max)) y2=(y(t * y_max)) {}
                    text.axis x=(LEFT - 6.0) y=(y(t * y_max) + 4.0) text-anchor="end" { (y_label(t * y_max)) }
                    text.axis x=(x(x0 + t * (x1 - x0))) y=(HEIGHT - 8.0)
                        text-anchor=(anchor(t)) {
                        (x_label(x0 + t * (x1 - x0)))
                    }
                }
                @for (i, s) in series.iter().enumerate() {
                    @if s.points.len() == 1 {
                        circle class={ "series-" (i % 6) } cx=(x(s.points[0].0)) cy=(y(s.points[0].1)) r="3" {}
                    } @else {
                        polyline class={ "series-" (i % 6) } points=(polyline(&s.points, &x, &y)) {}
                    }
                }
            }
            figcaption {
                @for (i, s) in series.iter().enumerate() {
                    span class={ "legend series-" (i % 6) } { (s.name) }
                }
            }
        }
    }
}

/// The smallest of 2, 5 and 10 times a power of ten at or above `v` (at least 2), so the axis
/// labels at 0, half and the top are round numbers.
fn nice_ceiling(v: f64) -> f64 {
    let mut scale = 1.0;
    loop {
        for step in [2.0, 5.0, 10.0] {
            if step * scale >= v {
                return step * scale;
            }
        }
        scale *= 10.0;
    }
}

/// Labels for times on an x axis in unix seconds: the clock to the second over a short span,
/// the date and minute over a long one.
pub fn time_labels(range: (f64, f64)) -> impl Fn(f64) -> String + Copy {
    let format = if range.1 - range.0 < 600.0 {
        "%H:%M:%S"
    } else if range.1 - range.0 < 86_400.0 {
        "%H:%M"
    } else {
        "%m-%d %H:%M"
    };
    move |t: f64| {
        chrono::DateTime::from_timestamp_millis((t * 1000.0) as i64)
            .map(|t| t.format(format).to_string())
            .unwrap_or_default()
    }
}

/// Unix seconds with milliseconds, for an x axis of times.
pub fn seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Where an x label hangs from its tick: the ends inward, the middle centred.
fn anchor(t: f64) -> &'static str {
    if t <= 0.0 {
        "start"
    } else if t >= 1.0 {
        "end"
    } else {
        "middle"
    }
}

fn polyline(points: &[(f64, f64)], x: &dyn Fn(f64) -> f64, y: &dyn Fn(f64) -> f64) -> String {
    points
        .iter()
        .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_land_inside_the_plot() {
        let series = [Series {
            name: "available".into(),
            points: vec![(0.0, 0.0), (50.0, 10.0), (100.0, 5.0)],
        }];
        let svg = line_chart(
            "c",
            &series,
            (0.0, 100.0),
            |v| format!("{v}"),
            |v| format!("{v}"),
            "none",
        )
        .into_string();
        // x: 64 .. 708, y: 172 (zero) .. 12 (the top, 10).
        assert!(svg.contains("64.0,172.0 386.0,12.0 708.0,92.0"), "{svg}");
        assert_eq!(
            [0.3, 1.0, 2.0, 3.0, 9.0, 11.0, 54_654.0].map(nice_ceiling),
            [2.0, 2.0, 2.0, 5.0, 10.0, 20.0, 100_000.0]
        );
        let label = time_labels((0.0, 60.0));
        assert_eq!(label(3661.5), "01:01:01");
        assert_eq!(time_labels((0.0, 7200.0))(3661.0), "01:01");
        assert!(svg.contains("data-points=\"3\""), "{svg}");
        let empty = line_chart(
            "c",
            &[],
            (0.0, 1.0),
            |v| format!("{v}"),
            |v| format!("{v}"),
            "nothing yet",
        );
        assert!(empty.into_string().contains("nothing yet"));
    }
}
