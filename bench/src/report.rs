//! Summaries (median, min–max, ratio to the baseline), the Markdown table
//! and the chart.

use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::Path};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Series {
    pub group: String,
    pub metric: String,
    pub unit: String,
    pub higher_is_better: bool,
    pub subject: String,
    /// The baseline of its group the ratio is taken to.
    pub baseline: bool,
    pub samples: Vec<f64>,
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len().is_multiple_of(2) { (s[m - 1] + s[m]) / 2.0 } else { s[m] }
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() as f64 * p).ceil() as usize).clamp(1, s.len()) - 1]
}

pub fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One table per (group, metric): subject, median, min–max, ratio.
pub fn markdown(series: &[Series], header: &str) -> String {
    let mut out = format!("{header}\n");
    let mut by: BTreeMap<(Natural, Natural), Vec<&Series>> = BTreeMap::new();
    for s in series {
        by.entry((Natural::of(&s.group), Natural::of(&s.metric))).or_default().push(s);
    }
    for ((Natural { text: group, .. }, Natural { text: metric, .. }), list) in by {
        let unit = &list[0].unit;
        let better = if list[0].higher_is_better { "higher is better" } else { "lower is better" };
        out += &format!(
            "\n**{group} — {metric}** ({unit}, {better})\n\n| | median | min–max | ratio to {} |\n|---|---:|---:|---:|\n",
            baseline_name(&list)
        );
        let base = list.iter().find(|s| s.baseline).map(|s| median(&s.samples));
        for s in list {
            let m = median(&s.samples);
            let (lo, hi) = (percentile(&s.samples, 0.0), percentile(&s.samples, 1.0));
            let ratio = base.map(|b| format!("{:.2}", m / b)).unwrap_or_else(|| "—".into());
            out += &format!("| {} | {} | {}–{} | {} |\n", s.subject, fmt(m), fmt(lo), fmt(hi), ratio);
        }
    }
    out
}

/// A name ordered with its numbers read as numbers ("10 services" before
/// "1,000 services"), otherwise as its text.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Natural {
    parts: Vec<Part>,
    text: String,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Text(String),
    Number(u64),
}

impl Natural {
    fn of(s: &str) -> Natural {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut num: Option<u64> = None;
        let cs: Vec<char> = s.chars().collect();
        for (i, &c) in cs.iter().enumerate() {
            // A comma between digits belongs to the number.
            let grouping = c == ',' && num.is_some() && cs.get(i + 1).is_some_and(char::is_ascii_digit);
            match (c.to_digit(10), &mut num) {
                (Some(d), Some(n)) => *n = n.saturating_mul(10).saturating_add(u64::from(d)),
                (Some(d), None) => {
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    num = Some(u64::from(d));
                }
                (None, _) if grouping => {}
                (None, _) => {
                    if let Some(n) = num.take() {
                        parts.push(Part::Number(n));
                    }
                    text.push(c);
                }
            }
        }
        parts.extend(num.map(Part::Number));
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Natural { parts, text: s.to_string() }
    }
}

fn baseline_name(list: &[&Series]) -> String {
    list.iter().find(|s| s.baseline).map(|s| s.subject.clone()).unwrap_or_else(|| "—".into())
}

/// Horizontal bars of the medians of a few (group, metric) pairs.
pub fn chart(series: &[Series], panels: &[(&str, &str)], path: &Path, font: &Path) -> Result<(), String> {
    let font_bytes = std::fs::read(font)
        .map_err(|e| format!("font {} (apt-get install fonts-dejavu-core): {e}", font.display()))?;
    let font_bytes: &'static [u8] = Box::leak(font_bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font_bytes)
        .map_err(|_| "font not usable")?;
    // Only the panels this run measured.
    let panels: Vec<&(&str, &str)> =
        panels.iter().filter(|(g, m)| series.iter().any(|s| s.group == *g && s.metric == *m)).collect();
    if panels.is_empty() {
        return Ok(());
    }
    let height = 260 * panels.len() as u32;
    let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((panels.len(), 1));
    for (&&(group, metric), area) in panels.iter().zip(areas) {
        let list: Vec<&Series> = series.iter().filter(|s| s.group == group && s.metric == metric).collect();
        let vals: Vec<(String, f64, bool)> = list
            .iter()
            .map(|s| (s.subject.clone(), median(&s.samples), s.subject.starts_with("weft")))
            .collect();
        let max = vals.iter().map(|v| v.1).fold(0.0, f64::max) * 1.15;
        let n = vals.len() as i32;
        let labels: Vec<String> = vals.iter().map(|v| v.0.clone()).collect();
        let mut c = ChartBuilder::on(&area)
            .caption(format!("{group}: {metric} ({})", list[0].unit), ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(260)
            .build_cartesian_2d(0f64..max.max(1e-9), (0i32..n).into_segmented())
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(n as usize)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        c.draw_series(vals.iter().enumerate().map(|(i, (_, v, weft))| {
            let color = if *weft { RGBColor(200, 70, 40) } else { RGBColor(90, 110, 160) };
            let i = i as i32;
            let mut r = Rectangle::new(
                [(0.0, SegmentValue::Exact(i)), (*v, SegmentValue::Exact(i + 1))],
                color.filled(),
            );
            r.set_margin(6, 6, 0, 0);
            r
        }))
        .map_err(|e| e.to_string())?;
        c.draw_series(vals.iter().enumerate().map(|(i, (_, v, _))| {
            Text::new(
                format!(" {}", fmt(*v)),
                (*v, SegmentValue::CenterOf(i as i32)),
                ("sans-serif", 13).into_font(),
            )
        }))
        .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_ratio() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        let s = |subject: &str, baseline, samples: Vec<f64>| Series {
            group: "g".into(),
            metric: "m".into(),
            unit: "u".into(),
            higher_is_better: true,
            subject: subject.into(),
            baseline,
            samples,
        };
        let md =
            markdown(&[s("limit", true, vec![10.0, 10.0]), s("weft", false, vec![5.0, 6.0, 7.0])], "# t");
        assert!(md.contains("| weft | 6.00 | 5.00–7.00 | 0.60 |"), "{md}");
        let mut names = vec!["s — 10,000 x", "s — 1,000 x", "s — 10 x", "a p99", "a p50", "s — 50,000 x"];
        names.sort_by_key(|n| Natural::of(n));
        assert_eq!(names, ["a p50", "a p99", "s — 10 x", "s — 1,000 x", "s — 10,000 x", "s — 50,000 x"]);
    }
}
