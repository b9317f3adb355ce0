//! `chat-bench`: a load generator for a chat server on loopback, and a
//! driver that runs a suite of measurements against several servers.
//!
//! Every client is a real TLS client built on the library's TLS code, so
//! the bench pays the costs a `chat-client` would. Clients that only read
//! share a few polling threads, so the bench can hold tens of thousands
//! while the server under test holds a thread per client.
//!
//! Nothing here may run forever: every wait is bounded by the `--timeout`
//! deadline, and a watchdog cuts every connection when it passes, then
//! exits the process if the main thread still has not finished.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod check;
mod connect;
mod modes;
mod options;
mod peer;
mod pin;
mod poller;
mod probe;
mod progress;
mod report;
mod suite;

use std::process::ExitCode;

use crate::connect::Bench;
use crate::options::Parsed;

/// Parses the command line, runs, and turns the outcome into an exit
/// status: 0 all checks passed, 1 a check failed or the run could not
/// start, 2 a usage error.
fn main() -> ExitCode {
    let parsed = match options::parse_args() {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("chat-bench: {err}\nTry 'chat-bench --help'.");
            return ExitCode::from(2);
        }
    };
    let outcome = match parsed {
        Parsed::Help(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Parsed::Run(options) => measure(*options),
        Parsed::Suite(options) => suite::run(&options),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("chat-bench: {err}");
            ExitCode::from(1)
        }
    }
}

/// Runs one measurement; true if every check passed.
fn measure(options: options::Options) -> Result<bool, String> {
    probe::ensure_fd_limit(options.connections() as u64)?;
    if options.pin {
        // Before the bench starts a thread, so that all of them inherit it.
        let split = pin::Split::of_allowed()?;
        pin::pin_process(std::process::id(), &split.bench)?;
        for &pid in &options.server_pid {
            pin::pin_process(pid, &split.server)?;
        }
        println!("pinned: {}", split.describe());
    }
    let bench = Bench::new(options)?;
    Ok(modes::run(&bench))
}
