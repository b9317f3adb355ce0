//! The measurements, one module each, and what they share: the fan-out
//! burst (fanout and slow), and the lines that report CPU, connecting and
//! closing.

/// Throughput of several senders to many readers.
pub mod fanout;
/// TLS handshakes per second, full or resumed.
pub mod handshake;
/// Memory and threads per idle connection, and one broadcast.
pub mod idle;
/// Delay of each line at a steady rate.
pub mod latency;
/// A fan-out beside clients that never read.
pub mod slow;

use std::net::Shutdown;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use secure_chat::duplex::WriteHalf;

use crate::check::{push_line, End, Expect};
use crate::connect::{Bench, Closed, Crowd, Plan, Role};
use crate::options::{Mode, Options};
use crate::probe::Samples;
use crate::progress::Progress;
use crate::report::ResultLine;

/// How many problem lines are printed at most.
const SHOWN_PROBLEMS: usize = 5;

/// Runs the measurement the options ask for; true if every check passed.
pub fn run(bench: &Bench) -> bool {
    match bench.options.mode {
        Mode::Fanout => fanout::run(bench),
        Mode::Latency => latency::run(bench),
        Mode::Idle => idle::run(bench),
        Mode::Handshake => handshake::run(bench),
        Mode::Slow => slow::run(bench),
    }
}

/// A crowd for this run, or `None` with the reason printed and noted in
/// `result` as `setup_failed`.
pub fn crowd<'b>(
    bench: &'b Bench,
    marker: Arc<str>,
    senders: usize,
    result: &mut ResultLine,
) -> Option<Crowd<'b>> {
    match Crowd::new(bench, marker, senders) {
        Ok(crowd) => Some(crowd),
        Err(err) => {
            println!("setup failed: {err}");
            result.problem("setup_failed");
            None
        }
    }
}

/// The `RESULT` line of this run, started.
pub fn result_line(bench: &Bench) -> ResultLine {
    let o = &bench.options;
    // A handshake run's clients are its workers, one connection each at
    // a time.
    let clients = match o.mode {
        Mode::Handshake => o.workers,
        _ => o.clients,
    };
    ResultLine::new(
        o.mode.name(),
        o.peer.name(),
        clients,
        Arc::clone(&bench.watchdog.expired),
    )
}

/// The fan-out shape shared by `fanout` and `slow`: clients `0..senders`
/// send `messages` lines each, everyone reads them.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Reading clients, senders among them.
    pub clients: usize,
    /// Clients that send.
    pub senders: usize,
    /// Lines per sender.
    pub messages: u64,
}

impl Shape {
    /// The shape the command line asks for.
    pub fn of(options: &Options) -> Shape {
        Shape {
            clients: options.clients,
            senders: options.senders,
            messages: options.messages,
        }
    }

    /// What client `index` does and expects.
    pub fn plan(&self, index: usize, echoes: bool) -> Plan {
        let sender = index < self.senders;
        // A server that does not echo gives a sender only the others' lines.
        let from = if sender && !echoes {
            self.senders - 1
        } else {
            self.senders
        };
        let lines = from as u64 * self.messages;
        Plan {
            role: if sender { Role::Sender } else { Role::Listener },
            expect: Expect {
                // Zero lines to expect is nothing to wait for.
                lines: (lines > 0).then_some(lines),
                ..Expect::default()
            },
        }
    }

    /// Clients that have lines to wait for.
    pub fn waiting(&self, echoes: bool) -> usize {
        (0..self.clients)
            .filter(|&index| self.plan(index, echoes).expect.lines.is_some())
            .count()
    }

    /// Deliveries expected in all.
    pub fn deliveries(&self, echoes: bool) -> u64 {
        (0..self.clients)
            .filter_map(|index| self.plan(index, echoes).expect.lines)
            .sum()
    }
}

/// What one fan-out burst measured.
pub struct Burst {
    /// When the senders were released.
    pub start: Instant,
    /// From the release to the last delivery (or to giving up).
    pub wall: Duration,
    /// Every waiting client received every line.
    pub all_done: bool,
    /// When each sender's last line went out.
    pub sent_at: Vec<Instant>,
    /// What went wrong while sending.
    pub send_errors: Vec<String>,
    /// Readings at the end of the burst.
    pub after: Samples,
}

/// Releases every sender of `crowd` at once and waits, until `until`, for
/// every waiting client to have every line.
pub fn burst(bench: &Bench, crowd: &mut Crowd, shape: Shape, until: Instant) -> Burst {
    let o = &bench.options;
    let echoes = o.peer.echoes();
    let waiting = shape.waiting(echoes);
    let marker = crowd.marker();
    let lines = crowd.lines();
    let progress = Progress::start(
        "delivering".into(),
        shape.deliveries(echoes),
        Arc::clone(&lines),
    );
    let barrier = Barrier::new(shape.senders + 1);
    let mut sent_at = Vec::new();
    let mut send_errors = Vec::new();
    let mut all_done = false;
    let mut start = Instant::now();
    let mut after = None;
    let batch_bytes = o.peer.max_write();
    let (senders, tally, notes) = crowd.parts();
    let sockets: Vec<_> = senders.iter().map(|client| client.socket()).collect();
    thread::scope(|scope| {
        let threads: Vec<_> = senders
            .iter_mut()
            .take(shape.senders)
            .enumerate()
            .map(|(sender, client)| {
                let barrier = &barrier;
                let marker = &marker;
                scope.spawn(move || {
                    barrier.wait();
                    let lines = Lines {
                        marker,
                        sender,
                        count: shape.messages,
                        batch: o.batch,
                        size: o.size,
                        max_write: batch_bytes,
                    };
                    send_lines(bench, &mut client.write, &lines)
                })
            })
            .collect();
        // Nothing is sent before the main thread reaches the barrier.
        start = Instant::now();
        barrier.wait();
        all_done = tally.wait(notes, until, |t| t.done >= waiting || t.ended_early > 0)
            && tally.done >= waiting;
        after = Some(bench.samples());
        if !all_done {
            // A server that stopped reading a sender would keep its
            // thread blocked in a write: cut the senders so they return.
            for socket in &sockets {
                // Fails only for a socket already shut, which is the goal.
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        for thread in threads {
            match thread.join() {
                Ok(Ok(at)) => sent_at.push(at),
                Ok(Err(err)) => send_errors.push(err),
                Err(_) => send_errors.push("a sending thread panicked".to_string()),
            }
        }
    });
    drop(progress);
    let end = match (all_done, tally.last_done) {
        (true, Some(last)) => last,
        _ => Instant::now(),
    };
    Burst {
        start,
        wall: end.saturating_duration_since(start),
        all_done,
        sent_at,
        send_errors,
        after: after.unwrap_or_else(|| bench.samples()),
    }
}

/// What one sender sends.
pub struct Lines<'a> {
    /// The crowd's marker.
    pub marker: &'a str,
    /// This sender's number.
    pub sender: usize,
    /// Lines in all.
    pub count: u64,
    /// Lines per send call.
    pub batch: usize,
    /// Text length of each line.
    pub size: usize,
    /// The most bytes one send may carry (ncat: whole lines per read).
    pub max_write: Option<usize>,
}

/// Sends all of a sender's lines as fast as the server takes them.
/// Returns when the last batch went out.
pub fn send_lines(bench: &Bench, write: &mut WriteHalf, lines: &Lines) -> Result<Instant, String> {
    let line_len = lines.size.max(48) + 1;
    let per_send = match lines.max_write {
        Some(max) => lines.batch.min((max / line_len).max(1)),
        None => lines.batch,
    } as u64;
    let mut batch = Vec::with_capacity(per_send as usize * line_len);
    let mut seq = 0;
    while seq < lines.count {
        if bench.watchdog.expired() {
            return Err(format!(
                "sender {}: stopped at the deadline after {seq} lines",
                lines.sender
            ));
        }
        let end = (seq + per_send).min(lines.count);
        batch.clear();
        for line in seq..end {
            push_line(&mut batch, lines.marker, lines.sender, line, 0, lines.size);
        }
        write
            .send(&batch)
            .map_err(|err| format!("sender {}: after {seq} lines: {err}", lines.sender))?;
        seq = end;
    }
    Ok(Instant::now())
}

/// Prints and records how connecting went; the time taken if it worked.
pub fn report_connect(
    connected: Result<Duration, String>,
    count: usize,
    result: &mut ResultLine,
) -> Option<Duration> {
    match connected {
        Ok(took) => {
            println!(
                "connect: {count} clients connected and greeted in {:.2} s ({:.0} per second)",
                secs(took),
                count as f64 / secs(took).max(1e-9)
            );
            result.add("connect_s", format!("{:.3}", secs(took)));
            Some(took)
        }
        Err(err) => {
            println!("connect failed: {err}");
            result.problem("connect_failed");
            None
        }
    }
}

/// Prints and records the CPU use of server and bench between two
/// samples; returns the server's CPU time, if measured.
pub fn report_cpu(before: &Samples, after: &Samples, result: &mut ResultLine) -> Option<Duration> {
    let wall = after.at.saturating_duration_since(before.at);
    let pct = |cpu: Duration| format!("{:.0}", 100.0 * cpu.as_secs_f64() / secs(wall).max(1e-9));
    let server_cpu = match (&before.server, &after.server) {
        (Some(b), Some(a)) => {
            let cpu = a.cpu.saturating_sub(b.cpu);
            println!(
                "server: {} % CPU, RSS {} -> {} KiB",
                pct(cpu),
                b.rss_kib,
                a.rss_kib
            );
            result
                .add("server_cpu_pct", pct(cpu))
                .add("server_rss_kib", a.rss_kib);
            Some(cpu)
        }
        _ => {
            result.add("server_cpu_pct", "na");
            None
        }
    };
    if let (Some(b), Some(a)) = (&before.me, &after.me) {
        let cpu = a.cpu.saturating_sub(b.cpu);
        println!(
            "bench: {} % CPU (it shares the machine with the server), RSS {} KiB",
            pct(cpu),
            a.rss_kib
        );
        result
            .add("bench_cpu_pct", pct(cpu))
            .add("bench_rss_kib", a.rss_kib);
    }
    server_cpu
}

/// Prints and records what the clients (stalled ones aside) saw go
/// wrong, and how closing went.
pub fn report_closed(bench: &Bench, closed: &Closed, result: &mut ResultLine) {
    let reports: Vec<_> = closed
        .reports
        .iter()
        .filter(|r| !r.expect.stalled)
        .collect();
    let count = reports.len();
    let clean = reports.iter().filter(|r| r.end == End::CloseNotify).count();
    let early = reports.iter().filter(|r| r.early).count();
    let out_of_order: u64 = reports.iter().map(|r| r.out_of_order).sum();
    let problems: u64 = reports.iter().map(|r| r.problems).sum();
    let foreign: u64 = reports.iter().map(|r| r.foreign).sum();
    let wants_write: u64 = reports.iter().map(|r| r.wants_write).sum();
    println!(
        "close: {clean} of {count} connections closed cleanly in {:.2} s",
        secs(closed.took)
    );
    let mut ends: Vec<String> = reports
        .iter()
        .filter(|r| r.end != End::CloseNotify)
        .map(|r| {
            let when = if r.early {
                " (the server ended it before the bench closed)"
            } else if r.cut_by_bench {
                " (cut by the bench: no close_notify within --close-wait)"
            } else {
                ""
            };
            format!("{:?}{when}", r.end)
        })
        .collect();
    ends.sort();
    ends.dedup();
    for end in ends.iter().take(SHOWN_PROBLEMS) {
        println!("close: a connection ended with {end}");
    }
    for problem in reports
        .iter()
        .filter_map(|r| r.first_problem.as_ref())
        .take(SHOWN_PROBLEMS)
    {
        println!("problem: {problem}");
    }
    if foreign > 0 {
        println!("note: {foreign} chat or history lines from someone else were ignored");
    }
    if wants_write > 0 {
        println!("note: rustls wanted to write {wants_write} times from a blocking reader");
    }
    let close_cut = reports
        .iter()
        .filter(|r| r.cut_by_bench && r.end != End::CloseNotify)
        .count();
    result
        .add("out_of_order", out_of_order)
        .add("problems", problems)
        .add("cut", early)
        .add("closed_clean", clean)
        .add("close_cut", close_cut)
        .add("close_s", format!("{:.3}", secs(closed.took)));
    if out_of_order > 0 {
        result.problem("out_of_order");
    }
    if problems > 0 {
        result.problem("unexpected_lines");
    }
    if early > 0 {
        result.problem("cut_by_server");
    }
    if clean < count {
        if bench.options.peer.must_close_cleanly() {
            result.problem("unclean_close");
        } else {
            println!(
                "note: {} does not always send close_notify; not counted as a problem",
                bench.options.peer
            );
        }
    }
}

/// Nearest-rank percentile `p` (0 to 100) of sorted values; 0 if empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in seconds, for printing.
pub fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Nanoseconds as milliseconds with three decimals.
pub fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// A duration in nanoseconds, saturating.
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 99.9), 100);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn a_server_without_echo_gives_senders_fewer_lines() {
        let shape = Shape {
            clients: 4,
            senders: 2,
            messages: 10,
        };
        assert_eq!(shape.deliveries(true), 80);
        assert_eq!(shape.deliveries(false), 60);
        assert_eq!(shape.plan(0, false).expect.lines, Some(10));
        let alone = Shape {
            senders: 1,
            ..shape
        };
        assert_eq!(alone.plan(0, false).expect.lines, None);
        assert_eq!(alone.waiting(false), 3);
    }
}
