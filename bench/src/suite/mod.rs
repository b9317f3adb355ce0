//! `chat-bench suite`: every measurement against every server asked for,
//! each run as a child process of this program against a server started
//! fresh for it, then one table.
//!
//! Runs of several servers are interleaved (round 1 of each, then round 2)
//! so that a machine that grows busier mid-suite does not favour one.

mod servers;
mod specs;
mod table;

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::options::{Mode, Parsed, MAX_CLIENTS};
use crate::peer::Peer;
use crate::pin::{self, Split};
use crate::probe;
use crate::report;

use servers::{log_tail, Programs, ServerProcess, SuitePeer};
use specs::{measurements, Measurement};
use table::{Column, Outcome, Section};

/// The `chat-bench suite --help` text.
pub const HELP: &str = "\
chat-bench suite: run every measurement against one or more servers

Usage: chat-bench suite [OPTIONS]

Each measurement gets a fresh server on a free loopback port, started
here and stopped by PID afterwards (SIGTERM, then SIGKILL). The
measurements: fanout (100 clients, 10 senders; 500 clients, 5 senders),
latency (100 receivers at 200 lines/s), idle (1000 and 5000 clients),
handshake (full and resumed), slow (1 and 50 stalled clients).

Options:
  --peers LIST       servers to compare, comma-separated: secure-chat,
                     go-naive, go-hub, ncat, card-chat [default: secure-chat]
  --rounds N         runs of each measurement on each server [default: 1]
  --only MODES       only the measurements of these modes, comma-separated:
                     fanout, latency, idle, handshake, slow [default: all]
  --server PATH      chat-server [default: chat-server next to this program]
  --server-arg ARG   one more flag for chat-server (repeat for several),
                     e.g. --server-arg=--max-clients=20000
  --go-peer PATH     the Go peer [default: target/go-peer/chat-peer]
  --certs DIR        holds ca.crt, server.crt and server.key [default: certs]
  --no-pin           let the servers and the bench share every core (by
                     default each server runs pinned to the first half of
                     the physical cores this program may use, the bench to
                     the rest; on two cores, CPU 0 and CPU 1)
  --quick            tiny sizes, a few seconds in all (a smoke test)
  --out FILE         also write the tables, and every RESULT line, as Markdown
  -h, --help         print this help

chat-server runs as `chat-server --addr A --cert C --key K -q --rate 0`
and --no-data-dir (unless --server-arg gives a --data-dir);
the Go peer as `chat-peer -addr A -cert C -key K -design naive|hub -q`;
ncat as `ncat --ssl --ssl-cert C --ssl-key K --chat --listen 127.0.0.1 PORT
--max-conns 1100`; card-chat (examples/card-chat.rs, next to this program
in examples/) as `card-chat A` in the directory that holds DIR, which
must be named certs. A server that is not installed is skipped, saying so;
so is a measurement a server cannot take (ncat: more than about 1000
clients). The suite raises its limit on open files to the hard limit,
for itself and every process it starts.

Pinned, each server starts with its mask already set, so it sizes itself
for its share as under taskset (chat-server's writers and Go's GOMAXPROCS
follow the cores a process may use). With a single core the suite says
so and runs unpinned. The output gives each round's figures, the median,
and each ratio's spread over the rounds.
";

/// Extra time a measurement gets, past its own `--timeout`, before the
/// suite kills it: the bench's own watchdog should have ended it first.
const KILL_GRACE: Duration = Duration::from_secs(20);

/// What `chat-bench suite` was asked for.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Servers to compare, in table order.
    peers: Vec<SuitePeer>,
    /// Rounds per measurement and server.
    rounds: usize,
    /// The modes to run; empty for all.
    only: Vec<Mode>,
    /// chat-server, if given.
    server: Option<PathBuf>,
    /// Extra flags for chat-server.
    server_args: Vec<String>,
    /// The Go peer.
    go_peer: PathBuf,
    /// The certificate directory.
    certs: PathBuf,
    /// Pin the servers and the bench to separate cores.
    pin: bool,
    /// Tiny sizes.
    quick: bool,
    /// Where to write the Markdown, if anywhere.
    out: Option<PathBuf>,
}

/// Reads the suite's options (after the word `suite`).
pub fn parse_args(mut parser: lexopt::Parser) -> Result<Parsed, lexopt::Error> {
    use lexopt::prelude::*;
    let mut options = SuiteOptions {
        peers: vec![SuitePeer::SecureChat],
        rounds: 1,
        only: Vec::new(),
        server: None,
        server_args: Vec::new(),
        go_peer: PathBuf::from("target/go-peer/chat-peer"),
        certs: PathBuf::from("certs"),
        pin: true,
        quick: false,
        out: None,
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Long("peers") => {
                let list: String = parser.value()?.parse()?;
                let mut peers = Vec::new();
                for name in list.split(',').filter(|name| !name.is_empty()) {
                    let peer: SuitePeer = name.parse()?;
                    if !peers.contains(&peer) {
                        peers.push(peer);
                    }
                }
                if peers.is_empty() {
                    return Err("--peers needs at least one server".into());
                }
                options.peers = peers;
            }
            Long("rounds") => {
                options.rounds = parser.value()?.parse()?;
                if !(1..=100).contains(&options.rounds) {
                    return Err("--rounds must be 1 to 100".into());
                }
            }
            Long("only") => {
                let list: String = parser.value()?.parse()?;
                options.only = list
                    .split(',')
                    .filter(|name| !name.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            Long("server") => options.server = Some(parser.value()?.into()),
            Long("server-arg") => options.server_args.push(parser.value()?.parse()?),
            Long("go-peer") => options.go_peer = parser.value()?.into(),
            Long("certs") => options.certs = parser.value()?.into(),
            Long("no-pin") => options.pin = false,
            Long("quick") => options.quick = true,
            Long("out") => options.out = Some(parser.value()?.into()),
            Short('h') | Long("help") => return Ok(Parsed::Help(HELP)),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Parsed::Suite(options))
}

/// Runs the suite; true if the server under test passed every check (see
/// [`verdict`]): a peer's failures are results, written in the notes.
pub fn run(options: &SuiteOptions) -> Result<bool, String> {
    let exe = env::current_exe().map_err(|err| format!("cannot find this program: {err}"))?;
    let certs = &options.certs;
    for file in ["ca.crt", "server.crt", "server.key"] {
        if !certs.join(file).is_file() {
            return Err(format!(
                "{} has no {file}: run `make certs` (or pass --certs DIR)",
                certs.display()
            ));
        }
    }
    let programs = Programs {
        server: options
            .server
            .clone()
            .unwrap_or_else(|| exe.with_file_name("chat-server")),
        server_args: options.server_args.clone(),
        go_peer: options.go_peer.clone(),
        card_chat: exe.with_file_name("examples").join("card-chat"),
        certs: certs.clone(),
    };
    let mut measurements = measurements(options.quick);
    measurements.retain(|m| options.only.is_empty() || options.only.contains(&m.mode()));
    // The bench and the server each hold a descriptor per client; both
    // inherit this process's raised limit.
    let biggest = measurements
        .iter()
        .map(|m| m.connections)
        .max()
        .unwrap_or(0);
    let fd_limit = probe::ensure_fd_limit(0)?;
    let logs = env::temp_dir().join(format!("chat-bench-suite-{}", std::process::id()));
    fs::create_dir_all(&logs).map_err(|err| format!("{}: {err}", logs.display()))?;

    // Counted before pinning narrows what this process sees.
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let split = if options.pin {
        match Split::of_allowed() {
            Ok(split) => {
                // Before any thread starts: the measurements inherit it, and
                // servers get theirs from the thread that starts them.
                pin::pin_process(std::process::id(), &split.bench)?;
                println!("suite: pinned: {}", split.describe());
                Some(split)
            }
            Err(why) => {
                println!("suite: not pinned: {why}");
                None
            }
        }
    } else {
        None
    };
    let mut missing: Vec<(SuitePeer, String)> = Vec::new();
    for &peer in &options.peers {
        if let Err(why) = programs.program(peer) {
            println!("suite: skipping {peer}: {why}");
            missing.push((peer, why));
        }
    }
    if (biggest as u64) + 64 > fd_limit {
        println!(
            "suite: the limit on open files is {fd_limit}; measurements with more clients \
             than that are skipped (raise `ulimit -Hn` as root)"
        );
    }
    let mut columns: Vec<Vec<Column>> =
        vec![vec![Column::default(); options.peers.len()]; measurements.len()];
    let mut raw: Vec<String> = Vec::new();
    let mut failures: Vec<(SuitePeer, String)> = Vec::new();
    let runs = measurements.len() * options.rounds * options.peers.len();
    let mut run_number = 0;
    let started = Instant::now();
    for (m, measurement) in measurements.iter().enumerate() {
        for round in 1..=options.rounds {
            for (p, &peer) in options.peers.iter().enumerate() {
                run_number += 1;
                let column = &mut columns[m][p];
                let skip = missing
                    .iter()
                    .find(|(missing, _)| *missing == peer)
                    .map(|(_, why)| why.clone())
                    .or_else(|| cannot_take(peer.protocol(), measurement, fd_limit));
                if let Some(why) = skip {
                    if round == 1 && column.skipped.is_none() {
                        if !missing.iter().any(|(missing, _)| *missing == peer) {
                            println!("suite: {}: skipping {peer}: {why}", measurement.title);
                        }
                        column.skipped = Some(why);
                    }
                    continue;
                }
                eprintln!(
                    "suite: [{run_number}/{runs}] {}, {peer}, round {round} ({:.0} s in)",
                    measurement.title,
                    started.elapsed().as_secs_f64()
                );
                let log = logs.join(format!("{}-{m}-{round}.log", peer.name()));
                let outcome = measure(&exe, &programs, split.as_ref(), peer, measurement, log);
                match &outcome.result_line {
                    Some(line) => {
                        println!("{line}");
                        raw.push(format!("{peer}, round {round}: {line}"));
                    }
                    None => raw.push(format!(
                        "{peer}, round {round}: {}: no RESULT line",
                        measurement.title
                    )),
                }
                if !outcome.outcome.ok() {
                    let what = format!(
                        "{}, round {round}: {}",
                        measurement.title,
                        outcome.trouble.as_deref().unwrap_or("checks failed")
                    );
                    println!("suite: {peer}: {what}");
                    failures.push((peer, what));
                }
                column.rounds.push(outcome.outcome);
            }
        }
    }
    let peer_names: Vec<&str> = options.peers.iter().map(|p| p.name()).collect();
    let sections: Vec<Section> = measurements
        .iter()
        .zip(&columns)
        .map(|(measurement, columns)| Section {
            title: measurement.title,
            figures: measurement.figures,
            columns: columns.iter().collect(),
        })
        .collect();
    let table = table::render(&peer_names, &sections);
    let every_round = table::render_rounds(&peer_names, &sections, options.rounds);
    let mut notes = String::new();
    if options.rounds > 1 {
        notes.push_str(
            "Each cell: median (min–max) over the rounds. A ratio is of the medians; in \
             brackets, the smallest and largest round-by-round ratio (round r of one server \
             over round r of the other, which ran back to back).\n",
        );
    }
    notes.push_str("`*`: a run reported problems (its RESULT line says which). ");
    match &split {
        Some(split) => {
            let _ = writeln!(notes, "Pinned: {}.", split.describe());
        }
        None => notes.push_str("Not pinned: the bench and the server share the machine's cores.\n"),
    }
    for (peer, why) in &missing {
        let _ = writeln!(notes, "{peer}: skipped: {why}");
    }
    for (m, measurement) in measurements.iter().enumerate() {
        for (p, peer) in options.peers.iter().enumerate() {
            let absent = missing.iter().any(|(missing, _)| missing == peer);
            if let (Some(why), false) = (&columns[m][p].skipped, absent) {
                let _ = writeln!(notes, "{}, {peer}: skipped: {why}", measurement.title);
            }
        }
    }
    let (passed, failed_notes) = verdict(&options.peers, &failures);
    notes.push_str(&failed_notes);
    println!();
    print!("{table}");
    println!();
    print!("{notes}");
    println!("\nEvery round:\n");
    print!("{every_round}");
    if let Some(path) = &options.out {
        write_markdown(path, options, &table, &notes, &every_round, &raw, cores)?;
        println!("suite: wrote {}", path.display());
    }
    if failures.is_empty() {
        // Logs of runs that all passed hold nothing worth keeping.
        let _ = fs::remove_dir_all(&logs);
    } else {
        println!("suite: server logs are in {}", logs.display());
    }
    Ok(passed)
}

/// Whether the suite passed, and the notes that name each failed run. The
/// server under test is ours when it is among `peers`: then only its own
/// failures fail the suite, and the other peers' are results to report
/// (the naive Go server stalls behind a reader that never reads, by
/// design). Without it, every peer is under test.
fn verdict(peers: &[SuitePeer], failures: &[(SuitePeer, String)]) -> (bool, String) {
    let ours_ran = peers.contains(&SuitePeer::SecureChat);
    let mut notes = String::new();
    for (peer, what) in failures {
        let _ = writeln!(notes, "{peer} failed its checks: {what}");
    }
    let passed = !failures
        .iter()
        .any(|(peer, _)| !ours_ran || *peer == SuitePeer::SecureChat);
    (passed, notes)
}

/// Why `peer` cannot take `measurement`, if it cannot.
fn cannot_take(peer: Peer, measurement: &Measurement, fd_limit: u64) -> Option<String> {
    if let Some(max) = peer.max_connections() {
        if measurement.connections > max {
            return Some(format!(
                "it needs {} connections; {peer} holds at most about {max}",
                measurement.connections
            ));
        }
    }
    if measurement.connections > MAX_CLIENTS || measurement.connections as u64 + 64 > fd_limit {
        return Some(format!(
            "it needs {} connections; the limit on open files is {fd_limit}",
            measurement.connections
        ));
    }
    None
}

/// What one run gave.
struct Run {
    /// The `RESULT` line as printed.
    result_line: Option<String>,
    /// Its fields.
    outcome: Outcome,
    /// What went wrong around it, if anything did.
    trouble: Option<String>,
}

/// Starts a fresh server, runs one measurement against it, stops it.
fn measure(
    exe: &Path,
    programs: &Programs,
    split: Option<&Split>,
    peer: SuitePeer,
    measurement: &Measurement,
    log: PathBuf,
) -> Run {
    let failed = |why: String| Run {
        result_line: None,
        outcome: Outcome { fields: None },
        trouble: Some(why),
    };
    let server = match ServerProcess::start(programs, split, peer, log) {
        Ok(server) => server,
        Err(err) => return failed(format!("server did not start: {err}")),
    };
    let mut command = Command::new(exe);
    command
        .args(&measurement.args)
        .arg("--addr")
        .arg(server.addr.to_string())
        .arg("--ca")
        .arg(programs.certs.join("ca.crt"))
        .args(["--peer", peer.protocol().name()])
        .arg("--server-pid")
        .arg(server.pid().to_string())
        .arg("--timeout")
        .arg(measurement.timeout.as_secs().to_string());
    let output = run_bounded(&mut command, measurement.timeout + KILL_GRACE);
    let server_log = server.log.clone();
    let stop_note = server.stop();
    let (stdout, stderr, trouble) = match output {
        Ok(output) => output,
        Err(err) => return failed(err),
    };
    let result_line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with("RESULT "))
        .map(str::to_string);
    let fields = result_line.as_deref().and_then(report::parse);
    let outcome = Outcome { fields };
    let trouble = if outcome.ok() {
        trouble.or(stop_note)
    } else {
        // What the bench said, and the server's last words, to see why.
        let said: Vec<&str> = stdout
            .lines()
            .filter(|line| !line.starts_with("RESULT "))
            .chain(stderr.lines())
            .collect();
        Some(format!(
            "{}{}; the bench said: {}; server log: {}",
            trouble.map(|t| format!("{t}; ")).unwrap_or_default(),
            stop_note.unwrap_or_else(|| "the server stopped cleanly".into()),
            said.join(" | "),
            log_tail(&server_log)
        ))
    };
    Run {
        result_line,
        outcome,
        trouble,
    }
}

/// Runs `command` to its end or for at most `limit`, then kills it.
/// Returns its standard output and error, and a note if it was killed.
fn run_bounded(
    command: &mut Command,
    limit: Duration,
) -> Result<(String, String, Option<String>), String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot start the bench: {err}"))?;
    // Read by threads of their own, so that a full pipe never blocks it.
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                // A read error leaves what was read, which is all there is.
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let until = Instant::now() + limit;
    let mut note = None;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(20)),
            _ => {
                // Both fail only for a process already gone.
                let _ = child.kill();
                let _ = child.wait();
                note = Some(format!(
                    "the bench ran past {} s and was killed",
                    limit.as_secs()
                ));
                break;
            }
        }
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok((stdout, stderr, note))
}

/// Writes the table, the notes and every `RESULT` line as Markdown.
fn write_markdown(
    path: &Path,
    options: &SuiteOptions,
    table: &str,
    notes: &str,
    every_round: &str,
    raw: &[String],
    cores: usize,
) -> Result<(), String> {
    let mut text = String::from("# chat-bench suite\n\n");
    let peers: Vec<&str> = options.peers.iter().map(|p| p.name()).collect();
    let _ = writeln!(
        text,
        "Servers: {}; {} round(s){}; {} cores.\n",
        peers.join(", "),
        options.rounds,
        if options.quick { ", quick sizes" } else { "" },
        cores
    );
    text.push_str(table);
    text.push('\n');
    text.push_str(notes);
    text.push_str("\n## Every round\n\n");
    text.push_str(every_round);
    text.push_str("\n## Every RESULT line\n\n```text\n");
    for line in raw {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("```\n");
    fs::write(path, text).map_err(|err| format!("cannot write {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ncat_skips_what_it_cannot_hold() {
        let list = measurements(false);
        let idle = list.iter().find(|m| m.title == "idle 5000").unwrap();
        assert!(cannot_take(Peer::Ncat, idle, 100_000).is_some());
        assert!(cannot_take(Peer::SecureChat, idle, 100_000).is_none());
        assert!(cannot_take(Peer::SecureChat, idle, 1024).is_some());
        let fanout = &list[0];
        assert!(cannot_take(Peer::Ncat, fanout, 100_000).is_none());
    }

    #[test]
    fn a_peers_failure_is_a_result_and_ours_fails_the_suite() {
        let all = [SuitePeer::SecureChat, SuitePeer::GoNaive];
        let naive = (
            SuitePeer::GoNaive,
            "slow reader, round 1: stuck".to_string(),
        );
        let ours = (SuitePeer::SecureChat, "fanout, round 2: lost".to_string());

        let (passed, notes) = verdict(&all, std::slice::from_ref(&naive));
        assert!(passed);
        assert_eq!(
            notes,
            "go-naive failed its checks: slow reader, round 1: stuck\n"
        );

        let (passed, notes) = verdict(&all, &[naive.clone(), ours]);
        assert!(!passed);
        assert!(notes.contains("secure-chat failed its checks: fanout, round 2: lost"));

        // Measured alone, the peer is the server under test.
        let (passed, _) = verdict(&[SuitePeer::GoNaive], &[naive]);
        assert!(!passed);
        assert!(verdict(&all, &[]).0);
    }

    #[test]
    fn quick_runs_are_small() {
        for m in measurements(true) {
            assert!(m.connections <= 21, "{}", m.title);
            assert!(m.timeout <= Duration::from_secs(30));
        }
    }
}
