//! The one machine-readable line every run ends with:
//! `RESULT mode=fanout peer=secure-chat clients=100 ... status=ok`.
//!
//! Values are numbers, `yes`/`no`, names, or `na` where nothing was
//! measured; `status` is `ok` or the problems seen, comma-separated. The
//! suite reads these lines back with [`parse`].

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The final `RESULT` line, built as the run goes.
pub struct ResultLine {
    /// `key=value` pairs, in order.
    fields: Vec<(String, String)>,
    /// Short names of what went wrong; empty means `status=ok`.
    problems: Vec<&'static str>,
    /// The watchdog's flag, to report a timeout.
    expired: Arc<AtomicBool>,
}

impl ResultLine {
    /// Starts the line with the mode, the peer and the client count.
    pub fn new(mode: &str, peer: &str, clients: usize, expired: Arc<AtomicBool>) -> ResultLine {
        let mut line = ResultLine {
            fields: Vec::new(),
            problems: Vec::new(),
            expired,
        };
        line.add("mode", mode)
            .add("peer", peer)
            .add("clients", clients);
        line
    }

    /// Appends `key=value`, or replaces the value of a key already there.
    /// Values never hold spaces (they would split the line).
    pub fn add(&mut self, key: &str, value: impl Display) -> &mut ResultLine {
        let value = value.to_string().replace(char::is_whitespace, "_");
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = value,
            None => self.fields.push((key.to_string(), value)),
        }
        self
    }

    /// Records a failed check.
    pub fn problem(&mut self, what: &'static str) {
        if !self.problems.contains(&what) {
            self.problems.push(what);
        }
    }

    /// True while no check has failed.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Prints the line; true if every check passed.
    pub fn finish(mut self) -> bool {
        if self.expired.load(Ordering::SeqCst) {
            self.problems.insert(0, "timeout");
        }
        let status = if self.problems.is_empty() {
            "ok".to_string()
        } else {
            self.problems.join(",")
        };
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        println!("RESULT {} status={status}", fields.join(" "));
        self.problems.is_empty()
    }
}

/// The keys and values of a `RESULT` line; `None` if `line` is not one.
pub fn parse(line: &str) -> Option<BTreeMap<String, String>> {
    let rest = line.strip_prefix("RESULT ")?;
    Some(
        rest.split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back() {
        let fields = parse("RESULT mode=idle clients=5 kib_per_conn=12.5 status=ok").unwrap();
        assert_eq!(fields["mode"], "idle");
        assert_eq!(fields["kib_per_conn"], "12.5");
        assert_eq!(fields["status"], "ok");
        assert!(parse("idle: 5 connections").is_none());
    }

    #[test]
    fn values_are_replaced_and_kept_whole() {
        let mut line = ResultLine::new("fanout", "go", 3, Arc::new(AtomicBool::new(false)));
        line.add("x", 1).add("x", "two words");
        assert_eq!(line.fields[3], ("x".to_string(), "two_words".to_string()));
        line.problem("lost");
        line.problem("lost");
        assert_eq!(line.problems, vec!["lost"]);
        assert!(!line.is_clean());
    }
}
