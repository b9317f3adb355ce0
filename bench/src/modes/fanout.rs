//! Fanout: `--senders` clients send `--messages` lines each as fast as
//! they can; every client must receive every line, in order per sender.
//! Deliveries per second, and the server's CPU time per delivery.

use crate::connect::Bench;
use crate::modes::{self, burst, report_closed, report_connect, report_cpu, secs, Shape};

/// Runs the fan-out; true if every check passed.
pub fn run(bench: &Bench) -> bool {
    let o = &bench.options;
    let shape = Shape::of(o);
    let echoes = o.peer.echoes();
    let total = shape.deliveries(echoes);
    println!(
        "fanout: {} clients, {} senders x {} lines of {} bytes, {} lines per send; {} peer",
        shape.clients, shape.senders, shape.messages, o.size, o.batch, o.peer
    );
    let mut result = modes::result_line(bench);
    result
        .add("senders", shape.senders)
        .add("messages", shape.messages)
        .add("size", o.size);
    let Some(mut crowd) = modes::crowd(bench, bench.marker(""), shape.senders, &mut result) else {
        return result.finish();
    };
    let connected = crowd.connect(0..shape.clients, &|index| shape.plan(index, echoes));
    report_connect(connected, shape.clients, &mut result);
    let before = bench.samples();
    let burst = result
        .is_clean()
        .then(|| burst(bench, &mut crowd, shape, bench.deadline));
    let closed = crowd.close();

    let delivered: u64 = closed
        .reports
        .iter()
        .map(|r| r.received.min(r.expect.lines.unwrap_or(0)))
        .sum();
    let extra: u64 = closed
        .reports
        .iter()
        .map(|r| r.received.saturating_sub(r.expect.lines.unwrap_or(0)))
        .sum();
    let lost = total - delivered;
    let wall = burst.as_ref().map_or(0.0, |b| secs(b.wall));
    let rate = delivered as f64 / wall.max(1e-9);
    if let Some(last_sent) = burst.as_ref().and_then(|b| b.sent_at.iter().max()) {
        let start = burst.as_ref().map_or(*last_sent, |b| b.start);
        println!(
            "send: all {} lines sent after {:.3} s",
            shape.senders as u64 * shape.messages,
            secs(last_sent.saturating_duration_since(start))
        );
    }
    println!(
        "fanout: {delivered} of {total} deliveries in {wall:.3} s: {:.2} M deliveries/s",
        rate / 1e6
    );
    result
        .add("delivered", delivered)
        .add("expected", total)
        .add("lost", lost)
        .add("extra", extra)
        .add("seconds", format!("{wall:.3}"))
        .add("deliveries_per_s", format!("{rate:.0}"));
    let cpu = burst
        .as_ref()
        .and_then(|b| report_cpu(&before, &b.after, &mut result));
    match cpu {
        Some(cpu) => {
            let per_delivery = cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64;
            println!("server: {per_delivery:.3} µs CPU per delivery");
            result.add("server_cpu_us_per_delivery", format!("{per_delivery:.3}"));
        }
        None => {
            result.add("server_cpu_us_per_delivery", "na");
        }
    }
    if lost > 0 {
        result.problem("lost");
    }
    if extra > 0 {
        result.problem("extra");
    }
    if let Some(burst) = &burst {
        for err in burst.send_errors.iter().take(5) {
            println!("send error: {err}");
        }
        if !burst.send_errors.is_empty() {
            result.problem("send_failed");
        }
    }
    report_closed(bench, &closed, &mut result);
    result.finish()
}
