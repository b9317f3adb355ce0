//! The store's figures (a server alone with `--data-dir`): what waits in
//! its queue, and what was written, dropped or refused by the disk. Not
//! the store itself ([`store`](crate::store)).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Exposition, Source};
use crate::budget::Budget;
use crate::store::StoreCounts;

/// The store's counts, and the budget whose store share is what its queue
/// costs.
pub struct StoreFigures {
    /// The queue's length and what was written, dropped or refused.
    pub counts: Arc<StoreCounts>,
    /// The memory budget, for its store share.
    pub budget: Arc<Budget>,
}

impl Source for StoreFigures {
    fn collect(&self, out: &mut Exposition) {
        let counts = &self.counts;
        out.gauge(
            "chat_server_store_queued",
            "Changes (room lines, topics, rules) waiting for the store's thread.",
            counts.queued.load(Ordering::Relaxed) as f64,
        );
        out.gauge(
            "chat_server_store_queued_bytes",
            "What the changes waiting for the store cost in memory (the store's own share of the memory budget).",
            self.budget.store_used() as f64,
        );
        out.counter(
            "chat_server_store_written_total",
            "Changes the store wrote to disk.",
            counts.written.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "chat_server_store_dropped_total",
            "Lines not kept because the store's queue or its memory share was full.",
            counts.dropped.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "chat_server_store_failed_total",
            "Changes the disk refused (full, read-only, failing).",
            counts.failed.load(Ordering::Relaxed) as f64,
        );
    }
}
