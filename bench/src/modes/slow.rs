//! Slow: the same fan-out twice, first alone, then beside `--stalled`
//! clients that finish their handshake and never read. Did the readers
//! still get every line, how much slower was it, and what did the server
//! do with the stalled clients (cut them, and when)?
//!
//! A stalled client's receive buffer is pinned small before it connects,
//! so the backlog piles up in the server, not in the kernel. Its cut is
//! seen without reading: the poller watches it for a reset or hang-up.

use std::time::{Duration, Instant};

use crate::check::{End, Expect};
use crate::connect::{Bench, Closed, Plan, Role};
use crate::modes::{self, burst, report_connect, secs, Shape};
use crate::report::ResultLine;

/// Time kept back from the deadline for closing and reporting after a
/// run that did not finish (at most a quarter of the time left).
const RESERVE: Duration = Duration::from_secs(5);

/// What one of the two runs found.
struct Run {
    /// Every reader got every line, in order, and nobody was cut.
    complete: bool,
    /// From the release of the senders to the last delivery.
    seconds: f64,
    /// Deliveries that never came.
    lost: u64,
    /// Readers the server did not cut that still did not close cleanly.
    unclean: usize,
    /// For each stalled client seen cut while stalled, seconds after the
    /// senders' release.
    cuts: Vec<f64>,
    /// Stalled clients whose connection ended without the server's
    /// close_notify, cut seen or not: a server that closes a socket with
    /// data still queued sends its FIN behind that data, which a client
    /// that does not read never sees; only reading at the end tells.
    stalled_unclean: usize,
}

/// Runs both fan-outs; true if the readers got everything both times.
pub fn run(bench: &Bench) -> bool {
    let o = &bench.options;
    let shape = Shape::of(o);
    println!(
        "slow: {} readers, {} senders x {} lines of {} bytes; then again beside {} stalled \
         clients; {} peer",
        shape.clients, shape.senders, shape.messages, o.size, o.stalled, o.peer
    );
    let mut result = modes::result_line(bench);
    result
        .add("senders", shape.senders)
        .add("messages", shape.messages)
        .add("size", o.size)
        .add("stalled", o.stalled);
    let without = one_run(bench, shape, 0, "a", &mut result);
    let with = without
        .as_ref()
        .and_then(|_| one_run(bench, shape, o.stalled, "b", &mut result));
    let yes_no = |ok: bool| if ok { "yes" } else { "no" };
    let complete_without = without.as_ref().is_some_and(|r| r.complete);
    let complete_with = with.as_ref().is_some_and(|r| r.complete);
    result
        .add("others_complete", yes_no(complete_without && complete_with))
        .add("complete_without", yes_no(complete_without))
        .add("complete_with", yes_no(complete_with));
    let seconds = |run: &Option<Run>| {
        run.as_ref()
            .map_or("na".to_string(), |r| format!("{:.3}", r.seconds))
    };
    result
        .add("seconds_without", seconds(&without))
        .add("seconds_with", seconds(&with));
    match (&without, &with) {
        // A ratio of two runs means something only if both delivered
        // everything: a run cut short ends early, one stuck ends at
        // --run-wait.
        (Some(a), Some(b)) if a.complete && b.complete => {
            let slowdown = b.seconds / a.seconds.max(1e-9);
            println!(
                "slow: {:.3} s alone, {:.3} s beside {} stalled clients: {slowdown:.2}x",
                a.seconds, b.seconds, o.stalled
            );
            result.add("slowdown", format!("{slowdown:.2}"));
        }
        _ => {
            result.add("slowdown", "na");
        }
    }
    if let Some(run) = &with {
        let seen = run.cuts.len();
        // A server that answers close_notify and did not cut a stalled
        // client closes it cleanly at the end; for one that may not
        // answer (ncat), only the cuts seen count.
        let cut = if o.peer.must_close_cleanly() {
            seen.max(run.stalled_unclean)
        } else {
            seen
        };
        let last = run.cuts.iter().copied().reduce(f64::max);
        match last {
            Some(last) => println!(
                "slow: {seen} of {} stalled clients were seen cut (reset or hang-up), the \
                 last {last:.3} s after sending began",
                o.stalled
            ),
            None => println!("slow: no stalled client was seen cut while the others were served"),
        }
        if cut > seen {
            println!(
                "slow: {} more stalled clients ended without close_notify when read at the \
                 end: cut, behind data they never read",
                cut - seen
            );
        }
        result
            .add("stalled_cut", cut)
            .add("stalled_cut_seen", seen)
            .add(
                "stalled_cut_max_s",
                last.map_or("na".to_string(), |s| format!("{s:.3}")),
            )
            .add("stalled_unclean", run.stalled_unclean)
            .add("lost_with", run.lost);
    }
    if let Some(run) = &without {
        result.add("lost_without", run.lost);
    }
    // In a run cut short, readers closing uncleanly are part of what went
    // wrong, already reported as incomplete.
    let unclean = [&without, &with]
        .iter()
        .filter_map(|run| run.as_ref())
        .any(|run| run.complete && run.unclean > 0);
    if unclean && o.peer.must_close_cleanly() {
        result.problem("unclean_close");
    }
    if !(complete_without && complete_with) {
        result.problem("incomplete");
    }
    result.finish()
}

/// One fan-out beside `stalled` stalled clients; `None` if it could not
/// start (the reason is in `result`).
fn one_run(
    bench: &Bench,
    shape: Shape,
    stalled: usize,
    tag: &str,
    result: &mut ResultLine,
) -> Option<Run> {
    let o = &bench.options;
    let echoes = o.peer.echoes();
    let label = if stalled == 0 { "alone" } else { "stalled" };
    let mut crowd = modes::crowd(bench, bench.marker(tag), shape.senders, result)?;
    let plan = |index: usize| {
        if index < shape.clients {
            shape.plan(index, echoes)
        } else {
            Plan {
                role: Role::Stalled,
                expect: Expect {
                    stalled: true,
                    ..Expect::default()
                },
            }
        }
    };
    let count = shape.clients + stalled;
    let connected = crowd.connect(0..count, &plan);
    if report_connect(connected, count, result).is_none() {
        crowd.close();
        return None;
    }
    let left = bench.remaining().unwrap_or_default();
    let until = (bench.deadline - RESERVE.min(left / 4)).min(Instant::now() + o.run_wait);
    let burst = burst(bench, &mut crowd, shape, until);
    if stalled > 0 {
        // A server cuts a stalled client some time after its socket stops
        // taking bytes (chat-server: --stall-timeout, 5 s); the run itself
        // may be over long before. Watch them, without reading, until all
        // are cut or the wait is over.
        let left = bench.remaining().unwrap_or_default();
        let until = (bench.deadline - RESERVE.min(left / 4)).min(Instant::now() + o.stall_wait);
        crowd.wait(until, |t| t.stalled_cuts.len() >= stalled);
    }
    let closed = crowd.close();
    let run = summarise(&closed, &burst, shape, echoes);
    println!(
        "slow ({label}): {} in {:.3} s; {} deliveries lost; {} of {} readers closed cleanly",
        if run.complete {
            "every line delivered in order"
        } else {
            "incomplete"
        },
        run.seconds,
        run.lost,
        shape.clients - run.unclean,
        shape.clients
    );
    for err in burst.send_errors.iter().take(3) {
        println!("slow ({label}): send error: {err}");
    }
    for problem in closed
        .reports
        .iter()
        .filter(|r| !r.expect.stalled)
        .filter_map(|r| r.first_problem.as_ref())
        .take(3)
    {
        println!("slow ({label}): problem: {problem}");
    }
    Some(run)
}

/// What a run's reports add up to.
fn summarise(closed: &Closed, burst: &modes::Burst, shape: Shape, echoes: bool) -> Run {
    let readers: Vec<_> = closed
        .reports
        .iter()
        .filter(|r| !r.expect.stalled)
        .collect();
    let delivered: u64 = readers
        .iter()
        .map(|r| r.received.min(r.expect.lines.unwrap_or(0)))
        .sum();
    let lost = shape.deliveries(echoes).saturating_sub(delivered);
    let disorder: u64 = readers.iter().map(|r| r.out_of_order + r.problems).sum();
    let cut = readers.iter().any(|r| r.early);
    let unclean = readers.iter().filter(|r| r.end != End::CloseNotify).count();
    let stalled_unclean = closed
        .reports
        .iter()
        .filter(|r| r.expect.stalled && r.end != End::CloseNotify)
        .count();
    Run {
        complete: burst.all_done && lost == 0 && disorder == 0 && !cut,
        seconds: secs(burst.wall),
        lost,
        unclean,
        cuts: closed
            .stalled_cuts
            .iter()
            .map(|at| secs(at.saturating_duration_since(burst.start)))
            .collect(),
        stalled_unclean,
    }
}
