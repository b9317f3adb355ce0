//! Handshake: `--workers` threads, each in a loop for `--seconds`:
//! connect, TLS handshake, read the first line, close_notify, close.
//! Handshakes per second, the time each took, and the server's CPU time
//! per handshake; with `--resume`, how many resumed a session.

use std::collections::BTreeMap;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::{ClientConfig, HandshakeKind};
use secure_chat::client::MAX_SERVER_LINE;
use secure_chat::duplex::{self, WriteHalf};
use secure_chat::line::Frame;
use secure_chat::line_reader::{End, LineReader};

use crate::connect::{kx_config, Bench};
use crate::modes::{self, ms, nanos, percentile, report_cpu, secs};

/// How long a client waits for the server's first line.
const FIRST_LINE_WAIT: Duration = Duration::from_secs(5);
/// How long a client waits for the server's close_notify after its own.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Sessions each worker keeps for resumption: one server needs few.
const SESSIONS_KEPT: usize = 32;

/// What one connection of a worker found.
struct Shake {
    /// From the start of the TCP connect to the end of the handshake.
    took: Duration,
    /// A session was resumed.
    resumed: bool,
    /// The key exchange group, as rustls names it.
    group: String,
    /// The server answered close_notify with its own.
    clean: bool,
}

/// What one worker did.
#[derive(Default)]
struct Work {
    /// Every connection that got through.
    shakes: Vec<Shake>,
    /// Why the worker stopped early, if it did.
    error: Option<String>,
}

/// Runs the handshake measurement; true if every check passed.
pub fn run(bench: &Bench) -> bool {
    let o = &bench.options;
    let run_for = Duration::from_secs(o.seconds);
    println!(
        "handshake: {} workers for {} s, {} handshakes, key exchange {}; {} peer",
        o.workers,
        o.seconds,
        if o.resume { "resumed" } else { "full" },
        o.kx.name(),
        o.peer
    );
    let mut result = modes::result_line(bench);
    result
        .add("workers", o.workers)
        .add("resume", if o.resume { "yes" } else { "no" })
        .add("kx", o.kx.name());
    let base = match kx_config(&o.ca, o.kx) {
        Ok(config) => config,
        Err(err) => {
            println!("setup failed: {err}");
            result.problem("setup_failed");
            return result.finish();
        }
    };
    let before = bench.samples();
    let start = Instant::now();
    let until = bench.deadline.min(start + run_for);
    let work: Vec<Work> = thread::scope(|scope| {
        let workers: Vec<_> = (0..o.workers)
            .map(|_| {
                // Each worker its own configuration, so its own session
                // store: the tickets one worker got are its own to use.
                let mut config = (*base).clone();
                config.resumption = if o.resume {
                    Resumption::in_memory_sessions(SESSIONS_KEPT)
                } else {
                    Resumption::disabled()
                };
                let config = Arc::new(config);
                // A resumption needs a ticket from a full handshake first:
                // each worker makes its second even on a machine so busy
                // that the first took the whole run.
                let at_least = if o.resume { 2 } else { 1 };
                scope.spawn(move || work(bench, &config, until, at_least))
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker.join().unwrap_or_else(|_| Work {
                    error: Some("a worker panicked".into()),
                    ..Work::default()
                })
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let after = bench.samples();

    let shakes: Vec<&Shake> = work.iter().flat_map(|w| &w.shakes).collect();
    let count = shakes.len();
    let resumed = shakes.iter().filter(|s| s.resumed).count();
    let clean = shakes.iter().filter(|s| s.clean).count();
    let mut times: Vec<u64> = shakes.iter().map(|s| nanos(s.took)).collect();
    times.sort_unstable();
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for shake in &shakes {
        *groups.entry(shake.group.as_str()).or_default() += 1;
    }
    let group = groups
        .iter()
        .max_by_key(|(_, &n)| n)
        .map_or("na", |(&name, _)| name);
    let per_s = count as f64 / secs(elapsed).max(1e-9);
    println!(
        "handshake: {count} in {:.2} s: {per_s:.0} per second; {resumed} resumed; \
         p50 {} ms, p99 {} ms; key exchange {group}",
        secs(elapsed),
        ms(percentile(&times, 50.0)),
        ms(percentile(&times, 99.0))
    );
    if groups.len() > 1 {
        println!("handshake: groups negotiated: {groups:?}");
    }
    result
        .add("handshakes", count)
        .add("handshakes_per_s", format!("{per_s:.1}"))
        .add("resumed", resumed)
        .add("kx_negotiated", group)
        .add("p50_ms", ms(percentile(&times, 50.0)))
        .add("p99_ms", ms(percentile(&times, 99.0)))
        .add("closed_clean", clean)
        .add("seconds", format!("{:.3}", secs(elapsed)));
    match report_cpu(&before, &after, &mut result) {
        Some(cpu) if count > 0 => {
            let per = cpu.as_secs_f64() * 1e6 / count as f64;
            println!("server: {per:.0} µs CPU per handshake");
            result.add("server_cpu_us_per_handshake", format!("{per:.1}"));
        }
        _ => {
            result.add("server_cpu_us_per_handshake", "na");
        }
    }
    for err in work.iter().filter_map(|w| w.error.as_ref()).take(5) {
        println!("worker stopped: {err}");
    }
    if work.iter().any(|w| w.error.is_some()) {
        result.problem("handshake_failed");
    }
    if count == 0 {
        result.problem("no_handshakes");
    }
    if o.resume && resumed == 0 {
        println!("problem: --resume was asked, but the server resumed no session");
        result.problem("not_resumed");
    }
    if clean < count && o.peer.must_close_cleanly() {
        result.problem("unclean_close");
    }
    result.finish()
}

/// One worker's loop: connections one after another until `until`, and at
/// least `at_least` of them.
fn work(bench: &Bench, config: &Arc<ClientConfig>, until: Instant, at_least: usize) -> Work {
    let mut work = Work::default();
    while (Instant::now() < until || work.shakes.len() < at_least) && !bench.watchdog.expired() {
        match shake(bench, config) {
            Ok(shake) => work.shakes.push(shake),
            Err(err) => {
                // A server that refuses once will refuse again: stop here
                // rather than spin.
                work.error = Some(err);
                break;
            }
        }
    }
    work
}

/// One connection: handshake, first line, clean close.
fn shake(bench: &Bench, config: &Arc<ClientConfig>) -> Result<Shake, String> {
    let start = Instant::now();
    // Taken apart to read what the handshake settled on.
    let (conn, socket) = bench.open(config, None)?.into_parts();
    let took = start.elapsed();
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let group = conn
        .negotiated_key_exchange_group()
        .map_or("none".to_string(), |g| format!("{:?}", g.name()));
    let socket = Arc::new(socket);
    let (read_half, mut write) = duplex::split(conn, Arc::clone(&socket));
    // This thread does the reading and then the writing: what rustls
    // queues while reading goes out with the close_notify.
    let mut lines = LineReader::new(read_half, MAX_SERVER_LINE, || {});
    // The first line also brings the session tickets, which the server
    // sends after the handshake.
    first_line(&mut lines, &socket).map_err(|err| format!("first line: {err}"))?;
    let clean = close(&mut lines, &mut write, &socket);
    Ok(Shake {
        took,
        resumed,
        group,
        clean,
    })
}

/// Waits for one whole line.
///
/// Each wait for the server is bounded by [`FIRST_LINE_WAIT`]. A server
/// that trickled a line out a byte at a time, each within the limit,
/// would keep it waiting longer: none of those this bench measures does,
/// and `--timeout` bounds the run anyway.
fn first_line(lines: &mut LineReader, socket: &TcpStream) -> Result<String, String> {
    socket
        .set_read_timeout(Some(FIRST_LINE_WAIT))
        .map_err(|err| err.to_string())?;
    match lines.next_line() {
        Ok(Frame::Line(line)) => Ok(line),
        Ok(other) => Err(format!("{other:?}")),
        Err(End::Failed(err)) if timed_out(&err) => Err(format!("none within {FIRST_LINE_WAIT:?}")),
        Err(end) => Err(end.to_string()),
    }
}

/// True for the error of a read that ran into the socket's timeout
/// (Linux says "would block", other systems "timed out").
fn timed_out(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Sends close_notify, ends our direction, and waits (briefly) for the
/// server's close_notify; true if it came.
fn close(lines: &mut LineReader, write: &mut WriteHalf, socket: &TcpStream) -> bool {
    let sent = socket
        .set_write_timeout(Some(CLOSE_WAIT))
        .and_then(|()| write.close())
        .and_then(|()| socket.set_read_timeout(Some(CLOSE_WAIT)));
    if sent.is_err() {
        return false;
    }
    // The rest of the greeting, then close_notify or the end of the stream.
    let until = Instant::now() + CLOSE_WAIT;
    while Instant::now() < until {
        if let Err(end) = lines.next_line() {
            return matches!(end, End::Closed);
        }
    }
    false
}
