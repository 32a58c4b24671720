//! The Prometheus text exposition format (0.0.4): family headers, samples, histograms,
//! label and help escaping.
//!
//! Owns the syntax alone; which families exist is for their owners (channel stats, the
//! event bus, logging, the PostgreSQL bridge). It must never emit a sample before its
//! family's header, nor an unescaped label value.

use std::fmt::Write as _;

/// The kind of a Prometheus metric family, as written on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A total that only rises.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative buckets with their sum and count.
    Histogram,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// Builds Prometheus text exposition (format 0.0.4).
///
/// Write each family's header once with [`family`](Self::family), then all of its samples.
/// The channel families come from [`write_channel_families`]; other families (the event
/// bus's counters) are appended to the same text the same way.
#[derive(Debug, Default)]
pub struct PrometheusText {
    out: String,
}

impl PrometheusText {
    /// An empty text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the `# HELP` and `# TYPE` lines of a family.
    pub fn family(&mut self, name: &str, kind: MetricKind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// Writes one sample with an integer value.
    pub fn sample_u64(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.sample_start(name, labels);
        let _ = writeln!(self.out, " {value}");
    }

    /// Writes one sample with a floating-point value.
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample_start(name, labels);
        self.out.push(' ');
        push_float(&mut self.out, value);
        self.out.push('\n');
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples of one histogram series.
    /// `cumulative[i]` counts observations `<= bounds_seconds[i]`; `+Inf` gets `count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds_seconds: &[f64],
        cumulative: &[u64],
        sum: f64,
        count: u64,
    ) {
        let bucket_name = format!("{name}_bucket");
        let mut le = String::new();
        for (&bound, &at_most) in bounds_seconds.iter().zip(cumulative) {
            le.clear();
            push_float(&mut le, bound);
            self.bucket_sample(&bucket_name, labels, &le, at_most);
        }
        self.bucket_sample(&bucket_name, labels, "+Inf", count);
        self.sample_f64(&format!("{name}_sum"), labels, sum);
        self.sample_u64(&format!("{name}_count"), labels, count);
    }

    /// The text written so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// The finished text.
    pub fn into_string(self) -> String {
        self.out
    }

    fn bucket_sample(&mut self, name: &str, labels: &[(&str, &str)], le: &str, value: u64) {
        self.out.push_str(name);
        self.out.push('{');
        for (key, val) in labels {
            push_label(&mut self.out, key, val);
            self.out.push(',');
        }
        push_label(&mut self.out, "le", le);
        let _ = writeln!(self.out, "}} {value}");
    }

    fn sample_start(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.out.push('{');
        for (i, (key, val)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_label(&mut self.out, key, val);
        }
        self.out.push('}');
    }
}

fn push_label(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn push_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{HashMap, HashSet};

    /// Checks the text line by line against the exposition format and returns the sample
    /// values by `name{labels}`.
    pub(crate) fn parse_exposition(text: &str) -> HashMap<String, f64> {
        let mut helped = HashSet::new();
        let mut typed = HashMap::new();
        let mut samples = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap().to_owned();
                let kind = parts.next().unwrap();
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "bad type in {line}"
                );
                assert!(helped.contains(&name), "TYPE before HELP for {name}");
                assert!(
                    typed.insert(name.clone(), kind.to_owned()).is_none(),
                    "TYPE twice for {name}"
                );
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let (series, value) = parse_sample_line(line);
            let family = series.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    family
                        .strip_suffix(suffix)
                        .filter(|b| typed.get(*b).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(family);
            assert!(typed.contains_key(base), "sample before TYPE: {line}");
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "duplicate series {series}"
            );
        }
        samples
    }

    fn parse_sample_line(line: &str) -> (&str, f64) {
        let (series, value) = line.rsplit_once(' ').expect("name{labels} value");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line}");
            let mut labels = &series[name_end + 1..series.len() - 1];
            while !labels.is_empty() {
                let (key, rest) = labels.split_once("=\"").expect("label=\"value\"");
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                let mut escaped = false;
                let mut end = None;
                for (i, c) in rest.char_indices() {
                    match (escaped, c) {
                        (true, '\\' | '"' | 'n') => escaped = false,
                        (true, other) => panic!("bad escape \\{other} in {line}"),
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        (false, '\n') => panic!("raw newline in {line}"),
                        _ => {}
                    }
                }
                let end = end.expect("closing quote");
                labels = &rest[end + 1..];
                labels = labels.strip_prefix(',').unwrap_or(labels);
            }
        }
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        (series, value)
    }
}
