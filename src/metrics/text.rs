//! The Prometheus text exposition format, version 0.0.4: a `# HELP` and a
//! `# TYPE` line per family, then its samples. Writing only; what a figure
//! means is its owner's business.

use std::fmt::Write;

/// The content type a scrape is answered with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A scrape's text, written one metric family at a time.
///
/// Each family is written whole by one call, so that its `# HELP` and
/// `# TYPE` come once and its samples together, as the format asks.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// An empty scrape.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// A counter: `name` ends in `_total`; it only grows while the process
    /// runs.
    pub fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, "counter", None, [("", value)]);
    }

    /// A gauge: a figure that goes up and down.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, "gauge", None, [("", value)]);
    }

    /// A counter family with one label, `label`, one sample per value of it.
    pub fn counters<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        self.family(name, help, "counter", Some(label), samples);
    }

    /// A gauge family with one label, `label`, one sample per value of it.
    pub fn gauges<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        self.family(name, help, "gauge", Some(label), samples);
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.text
    }

    fn family<'a>(
        &mut self,
        name: &str,
        help: &str,
        kind: &str,
        label: Option<&str>,
        samples: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        debug_assert!(valid_name(name), "{name}");
        debug_assert!(kind != "counter" || name.ends_with("_total"), "{name}");
        // Writing into a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (value_of_label, value) in samples {
            let _ = match label {
                Some(label) => writeln!(
                    self.text,
                    "{name}{{{label}=\"{}\"}} {}",
                    escape_label(value_of_label),
                    number(value)
                ),
                None => writeln!(self.text, "{name} {}", number(value)),
            };
        }
    }
}

/// A metric name as the format allows: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// In `# HELP`, a backslash and a line end are escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', r"\\").replace('\n', r"\n")
}

/// In a label's value, a double quote too.
fn escape_label(text: &str) -> String {
    escape_help(text).replace('"', "\\\"")
}

/// Whole numbers without a fraction, as Prometheus writes them.
fn number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_has_its_help_and_type_once_then_its_samples() {
        let mut out = Exposition::new();
        out.counter("x_lines_total", "Lines in.", 3.0);
        out.gauges("x_link_up", "1 if up.", "link", [("a", 1.0), ("b", 0.0)]);
        out.counter("x_seconds_total", "Time.", 0.25);
        assert_eq!(
            out.finish(),
            "# HELP x_lines_total Lines in.\n\
             # TYPE x_lines_total counter\n\
             x_lines_total 3\n\
             # HELP x_link_up 1 if up.\n\
             # TYPE x_link_up gauge\n\
             x_link_up{link=\"a\"} 1\n\
             x_link_up{link=\"b\"} 0\n\
             # HELP x_seconds_total Time.\n\
             # TYPE x_seconds_total counter\n\
             x_seconds_total 0.25\n"
        );
    }

    #[test]
    fn help_and_labels_are_escaped() {
        let mut out = Exposition::new();
        out.gauges("x", "a \\ b\nc", "why", [("say \"hi\"", 1.0)]);
        let text = out.finish();
        assert!(text.contains("# HELP x a \\\\ b\\nc\n"), "{text}");
        assert!(text.contains("x{why=\"say \\\"hi\\\"\"} 1\n"), "{text}");
    }

    #[test]
    fn names_are_checked_as_the_format_says() {
        assert!(valid_name("chat_server_lines_in_total"));
        assert!(valid_name("a:b"));
        assert!(!valid_name("1abc"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
