//! Prometheus text exposition format 0.0.4, written by hand: `# HELP`, `# TYPE`, one sample
//! per line, label values escaped (`\\`, `\"`, `\n`), histograms as cumulative `_bucket{le=…}`
//! plus `_sum` and `_count`. Pure: it formats what it is given and reads nothing itself.
//! (Tests check the output with an independent parser, `prometheus-parse`.)

use std::fmt::Write;
use std::time::Duration;

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the latency histograms: an outbox commit on a local disk takes a
/// fraction of a millisecond, loopback relays answer in milliseconds, remote ones in up to the
/// SMTP timeout.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A latency histogram with [`LATENCY_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; the last slot is above the largest bound).
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observations in seconds.
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|b| s <= *b).unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += s;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of observations in seconds.
    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// Builds an exposition; each metric family is written once with its help and type.
#[derive(Default)]
pub struct Exposition {
    /// The text so far.
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A counter family: `name` should end in `_total`.
    pub fn counter<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
    ) {
        self.header(name, "counter", help);
        for (labels, v) in samples {
            self.sample(name, &labels, v as f64);
        }
    }

    /// A gauge family.
    pub fn gauge<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
    ) {
        self.header(name, "gauge", help);
        for (labels, v) in samples {
            self.sample(name, &labels, v);
        }
    }

    /// A histogram family without labels.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, "histogram", help);
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(h.counts) {
            cumulative += n;
            self.sample(&format!("{name}_bucket"), &[("le", &number(*bound))], cumulative as f64);
        }
        self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], h.count() as f64);
        self.sample(&format!("{name}_sum"), &[], h.sum);
        self.sample(&format!("{name}_count"), &[], h.count() as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Go-style float formatting as Prometheus writes it: integers without a fraction.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_parses_with_an_independent_parser() {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(40));
        h.observe(Duration::from_secs(120));
        let mut e = Exposition::new();
        e.counter(
            "x_sent_total",
            "Sent.\nSecond line with \\ backslash",
            [(vec![("kind", "birth\"day\\\n")], 3), (vec![("kind", "every")], 0)],
        );
        e.gauge("x_depth", "Depth.", [(vec![], 1.5)]);
        e.histogram("x_latency_seconds", "Latency.", &h);
        let text = e.finish();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let sent: Vec<_> = scrape.samples.iter().filter(|s| s.metric == "x_sent_total").collect();
        assert_eq!(sent.len(), 2);
        // prometheus-parse hands label values back as written (escaped): the quote, backslash and
        // newline were escaped, so the sample still parsed as one line with two labels intact.
        assert_eq!(sent[0].labels.get("kind"), Some(r#"birth\"day\\\n"#));
        assert!(matches!(sent[0].value, prometheus_parse::Value::Counter(v) if v == 3.0));
        let hist = scrape.samples.iter().find(|s| s.metric == "x_latency_seconds").unwrap();
        let prometheus_parse::Value::Histogram(buckets) = &hist.value else { panic!("{:?}", hist.value) };
        let at = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
        assert_eq!(at(0.005), Some(1.0));
        assert_eq!(at(0.05), Some(2.0));
        assert_eq!(at(60.0), Some(2.0));
        assert_eq!(at(f64::INFINITY), Some(3.0));
        assert!(text.contains("x_latency_seconds_count 3\n"), "{text}");
    }

    #[test]
    fn numbers_are_formatted_like_prometheus() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
