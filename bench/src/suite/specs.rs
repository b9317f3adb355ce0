//! What the suite measures: each measurement's bench options at full and
//! quick size, the connections it needs and the rows it gives. Running them
//! is the suite's (mod.rs); summing them up is the table's.

use std::time::Duration;

use super::table::{Figure, Kind};
use crate::options::Mode;

/// One measurement of the suite.
pub struct Measurement {
    /// Its name in the table.
    pub title: &'static str,
    /// The bench's mode and options.
    pub args: Vec<String>,
    /// The most connections it opens at once.
    pub connections: usize,
    /// Its own time limit.
    pub timeout: Duration,
    /// The rows it gives.
    pub figures: &'static [Figure],
}

impl Measurement {
    /// The bench's mode it runs.
    pub fn mode(&self) -> Mode {
        // Every spec starts with a mode's name; the tests read them all.
        self.args[0].parse().unwrap_or(Mode::Fanout)
    }
}

/// Rows of a fan-out.
const FANOUT: &[Figure] = &[
    Figure {
        label: "server CPU µs per delivery",
        key: "server_cpu_us_per_delivery",
        kind: Kind::Number,
    },
    Figure {
        label: "deliveries/s",
        key: "deliveries_per_s",
        kind: Kind::Number,
    },
];
/// Rows of the latency run.
const LATENCY: &[Figure] = &[
    Figure {
        label: "p99 ms",
        key: "p99_ms",
        kind: Kind::Number,
    },
    Figure {
        label: "server CPU %",
        key: "server_cpu_pct",
        kind: Kind::Number,
    },
];
/// Rows of an idle run.
const IDLE: &[Figure] = &[
    Figure {
        label: "KiB per idle connection",
        key: "kib_per_conn",
        kind: Kind::Number,
    },
    Figure {
        label: "threads per connection",
        key: "threads_per_conn",
        kind: Kind::Number,
    },
    Figure {
        label: "broadcast to all, ms",
        key: "broadcast_ms",
        kind: Kind::Number,
    },
];
/// Rows of a handshake run.
const HANDSHAKE: &[Figure] = &[
    Figure {
        label: "server CPU µs per handshake",
        key: "server_cpu_us_per_handshake",
        kind: Kind::Number,
    },
    Figure {
        label: "handshakes/s",
        key: "handshakes_per_s",
        kind: Kind::Number,
    },
];
/// Rows of a slow run.
const SLOW: &[Figure] = &[
    Figure {
        label: "others complete",
        key: "others_complete",
        kind: Kind::YesNo,
    },
    Figure {
        label: "slowdown",
        key: "slowdown",
        kind: Kind::Number,
    },
    Figure {
        label: "stalled clients cut",
        key: "stalled_cut",
        kind: Kind::Number,
    },
];

/// A measurement as written down: its full and its quick form.
struct Spec {
    /// Its name in the table.
    title: &'static str,
    /// Mode and options at full size.
    full: &'static str,
    /// Mode and options for `--quick`.
    quick: &'static str,
    /// The most connections the full form opens at once.
    connections: usize,
    /// The same for the quick form.
    quick_connections: usize,
    /// The rows it gives.
    figures: &'static [Figure],
}

/// Every measurement of the suite, in the order they run.
const SPECS: &[Spec] = &[
    Spec {
        title: "fanout 100×10",
        full: "fanout --clients 100 --senders 10 --size 64",
        quick: "fanout --clients 8 --senders 2 --messages 50",
        connections: 100,
        quick_connections: 8,
        figures: FANOUT,
    },
    Spec {
        title: "fanout 500×5",
        full: "fanout --clients 500 --senders 5",
        quick: "fanout --clients 12 --senders 3 --messages 50",
        connections: 500,
        quick_connections: 12,
        figures: FANOUT,
    },
    Spec {
        title: "latency 100 at 200/s",
        full: "latency --clients 100 --rate 200",
        quick: "latency --clients 5 --rate 50 --seconds 1",
        connections: 101,
        quick_connections: 6,
        figures: LATENCY,
    },
    Spec {
        title: "idle 1000",
        full: "idle --clients 1000",
        quick: "idle --clients 10 --hold 1",
        connections: 1001,
        quick_connections: 11,
        figures: IDLE,
    },
    Spec {
        title: "idle 5000",
        full: "idle --clients 5000",
        quick: "idle --clients 20 --hold 1",
        connections: 5001,
        quick_connections: 21,
        figures: IDLE,
    },
    Spec {
        title: "handshake full",
        full: "handshake",
        quick: "handshake --seconds 1 --workers 2",
        connections: 4,
        quick_connections: 2,
        figures: HANDSHAKE,
    },
    Spec {
        title: "handshake resumed",
        full: "handshake --resume",
        quick: "handshake --seconds 1 --workers 2 --resume",
        connections: 4,
        quick_connections: 2,
        figures: HANDSHAKE,
    },
    Spec {
        title: "slow, 1 stalled",
        full: "slow --stalled 1",
        quick:
            "slow --clients 6 --senders 2 --messages 200 --stalled 1 --run-wait 10 --stall-wait 1",
        connections: 51,
        quick_connections: 7,
        figures: SLOW,
    },
    Spec {
        title: "slow, 50 stalled",
        full: "slow --stalled 50",
        quick:
            "slow --clients 6 --senders 2 --messages 200 --stalled 3 --run-wait 10 --stall-wait 1",
        connections: 100,
        quick_connections: 9,
        figures: SLOW,
    },
];

/// The measurements, at full size or `quick`.
pub fn measurements(quick: bool) -> Vec<Measurement> {
    SPECS
        .iter()
        .map(|spec| {
            let (args, connections, timeout) = if quick {
                (spec.quick, spec.quick_connections, 30)
            } else {
                (spec.full, spec.connections, 120)
            };
            Measurement {
                title: spec.title,
                args: args.split(' ').map(str::to_string).collect(),
                connections,
                timeout: Duration::from_secs(timeout),
                figures: spec.figures,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_starts_with_its_mode() {
        for quick in [false, true] {
            let list = measurements(quick);
            for m in &list {
                assert!(m.args[0].parse::<Mode>().is_ok(), "{}", m.title);
                assert!(m.title.starts_with(m.mode().name()), "{}", m.title);
            }
            assert_eq!(list.iter().filter(|m| m.mode() == Mode::Fanout).count(), 2);
        }
    }
}
