//! Logging set-up: `tracing` to stderr, as text or JSON, level from `RUST_LOG` or `-v`, and
//! the `serve --quiet` switch, which can change while the server runs (a reload may turn it
//! on or off).
//!
//! Text lines are `key=value` fields after the message, as `tracing` writes them, with one
//! change: a value that holds an `=` or a `"` is quoted (`"` and `\` inside it escaped).
//! Clients choose some of those values (a SOCKS4 user id, a target's name, an error that names
//! it), and unquoted they could add fields of their own to a line (`user=x client=10.0.0.1:1`,
//! or a `"` that a logfmt reader takes for the start of a value running into the next field).
//! Values with only spaces stay as they are, readable, since they cannot spell a field.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use tracing::field::Field;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::format::{self, Writer};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::cli::LogFormat;

/// The targets of the library's per-session log lines ("session finished", "handshake
/// failed", a connection refused for its PROXY protocol header): `--quiet` keeps only their
/// warnings and errors.
pub const SESSION_TARGETS: [&str; 2] = [
    "socksmith::server::log",
    "socksmith::server::proxy_protocol",
];

/// What [`set_quiet`] needs to rebuild the filter.
struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` when it is set and valid, else the level `-v` asked for.
    directives: String,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` wins over `-v` when set.
pub fn init(verbose: u8, format: LogFormat) {
    let default_level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let directives = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|d| !d.trim().is_empty() && EnvFilter::try_new(d).is_ok())
        .unwrap_or_else(|| default_level.to_owned());
    let (filter, handle) = reload::Layer::new(filter(&directives, false));
    // Colour codes only for a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(output.fmt_fields(format::debug_fn(logfmt_field).delimited(" ")))
            .init(),
        LogFormat::Json => registry.with(output.json().flatten_event(true)).init(),
    }
    let _ = CONTROL.set(Control { handle, directives });
}

/// Writes one field of a text line: the message as it is, any other field as `key=value`,
/// quoted where [`needs_quotes`] says so.
fn logfmt_field(writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    if field.name() == "message" {
        return write!(writer, "{value:?}");
    }
    let name = field.name().trim_start_matches("r#");
    thread_local! {
        // One buffer per thread, reused: a session's line has a dozen fields.
        static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
    }
    TEXT.with(|text| {
        let mut fresh = String::new();
        let mut reused = text.try_borrow_mut();
        let text = match reused.as_deref_mut() {
            Ok(text) => text,
            Err(_) => &mut fresh, // a value whose formatting logs: never, but stay correct
        };
        text.clear();
        write!(text, "{value:?}")?;
        if !needs_quotes(text) {
            return write!(writer, "{name}={text}");
        }
        write!(writer, "{name}=\"")?;
        for c in text.chars() {
            match c {
                '"' | '\\' => write!(writer, "\\{c}")?,
                c if c.is_control() => write!(writer, "{}", c.escape_default())?,
                c => writer.write_char(c)?,
            }
        }
        writer.write_char('"')
    })
}

/// Whether a text value must be quoted to stay one value: it could spell a field of its own
/// (an `=`), open a quoted string that runs into the next value (a `"`), or break the line (a
/// control character; the server escapes those in the names it logs, but a value from
/// elsewhere might hold one).
fn needs_quotes(value: &str) -> bool {
    value
        .chars()
        .any(|c| c == '=' || c == '"' || c.is_control())
}

/// Drops (or brings back) the per-session log lines; warnings and errors always stay.
pub fn set_quiet(quiet: bool) {
    if let Some(control) = CONTROL.get() {
        if let Err(e) = control.handle.reload(filter(&control.directives, quiet)) {
            tracing::warn!(error = %e, "could not change the log filter");
        }
    }
}

fn filter(directives: &str, quiet: bool) -> EnvFilter {
    let filter = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    if !quiet {
        return filter;
    }
    SESSION_TARGETS.iter().fold(filter, |filter, target| {
        let directive = format!("{target}=warn")
            .parse()
            .expect("a target and a level form a valid directive");
        filter.add_directive(directive)
    })
}
