//! The chat server's figures as one [`Source`]: its connections and
//! counters, the hub's and each writer shard's counts, and the memory
//! budget. The server registers it when it starts; nothing here counts.

use std::sync::Arc;

use super::{Counters, Exposition, HubFigures, ShardFigures, Source};
use crate::budget::Budget;
use crate::seats::Seats;
use crate::server::Gauges;

/// Everything a running server has to show, read at each scrape.
#[derive(Debug)]
pub struct ServerFigures {
    /// Connections open now.
    pub gauges: Gauges,
    /// The places in the chat, taken and free.
    pub seats: Arc<Seats>,
    /// The most clients in the chat at once (`--max-clients`, or what the
    /// machine allows).
    pub max_clients: usize,
    /// Counted once per connection, or per wait.
    pub counters: Arc<Counters>,
    /// The hub's counts.
    pub hub: Arc<HubFigures>,
    /// Each writer shard's counts, summed here.
    pub shards: Vec<Arc<ShardFigures>>,
    /// What waits for the writers.
    pub budget: Arc<Budget>,
}

impl Source for ServerFigures {
    fn collect(&self, out: &mut Exposition) {
        out.gauge(
            "chat_server_connections",
            "Connections open now, in their handshake or in the chat.",
            self.gauges.open_connections() as f64,
        );
        out.gauge(
            "chat_server_clients",
            "Clients in the chat now: places taken, of chat_server_max_clients.",
            self.seats.taken() as f64,
        );
        out.gauge(
            "chat_server_max_clients",
            "The most clients in the chat at once (--max-clients, or what the machine allows).",
            self.max_clients as f64,
        );
        self.counters.collect(out);
        out.counter(
            "chat_server_lines_in_total",
            "Lines received from clients.",
            self.hub.lines_in.get() as f64,
        );
        out.counter(
            "chat_server_room_lines_total",
            "Lines said in a room and shown on this server.",
            self.hub.room_lines.get() as f64,
        );
        let deliveries: u64 = self.shards.iter().map(|s| s.deliveries.get()).sum();
        out.counter(
            "chat_server_deliveries_total",
            "Lines queued for a client: one per line per recipient.",
            deliveries as f64,
        );
        out.gauge(
            "chat_server_waiting_bytes",
            "Bytes of lines waiting for the writers, as the memory budget counts them.",
            self.budget.used() as f64,
        );
        out.counter(
            "chat_server_budget_pauses_total",
            "Times the hub paused because the waiting lines filled the memory budget.",
            self.hub.pauses.get() as f64,
        );
        out.counter(
            "chat_server_budget_pause_seconds_total",
            "Time the hub spent in those pauses, in all.",
            self.hub.paused_micros.get() as f64 / 1e6,
        );
    }
}
