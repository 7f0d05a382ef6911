//! Logging to stderr, as text for people or JSON for log pipelines.
//!
//! Text from users (a job's message, a unique key, a table name in an error) is escaped in text
//! logs: a newline in it could otherwise forge a whole log line, and terminal control sequences
//! would reach the operator's terminal. JSON logs escape by construction.

use std::borrow::Cow;

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `filter` is an EnvFilter directive such as `info`.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // sqlx logs every slow statement at warn; keep its noise down unless asked for.
    let filter = filter.add_directive("sqlx=warn".parse().expect("valid directive"));
    // sqlx warns of connection-string parameters it does not know with their values, which can
    // be passwords (`sslpassword=...`): never shown.
    let filter = filter.add_directive(
        "sqlx_postgres::options=error"
            .parse()
            .expect("valid directive"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_target(false)
            .fmt_fields(EscapingFields)
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Colour codes only for a person at a terminal: not when stderr is a file or a pipe (log
/// collectors, CI), and never when `NO_COLOR` is set to anything non-empty (no-color.org).
fn use_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// `text` with every control character (and the bidirectional overrides that reorder what a
/// terminal shows) written as an escape (`\n`, `\u{1b}`), so it stays one line of what it says.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match unsafe_char(c) {
            true => out.extend(c.escape_default()),
            false => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The default field formatting with control characters escaped ([`escape_controls`]).
struct EscapingFields;

impl<'writer> FormatFields<'writer> for EscapingFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut formatted = String::new();
        DefaultFields::new().format_fields(Writer::new(&mut formatted), fields)?;
        writer.write_str(&escape_controls(&formatted))
    }
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain text"), "plain text");
        assert_eq!(
            escape_controls("a\nINFO forged\tline\u{1b}[31m"),
            "a\\nINFO forged\\tline\\u{1b}[31m"
        );
        assert_eq!(escape_controls("\u{202e}abc"), "\\u{202e}abc");
    }
}
