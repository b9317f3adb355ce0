//! Latency: one extra client sends `--rate` lines a second for
//! `--seconds`, each stamped with its send time; every receiver records
//! each line's delay (arrival minus send, on the same clock).

use std::thread;
use std::time::{Duration, Instant};

use crate::check::{push_line, Expect};
use crate::connect::{Bench, Plan, Role};
use crate::modes::{self, ms, nanos, percentile, report_closed, report_connect, report_cpu, secs};
use crate::progress::Progress;

/// How long the mode waits for the last lines after the last send.
const DRAIN_WAIT: Duration = Duration::from_secs(10);
/// A line's delay above which it is counted as an outlier.
const SLOW_LINE: Duration = Duration::from_millis(10);

/// Runs the latency measurement; true if every check passed.
pub fn run(bench: &Bench) -> bool {
    let o = &bench.options;
    let n = o.clients;
    let count = o.rate * o.seconds;
    println!(
        "latency: {n} receivers + 1 sender, {} lines/s of {} bytes for {} s ({count} lines); {} peer",
        o.rate, o.size, o.seconds, o.peer
    );
    let mut result = modes::result_line(bench);
    result
        .add("rate", o.rate)
        .add("seconds_sent", o.seconds)
        .add("size", o.size);
    let Some(mut crowd) = modes::crowd(bench, bench.marker(""), 1, &mut result) else {
        return result.finish();
    };
    let echoes = o.peer.echoes();
    // Client `n` is the sender; it receives its own lines too (where the
    // server echoes), as its acknowledgement, but only the receivers'
    // delays are counted.
    let plan = |index: usize| {
        let sender = index == n;
        Plan {
            role: if sender { Role::Sender } else { Role::Listener },
            expect: Expect {
                lines: (!sender || echoes).then_some(count),
                record_latency: !sender,
                stalled: false,
            },
        }
    };
    let connected = crowd.connect(0..n + 1, &plan);
    report_connect(connected, n + 1, &mut result);
    let waiting = n + usize::from(echoes);
    let before = bench.samples();
    let start = Instant::now();
    let mut sent = 0;
    let mut worst_lag = Duration::ZERO;
    let mut send_error = None;
    let mut all_done = false;
    let mut after = None;
    if result.is_clean() {
        let progress = Progress::start("sending".into(), count * n as u64, crowd.lines());
        let marker = crowd.marker();
        let (senders, tally, notes) = crowd.parts();
        let sender = &mut senders[0];
        let mut line = Vec::with_capacity(o.size + 48);
        // `count` is at most 100000 * 3600 and the deadline stops it sooner.
        for seq in 0..count {
            if bench.watchdog.expired() {
                break;
            }
            let due = start + Duration::from_nanos(seq * 1_000_000_000 / o.rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            // Lateness includes the sleep's own overshoot: how far the
            // sender itself was from a steady rate.
            worst_lag = worst_lag.max(Instant::now().saturating_duration_since(due));
            line.clear();
            push_line(
                &mut line,
                &marker,
                0,
                seq,
                nanos(bench.epoch.elapsed()),
                o.size,
            );
            if let Err(err) = sender.write.send(&line) {
                send_error = Some(format!("after {seq} lines: {err}"));
                break;
            }
            sent += 1;
        }
        let until = bench.deadline.min(Instant::now() + DRAIN_WAIT);
        all_done = tally.wait(notes, until, |t| t.done >= waiting || t.ended_early > 0)
            && tally.done >= waiting;
        after = Some(bench.samples());
        drop(progress);
    }
    let end = match (all_done, crowd.tally.last_done) {
        (true, Some(last)) => last,
        _ => Instant::now(),
    };
    let wall = end.saturating_duration_since(start);
    let closed = crowd.close();

    let mut delays: Vec<(u64, u64)> = closed
        .reports
        .iter()
        .filter(|r| r.expect.record_latency)
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    let total = n as u64 * count;
    let delivered = delays.len() as u64;
    let lost = total.saturating_sub(delivered);
    delays.sort_unstable_by_key(|&(_, delay)| delay);
    let sorted: Vec<u64> = delays.iter().map(|&(_, delay)| delay).collect();
    let (p50, p90, p99, p999) = (
        percentile(&sorted, 50.0),
        percentile(&sorted, 90.0),
        percentile(&sorted, 99.0),
        percentile(&sorted, 99.9),
    );
    let max = sorted.last().copied().unwrap_or(0);
    let slow = sorted
        .iter()
        .filter(|&&delay| delay > nanos(SLOW_LINE))
        .count();
    println!(
        "latency: {delivered} of {total} deliveries; p50 {} ms, p90 {} ms, p99 {} ms, \
         p99.9 {} ms, max {} ms; {slow} over {} ms",
        ms(p50),
        ms(p90),
        ms(p99),
        ms(p999),
        ms(max),
        SLOW_LINE.as_millis()
    );
    if let Some(&(worst_seq, _)) = delays.last() {
        // A line late for every receiver points at the server or the
        // machine; one late for a single receiver, at that reader.
        let mut of_worst: Vec<u64> = delays
            .iter()
            .filter(|&&(seq, _)| seq == worst_seq)
            .map(|&(_, delay)| delay)
            .collect();
        of_worst.sort_unstable();
        println!(
            "latency: the slowest line was #{worst_seq} (sent at {:.3} s); its median over \
             receivers {} ms",
            worst_seq as f64 / o.rate as f64,
            ms(percentile(&of_worst, 50.0))
        );
    }
    println!(
        "send: {sent} of {count} lines sent; the sender ran up to {} ms behind schedule",
        ms(nanos(worst_lag))
    );
    result
        .add("delivered", delivered)
        .add("expected", total)
        .add("lost", lost)
        .add("p50_ms", ms(p50))
        .add("p90_ms", ms(p90))
        .add("p99_ms", ms(p99))
        .add("p999_ms", ms(p999))
        .add("max_ms", ms(max))
        .add("over_10ms", slow)
        .add("sender_lag_ms", ms(nanos(worst_lag)))
        .add("seconds", format!("{:.3}", secs(wall)));
    match &after {
        Some(after) => {
            report_cpu(&before, after, &mut result);
        }
        None => {
            result.add("server_cpu_pct", "na");
        }
    }
    if lost > 0 {
        result.problem("lost");
    }
    if let Some(err) = send_error {
        println!("send error: {err}");
        result.problem("send_failed");
    }
    report_closed(bench, &closed, &mut result);
    result.finish()
}
