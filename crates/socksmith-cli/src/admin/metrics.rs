//! The Prometheus metrics of `--admin`'s `/metrics`: the families issue 11 names, kept with
//! the `prometheus-client` crate and encoded as OpenMetrics text (or, for a scraper that does
//! not ask for OpenMetrics, the Prometheus text format 0.0.4 made from it).
//!
//! This module owns the families and how an event moves them; it does not hear the server
//! itself (see `admin::accounting`) nor serve HTTP (see `admin::http`). Every family is
//! registered when [`Metrics::new`] runs, so a scrape right after start shows them all, the
//! unlabelled ones and the known label values at zero.
//!
//! Counting is off the relay's hot path: a tunnel's guard reports its bytes every
//! `PROGRESS_STEP` (256 KiB) and when it ends (see `admin::accounting`), so
//! `socksmith_bytes_total` grows in coarse steps (an atomic add each), never per byte.

use std::sync::Arc;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use socksmith::server::accounting::Finished;
use socksmith::server::{Stats, StatsSnapshot, Traffic};
use socksmith::{Command, Version};

use super::stats::ServerStats;

/// The Content-Type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The Content-Type of [`Metrics::encode_prometheus_text`]'s text.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the connect and resolve histograms: 1 ms to 10 s, where a
/// loopback connect, a LAN, a far continent and a timeout each land in their own buckets.
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `reason` labels of `socksmith_denied_total` declared at zero from the start (those
/// [`socksmith::policy::DenyReason::label`] gives).
const DENY_REASONS: [&str; 7] = [
    "link_local",
    "metadata",
    "loopback",
    "denied_network",
    "unusable_target",
    "hostname_required",
    "other",
];

/// A family declared (`# HELP`, `# TYPE`) even before its first series exists:
/// `prometheus-client` leaves empty families out, and the issue wants every family visible
/// from the start, so that dashboards and alerts find them.
#[derive(Debug)]
struct Declared<M>(M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// `socksmith_sessions_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    /// `socks4` (4a included), `socks5`, or `unknown` when the first byte never came.
    version: &'static str,
    /// `connect`, `bind`, `udp_associate`, `resolve`, `resolve_ptr`, or `none` when no
    /// request was decoded.
    command: &'static str,
    /// [`Finished::outcome`].
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListLabels {
    list: LabelText,
}

/// A label value from outside (a list's path or URL), escaped as the text formats require
/// (`\\`, `\"`, `\n`): `prometheus-client` writes label values as they are, and one quote
/// in a path made the whole exposition unparsable.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct LabelText(String);

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The registry and its families. Cheap to update from any task: every family is atomics
/// (a labelled family takes a read lock to find its series).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    server: ServerStats,
    sessions: Family<SessionLabels, Counter>,
    /// `socksmith_bytes_total`'s two counters (registered as a family), held so that a report
    /// adds without a family lookup.
    bytes_up: Counter,
    bytes_down: Counter,
    auth_failures: Counter,
    denied: Family<ReasonLabels, Counter>,
    /// Every refusal, whatever its label (a reason added later may be missing from
    /// [`DENY_REASONS`]).
    denied_any: Counter,
    blocked: Family<ListLabels, Counter>,
    connect_duration: Histogram,
    resolve_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sessions = Family::<SessionLabels, Counter>::default();
        registry.register(
            "socksmith_sessions",
            "Sessions that ended, by protocol version, command and outcome (ok, denied, \
             auth_failed, handshake_failed, target_failed, error)",
            Declared(sessions.clone()),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        let bytes_up = bytes
            .get_or_create(&DirectionLabels { direction: "up" })
            .clone();
        let bytes_down = bytes
            .get_or_create(&DirectionLabels { direction: "down" })
            .clone();
        registry.register(
            "socksmith_bytes",
            "Payload bytes relayed (TCP and UDP), added every 256 KiB a tunnel moves and when \
             it ends: up is client to target, down is target to client",
            bytes.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "socksmith_auth_failures",
            "Username/password authentications that failed",
            auth_failures.clone(),
        );
        let denied = Family::<ReasonLabels, Counter>::default();
        for reason in DENY_REASONS {
            denied.get_or_create(&ReasonLabels { reason }).inc_by(0);
        }
        registry.register(
            "socksmith_denied",
            "Requests refused by the policy or a limit, by reason",
            denied.clone(),
        );
        let blocked = Family::<ListLabels, Counter>::default();
        registry.register(
            "socksmith_blocked",
            "Requests refused because a blocklist names the target, by list",
            Declared(blocked.clone()),
        );
        let connect_duration = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "socksmith_connect_duration_seconds",
            "Time to answer a CONNECT: name lookup and connection to the target (or the \
             upstream chain), failures included",
            connect_duration.clone(),
        );
        let resolve_duration = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "socksmith_resolve_duration_seconds",
            "Name lookups a session asked for (RESOLVE, RESOLVE_PTR, BIND peers, UDP \
             destinations), failures included",
            resolve_duration.clone(),
        );
        let server = ServerStats::default();
        registry.register_collector(Box::new(server.clone()));
        Metrics {
            registry,
            server,
            sessions,
            bytes_up,
            bytes_down,
            auth_failures,
            denied,
            denied_any: Counter::default(),
            blocked,
            connect_duration,
            resolve_duration,
        }
    }

    /// Reads the server's own counters from now on (zeros until then).
    pub fn attach(&self, stats: Arc<Stats>) {
        self.server.attach(stats);
    }

    /// The server's own counters now.
    pub fn server_stats(&self) -> StatsSnapshot {
        self.server.snapshot()
    }

    /// RFC 1929 credentials were wrong.
    pub fn auth_failed(&self) {
        self.auth_failures.inc();
    }

    /// A request was refused for `reason` (its [`DenyReason::label`]), by blocklist `list`
    /// when one refused it.
    ///
    /// [`DenyReason::label`]: socksmith::policy::DenyReason::label
    pub fn denied(&self, reason: &'static str, list: Option<&str>) {
        self.denied.get_or_create(&ReasonLabels { reason }).inc();
        self.denied_any.inc();
        if let Some(list) = list {
            self.blocked
                .get_or_create(&ListLabels {
                    list: LabelText(list.to_owned()),
                })
                .inc();
        }
    }

    /// A CONNECT was answered after `seconds`.
    pub fn connected(&self, seconds: f64) {
        self.connect_duration.observe(seconds);
    }

    /// A lookup finished after `seconds`.
    pub fn resolved(&self, seconds: f64) {
        self.resolve_duration.observe(seconds);
    }

    /// A session ended.
    pub fn finished(&self, finished: &Finished<'_>) {
        self.sessions
            .get_or_create(&SessionLabels {
                version: match finished.session {
                    Some(session) if session.http => "http",
                    _ => version_label(finished.version),
                },
                command: finished.command().map_or("none", command_label),
                outcome: finished.outcome(),
            })
            .inc();
    }

    /// Bytes a tunnel moved since it last reported.
    pub fn add_traffic(&self, traffic: Traffic) {
        if traffic.up > 0 {
            self.bytes_up.inc_by(traffic.up);
        }
        if traffic.down > 0 {
            self.bytes_down.inc_by(traffic.down);
        }
    }

    /// The bytes relayed so far, up and down.
    pub fn bytes_total(&self) -> Traffic {
        Traffic {
            up: self.bytes_up.get(),
            down: self.bytes_down.get(),
        }
    }

    /// Requests refused so far (every reason).
    pub fn denied_total(&self) -> u64 {
        self.denied_any.get()
    }

    /// Authentication failures so far.
    pub fn auth_failures_total(&self) -> u64 {
        self.auth_failures.get()
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// The families in the Prometheus text format 0.0.4, for a scraper that does not ask for
    /// OpenMetrics (see [`to_prometheus_text`]).
    pub fn encode_prometheus_text(&self) -> String {
        to_prometheus_text(&self.encode())
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics text, as `prometheus-client` writes
/// it: the two differ where a counter is named (OpenMetrics declares the family
/// `x` with samples `x_total`; 0.0.4 declares `x_total`), in `unknown` (0.0.4: `untyped`),
/// and in the `# UNIT` and `# EOF` lines, which 0.0.4 does not have. Samples, labels and
/// escaping are the same.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let declared = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match declared {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(if prefix == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                });
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `socks4`, `socks5` or `unknown` (an HTTP proxy session is labelled `http` by the caller,
/// which sees its [`socksmith::server::Session::http`]).
pub fn version_label(version: Option<Version>) -> &'static str {
    match version {
        Some(Version::V4) => "socks4",
        Some(Version::V5) => "socks5",
        None => "unknown",
    }
}

/// The command as a label word.
pub fn command_label(command: Command) -> &'static str {
    match command {
        Command::Connect => "connect",
        Command::Bind => "bind",
        Command::UdpAssociate => "udp_associate",
        Command::Resolve => "resolve",
        Command::ResolvePtr => "resolve_ptr",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_declared_before_anything_happens() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        for (family, kind) in [
            ("socksmith_sessions_active", "gauge"),
            ("socksmith_sessions", "counter"),
            ("socksmith_bytes", "counter"),
            ("socksmith_auth_failures", "counter"),
            ("socksmith_denied", "counter"),
            ("socksmith_blocked", "counter"),
            ("socksmith_connect_duration_seconds", "histogram"),
            ("socksmith_resolve_duration_seconds", "histogram"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family} missing:\n{text}"
            );
        }
        assert!(
            text.contains("socksmith_bytes_total{direction=\"up\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("socksmith_denied_total{reason=\"denied_network\"} 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        // The library's own counters, read from the server once it is attached.
        metrics.attach(Arc::new(Stats::default()));
        let text = metrics.encode();
        assert!(text.contains("socksmith_sessions_active 0\n"), "{text}");
        assert!(
            text.contains("socksmith_handshake_failures_total{reason=\"timeout\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("socksmith_udp_dropped_total{reason=\"foreign\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("socksmith_udp_dropped_total{reason=\"receive_buffer\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn a_list_name_with_quotes_backslashes_or_a_line_break_is_escaped_in_its_label() {
        let metrics = Metrics::new();
        metrics.denied("other", Some("/tmp/bl\"q\\x\ny.txt"));
        let text = metrics.encode();
        assert!(
            text.contains("socksmith_blocked_total{list=\"/tmp/bl\\\"q\\\\x\\ny.txt\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn the_prometheus_text_format_names_counters_by_their_samples_and_has_no_eof() {
        let metrics = Metrics::new();
        metrics.attach(Arc::new(Stats::default()));
        let text = metrics.encode_prometheus_text();
        assert!(
            text.contains("# TYPE socksmith_sessions_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP socksmith_sessions_total "), "{text}");
        assert!(
            text.contains("# TYPE socksmith_sessions_active gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE socksmith_connect_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("socksmith_bytes_total{direction=\"up\"} 0\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT "),
            "{text}"
        );
    }

    #[test]
    fn refusals_by_a_blocklist_count_twice_by_reason_and_by_list() {
        let metrics = Metrics::new();
        metrics.denied("other", Some("ads"));
        metrics.denied("denied_network", None);
        let text = metrics.encode();
        assert!(
            text.contains("socksmith_blocked_total{list=\"ads\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("socksmith_denied_total{reason=\"other\"} 1\n"),
            "{text}"
        );
        assert_eq!(metrics.denied_total(), 2);
    }
}
