//! The store's figures (a server alone with `--data-dir`): what waits in
//! its queue, and what was written, dropped or refused by the disk. Not
//! the store itself ([`store`](crate::store)).

use std::sync::atomic::Ordering;

use super::{Exposition, Source};
use crate::store::StoreCounts;

impl Source for StoreCounts {
    fn collect(&self, out: &mut Exposition) {
        out.gauge(
            "chat_server_store_queued",
            "Changes (room lines, topics, rules) waiting for the store's thread.",
            self.queued.load(Ordering::Relaxed) as f64,
        );
        out.gauge(
            "chat_server_store_queued_bytes",
            "What the changes waiting for the store cost in memory (the store's own share of the memory budget).",
            self.queued_bytes.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "chat_server_store_written_total",
            "Changes the store wrote to disk.",
            self.written.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "chat_server_store_dropped_total",
            "Lines not kept because the store's queue was full.",
            self.dropped.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "chat_server_store_failed_total",
            "Changes the disk refused (full, read-only, failing).",
            self.failed.load(Ordering::Relaxed) as f64,
        );
    }
}
