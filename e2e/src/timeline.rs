//! A picture of one round as the spike saw it: answers per second by kind, coupons
//! issued (201s) and persisted (MySQL rows) over time, and the round's instants (the
//! first request at the opening, the first SOLD_OUT, every coupon persisted). Written as
//! a self-contained SVG, so a person sees the 10:00 spike and the drain at a glance.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What the picture is drawn from.
pub struct Timeline<'a> {
    pub title: String,
    pub start: Instant,
    /// When each answer arrived, and its `status` word.
    pub answers: &'a [(Instant, String)],
    /// MySQL's row count each time it changed.
    pub persisted: &'a [(Instant, u64)],
    /// Named instants drawn as vertical lines.
    pub marks: Vec<(&'static str, Instant)>,
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// Answers are counted per bin and drawn as a rate per second.
const BIN: Duration = Duration::from_millis(100);
const COLOURS: [(&str, &str); 6] = [
    ("ISSUED", "#2a9d8f"),
    ("SOLD_OUT", "#e76f51"),
    ("ALREADY_ISSUED", "#8d99ae"),
    ("NOT_STARTED", "#f4a261"),
    ("UNAVAILABLE", "#d62828"),
    ("PAUSED", "#6c757d"),
];

impl Timeline<'_> {
    pub fn svg(&self) -> String {
        let end = self
            .answers
            .iter()
            .map(|(at, _)| *at)
            .chain(self.persisted.iter().map(|(at, _)| *at))
            .chain(self.marks.iter().map(|(_, at)| *at))
            .max()
            .unwrap_or(self.start);
        let span = end.saturating_duration_since(self.start).max(Duration::from_millis(500)).mul_f64(1.05);
        let bins = (span.as_secs_f64() / BIN.as_secs_f64()).ceil() as usize + 1;
        let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (at, status) in self.answers {
            let bin = self.offset(*at) / BIN.as_secs_f64();
            let series = rates.entry(status.as_str()).or_insert_with(|| vec![0.0; bins]);
            if let Some(slot) = series.get_mut(bin as usize) {
                *slot += 1.0 / BIN.as_secs_f64();
            }
        }
        let peak_rate = rates.values().flatten().copied().fold(1.0, f64::max);
        let mut issued: Vec<(f64, f64)> = Vec::new();
        for (n, (at, _)) in self.answers.iter().filter(|(_, s)| s == "ISSUED").enumerate() {
            issued.push((self.offset(*at), (n + 1) as f64));
        }
        issued.sort_by(|a, b| a.0.total_cmp(&b.0));
        let issued: Vec<(f64, f64)> = issued.iter().enumerate().map(|(n, (t, _))| (*t, (n + 1) as f64)).collect();
        let persisted: Vec<(f64, f64)> = self.persisted.iter().map(|(at, n)| (self.offset(*at), *n as f64)).collect();
        let peak_count = issued.iter().chain(&persisted).map(|(_, n)| *n).fold(1.0, f64::max);

        let x = |seconds: f64| LEFT + seconds / span.as_secs_f64() * (WIDTH - LEFT - RIGHT);
        let y_rate = |rate: f64| HEIGHT - BOTTOM - rate / peak_rate * (HEIGHT - TOP - BOTTOM);
        let y_count = |count: f64| HEIGHT - BOTTOM - count / peak_count * (HEIGHT - TOP - BOTTOM);
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ =
            write!(svg, r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>"#, escape(&self.title));
        // Axes: time below, answers per second left, coupons right.
        let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP);
        let _ = write!(svg, r##"<path d="M{x0},{y1} V{y0} H{x1} V{y1}" fill="none" stroke="#333"/>"##);
        for step in 0..=5 {
            let fraction = f64::from(step) / 5.0;
            let seconds = span.as_secs_f64() * fraction;
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{seconds:.1} s</text>"#,
                x(seconds),
                y0 + 16.0
            );
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}/s</text>"#,
                x0 - 4.0,
                y_rate(peak_rate * fraction) + 4.0,
                peak_rate * fraction
            );
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}">{:.0}</text>"#,
                x1 + 4.0,
                y_count(peak_count * fraction) + 4.0,
                peak_count * fraction
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds after the opening</text>"#,
            (x0 + x1) / 2.0,
            HEIGHT - 22.0
        );
        // Answers per second, one line per kind.
        let mut legend = Vec::new();
        for (status, series) in &rates {
            let colour = COLOURS.iter().find(|(s, _)| s == status).map_or("#457b9d", |(_, c)| *c);
            let points: Vec<String> = series
                .iter()
                .enumerate()
                .map(|(bin, rate)| format!("{:.1},{:.1}", x(bin as f64 * BIN.as_secs_f64()), y_rate(*rate)))
                .collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                points.join(" ")
            );
            legend.push((format!("{status} per second"), colour, false));
        }
        // Issued and persisted, cumulative, as steps.
        for (name, series, colour) in
            [("issued (201s)", &issued, "#264653"), ("persisted (rows)", &persisted, "#9b5de5")]
        {
            if series.is_empty() {
                continue;
            }
            let mut path = format!("M{:.1},{:.1}", x(0.0), y_count(0.0));
            for (t, n) in series.iter() {
                let _ = write!(path, " H{:.1} V{:.1}", x(*t), y_count(*n));
            }
            let _ = write!(
                svg,
                r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="2.5" stroke-dasharray="6 3"/>"#
            );
            legend.push((name.to_owned(), colour, true));
        }
        for (name, at) in &self.marks {
            let at = x(self.offset(*at));
            let _ = write!(
                svg,
                r##"<line x1="{at:.1}" x2="{at:.1}" y1="{y1}" y2="{y0}" stroke="#555" stroke-dasharray="2 3"/>"##
            );
            let _ =
                write!(svg, r#"<text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#, at + 3.0, y1 + 12.0, escape(name));
        }
        for (n, (name, colour, dashed)) in legend.iter().enumerate() {
            let ly = TOP + 28.0 + 16.0 * n as f64;
            let lx = WIDTH - RIGHT - 190.0;
            let dash = if *dashed { r#" stroke-dasharray="6 3""# } else { "" };
            let _ = write!(
                svg,
                r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2.5"{dash}/>"#,
                lx + 24.0
            );
            let _ = write!(svg, r#"<text x="{}" y="{}">{}</text>"#, lx + 30.0, ly + 4.0, escape(name));
        }
        svg.push_str("</svg>\n");
        svg
    }

    fn offset(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_draws_its_answers_counts_and_instants() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let answers: Vec<(Instant, String)> =
            (0..50).map(|i| (at(i * 10), if i < 20 { "ISSUED" } else { "SOLD_OUT" }.to_owned())).collect();
        let persisted = [(at(100), 5), (at(300), 20)];
        let timeline = Timeline {
            title: "round <1>".into(),
            start,
            answers: &answers,
            persisted: &persisted,
            marks: vec![("sold out", at(200)), ("all persisted", at(300))],
        };
        let svg = timeline.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for part in [
            "ISSUED per second",
            "SOLD_OUT per second",
            "issued (201s)",
            "persisted (rows)",
            "sold out",
            "round &lt;1&gt;",
        ] {
            assert!(svg.contains(part), "{part} missing");
        }
        assert_eq!(svg.matches("<polyline").count(), 2, "one rate line per kind of answer");
    }
}
