//! The link's figures for the metrics: what [`LinkGauges`] shows at a
//! scrape, and the count kept by the thread that takes the link's
//! deliveries from its sink (a chat server's hub). The counts themselves
//! live in the link's shared state, each added to by one thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{LinkState, RedisLink};

impl RedisLink {
    /// The count the thread that takes the link's deliveries from its
    /// sink keeps, for the metrics (a chat server's hub, as it handles
    /// each): that thread, and no other, calls [`DeliveriesTaken::took`].
    pub fn deliveries_taken(&self) -> DeliveriesTaken {
        DeliveriesTaken {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The link's figures for the metrics: a view that only reads, and
    /// keeps none of the link's threads or queues alive.
    pub fn gauges(&self) -> LinkGauges {
        LinkGauges {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// What the metrics show of the link: whether Redis is reachable, how
/// often it came back, and what waits in its queues.
#[derive(Debug)]
pub struct LinkGauges {
    pub(super) shared: Arc<LinkState>,
}

impl crate::metrics::Source for LinkGauges {
    fn collect(&self, out: &mut crate::metrics::Exposition) {
        let shared = &self.shared;
        let up = shared.up.load(Ordering::SeqCst);
        out.gauge(
            "chat_server_redis_link_up",
            "1 while the link to Redis is connected, 0 while it reconnects.",
            if up { 1.0 } else { 0.0 },
        );
        out.counter(
            "chat_server_redis_reconnects_total",
            "Times the link to Redis came back after it was down.",
            shared.reconnects.load(Ordering::Relaxed) as f64,
        );
        // What was taken is read before what was put: a line put and taken
        // between the two reads is then counted in neither, never taken
        // without having been put.
        let taken = shared.outbox_out.get();
        let waiting = shared.outbox_in.get().saturating_sub(taken);
        out.gauge(
            "chat_server_redis_outbox",
            "Room lines waiting for the thread that publishes them to Redis.",
            waiting as f64,
        );
        let taken = shared.deliveries_taken.get();
        let put = shared.delivered.get() + shared.delivered_names.get();
        out.gauge(
            "chat_server_redis_deliveries",
            "What came from Redis (lines, answers) waiting in the hub's queue.",
            put.saturating_sub(taken) as f64,
        );
    }
}

/// What the thread that takes the link's deliveries from its sink counts.
#[derive(Debug)]
pub struct DeliveriesTaken {
    pub(super) shared: Arc<LinkState>,
}

impl DeliveriesTaken {
    /// One delivery was taken from the link's sink. Only that thread
    /// calls it.
    pub fn took(&self) {
        self.shared.deliveries_taken.add(1);
    }
}
