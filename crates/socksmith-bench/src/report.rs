//! The bench's results: the figures of every repeat, summarized into medians and spreads,
//! printed as a table for people or as JSON for scripts (`scripts/bench` merges these).
//!
//! Owns presentation only; the figures come from `phases`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::phases::Idle;
use crate::stats::Summary;

/// One measured figure over all repeats.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// Stable key for scripts, e.g. `throughput_1_up`.
    pub key: &'static str,
    /// What it is, for people.
    pub label: &'static str,
    /// Its unit.
    pub unit: &'static str,
    /// Whether more is better (throughput) or less (latency, errors).
    pub higher_is_better: bool,
    /// Median and spread of the repeats; `None` when the phase did not run or could not.
    pub summary: Option<Summary>,
    /// Why there is no figure, or what to know about it.
    pub note: Option<String>,
}

/// The whole result of one `socksmith bench` run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The name of what was measured (`--label`, else the proxy URL or "direct").
    pub label: String,
    /// The proxy URL without password, or "direct".
    pub proxy: String,
    /// Whether the load authenticated (RFC 1929).
    pub authenticated: bool,
    /// Repeats of every timed phase.
    pub repeat: u32,
    /// The knobs the run used.
    pub settings: serde_json::Value,
    /// The figures, in table order.
    pub metrics: Vec<Metric>,
    /// The idle phase, measured once (see the notes).
    pub idle: Option<Idle>,
    /// Warnings and explanations gathered during the run.
    pub notes: Vec<String>,
}

impl Report {
    /// The table printed on stdout.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "socksmith bench: {} ({}; {} repeat{}: median and spread min..max)",
            self.label,
            self.proxy,
            self.repeat,
            if self.repeat == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "{:<44} {:>12} {:>23}  unit",
            "metric", "median", "min..max"
        );
        for m in &self.metrics {
            match &m.summary {
                Some(s) => {
                    let spread = format!("{}..{}", number(s.min), number(s.max));
                    let _ = writeln!(
                        out,
                        "{:<44} {:>12} {:>23}  {}",
                        m.label,
                        number(s.median),
                        spread,
                        m.unit
                    );
                }
                None => {
                    let why = m.note.as_deref().unwrap_or("not run");
                    let _ = writeln!(out, "{:<44} {:>12}  ({why})", m.label, "n/a");
                }
            }
        }
        if let Some(idle) = &self.idle {
            let _ = writeln!(
                out,
                "idle: {}/{} tunnels open after {:.1} s ({} failed); {}/{} probed tunnels alive",
                idle.opened, idle.requested, idle.open_secs, idle.failed, idle.alive, idle.probed
            );
            if let (Some(b), Some(a)) = (idle.before, idle.after) {
                let _ = writeln!(
                    out,
                    "idle: proxy {} -> {} KiB resident, {} -> {} descriptors, {} -> {} processes",
                    b.rss_kib, a.rss_kib, b.fds, a.fds, b.processes, a.processes
                );
                let _ = writeln!(out, "idle method: {}", idle.method);
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

/// A figure with 3-4 significant digits, without exponent.
fn number(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 || x == x.trunc() && a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_a_few_significant_digits() {
        assert_eq!(number(123456.7), "123457");
        assert_eq!(number(12.345), "12.35");
        assert_eq!(number(0.5), "0.500");
        assert_eq!(number(150.0), "150");
        assert_eq!(number(150.25), "150.2");
    }

    #[test]
    fn table_shows_medians_spreads_and_missing_figures() {
        let report = Report {
            label: "direct".into(),
            proxy: "direct".into(),
            authenticated: false,
            repeat: 3,
            settings: serde_json::Value::Null,
            metrics: vec![
                Metric {
                    key: "throughput_1_up",
                    label: "throughput, 1 tunnel, upload",
                    unit: "Gbit/s",
                    higher_is_better: true,
                    summary: Summary::of(&[10.0, 12.0, 11.0]),
                    note: None,
                },
                Metric {
                    key: "udp",
                    label: "UDP echo",
                    unit: "datagrams/s",
                    higher_is_better: true,
                    summary: None,
                    note: Some("UDP ASSOCIATE refused".into()),
                },
            ],
            idle: None,
            notes: vec!["a note".into()],
        };
        let table = report.table();
        assert!(table.contains("3 repeats"), "{table}");
        assert!(table.contains("11.00"), "{table}");
        assert!(table.contains("10.00..12.00"), "{table}");
        assert!(table.contains("(UDP ASSOCIATE refused)"), "{table}");
        assert!(table.contains("note: a note"), "{table}");
    }
}
