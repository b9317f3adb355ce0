//! Idle: `--clients` connections that read their greeting and sit still;
//! the server's memory and threads per connection. Then one more client
//! says one line, and the time until every idle client has it is taken:
//! a broadcast to the whole crowd.

use std::time::{Duration, Instant};

use crate::check::{push_line, Expect};
use crate::connect::{Bench, Crowd, Plan, Role};
use crate::modes::{self, report_closed, report_connect, secs};
use crate::progress::Progress;

/// How long the broadcast may take to reach everyone before it counts
/// as lost.
const BROADCAST_WAIT: Duration = Duration::from_secs(30);

/// Runs the idle measurement; true if every check passed.
pub fn run(bench: &Bench) -> bool {
    let o = &bench.options;
    let n = o.clients;
    println!("idle: {n} connections; {} peer", o.peer);
    let mut result = modes::result_line(bench);
    let Some(mut crowd) = modes::crowd(bench, bench.marker(""), 1, &mut result) else {
        return result.finish();
    };
    let echoes = o.peer.echoes();
    // Client `n`, the broadcaster, connects after the measurement.
    let plan = |index: usize| {
        let broadcaster = index == n;
        Plan {
            role: if broadcaster {
                Role::Sender
            } else {
                Role::Listener
            },
            expect: Expect {
                lines: (!broadcaster || echoes).then_some(1),
                ..Expect::default()
            },
        }
    };
    let before = bench.samples();
    let connected = crowd.connect(0..n, &plan);
    report_connect(connected, n, &mut result);
    let mut after = None;
    if result.is_clean() {
        // Also drains the join notices still on their way to early clients.
        let until = bench.deadline.min(Instant::now() + o.hold);
        crowd.wait(until, |t| t.ended_early > 0);
        after = Some(bench.samples());
    }
    match (
        &before.server,
        after.as_ref().and_then(|a| a.server.as_ref()),
    ) {
        (Some(b), Some(a)) => {
            let per_conn = (a.rss_kib as f64 - b.rss_kib as f64) / n as f64;
            let threads = (a.threads as f64 - b.threads as f64) / n as f64;
            println!(
                "server: RSS {} KiB before, {} KiB after: {per_conn:.1} KiB per idle \
                 connection; threads {} -> {} ({threads:.2} per connection)",
                b.rss_kib, a.rss_kib, b.threads, a.threads
            );
            result
                .add("rss_before_kib", b.rss_kib)
                .add("rss_after_kib", a.rss_kib)
                .add("kib_per_conn", format!("{per_conn:.1}"))
                .add("threads_before", b.threads)
                .add("threads_after", a.threads)
                .add("threads_per_conn", format!("{threads:.3}"));
        }
        _ => {
            result
                .add("kib_per_conn", "na")
                .add("threads_per_conn", "na");
        }
    }
    if let (Some(b), Some(a)) = (&before.me, after.as_ref().and_then(|a| a.me.as_ref())) {
        let per_conn = (a.rss_kib as f64 - b.rss_kib as f64) / n as f64;
        println!(
            "bench: RSS {} KiB with {n} clients ({per_conn:.1} KiB each), {} threads",
            a.rss_kib, a.threads
        );
        result
            .add("bench_rss_kib", a.rss_kib)
            .add("bench_kib_per_conn", format!("{per_conn:.1}"))
            .add("bench_threads", a.threads);
    }
    match after.is_some().then(|| broadcast(bench, &mut crowd, &plan)) {
        Some(Ok(took)) => {
            println!(
                "broadcast: one line reached all {n} idle clients in {:.1} ms",
                secs(took) * 1e3
            );
            result.add("broadcast_ms", format!("{:.3}", secs(took) * 1e3));
        }
        Some(Err(err)) => {
            println!("broadcast failed: {err}");
            result.add("broadcast_ms", "na");
            result.problem("broadcast_lost");
        }
        None => {
            result.add("broadcast_ms", "na");
        }
    }
    let closed = crowd.close();
    report_closed(bench, &closed, &mut result);
    result.finish()
}

/// Connects the broadcaster, sends one line, and waits until every idle
/// client (and the broadcaster, where the server echoes) has it.
fn broadcast(
    bench: &Bench,
    crowd: &mut Crowd,
    plan: &(dyn Fn(usize) -> Plan + Sync),
) -> Result<Duration, String> {
    let n = crowd.count();
    crowd.connect(n..n + 1, plan)?;
    let waiting = n + usize::from(bench.options.peer.echoes());
    let marker = crowd.marker();
    let lines = crowd.lines();
    let (senders, tally, notes) = crowd.parts();
    let mut line = Vec::new();
    push_line(&mut line, &marker, 0, 0, 0, bench.options.size);
    let progress = Progress::start("broadcast".into(), waiting as u64, lines);
    let sent = Instant::now();
    senders[0]
        .write
        .send(&line)
        .map_err(|err| format!("send: {err}"))?;
    let until = bench.deadline.min(sent + BROADCAST_WAIT);
    let all = tally.wait(notes, until, |t| t.done >= waiting || t.ended_early > 0);
    drop(progress);
    match (all && tally.done >= waiting, tally.last_done) {
        (true, Some(last)) => Ok(last.saturating_duration_since(sent)),
        _ => Err(format!(
            "{} of {waiting} clients received the line",
            tally.done
        )),
    }
}
