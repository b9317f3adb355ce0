//! A logger that writes one line per record to standard error.
//!
//! Small on purpose: the server's logs are read by a person or collected by
//! a service manager, which adds its own timestamps.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // rustls logs under its own target; say whose line it is.
        let origin = if record.target().starts_with("secure_chat") {
            String::new()
        } else {
            format!("{}: ", record.target())
        };
        let line = format!("{:<5} {origin}{}\n", record.level(), record.args());
        // Nowhere to report a failure to write the log.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// The level asked for by `RUST_LOG` (a level name such as `debug`), if set.
pub fn level_from_env() -> Option<LevelFilter> {
    std::env::var("RUST_LOG").ok()?.trim().parse().ok()
}

/// Sends log records at `level` and above to standard error.
///
/// At `debug`, rustls' own account of each handshake appears too.
pub fn init(level: LevelFilter) {
    // Fails only if a logger is already set, which then stays in charge.
    let _ = log::set_logger(&Stderr);
    log::set_max_level(level);
}
