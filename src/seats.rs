//! Places in the chat: at most `--max-clients` at once and, if limited,
//! `--max-per-ip` from one address.
//!
//! The server takes a [`Seat`] for a client once its handshake is done,
//! before the hub hears of it; the hub holds it for as long as the client
//! is in the chat, and lets it go when it closes the client. So a place is
//! free again in the order of events (a client that said `bye` has left
//! before the next one is counted), and admitting a client is a counter
//! and a map lookup, whatever the number of clients.
//!
//! Next: [`queue`](crate::queue), the hub's inbox.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::protocol::Refusal;
use crate::sync::lock;

// The map of places per address is changed by single inserts and removes:
// a panicking thread cannot leave it half changed, so `lock` takes a
// poisoned one (see crate::sync).

/// Places in the chat: at most `--max-clients` at once and, if limited,
/// `--max-per-ip` from one address. A client takes one once its handshake
/// is done, and gives it back when its reading thread ends. Counted, so
/// that admitting a client costs the same however many are here.
#[derive(Debug)]
pub struct Seats {
    max: usize,
    taken: AtomicUsize,
    /// The limit per address and the count for each, if limited.
    per_ip: Option<(usize, Mutex<HashMap<IpAddr, usize>>)>,
}

impl Seats {
    /// Room for `max` clients, and `max_per_ip` from one address if given.
    pub fn new(max: usize, max_per_ip: Option<usize>) -> Arc<Seats> {
        Arc::new(Seats {
            max,
            taken: AtomicUsize::new(0),
            per_ip: max_per_ip.map(|max| (max, Mutex::default())),
        })
    }

    /// A place for a client from `ip`, or the refusal it is told.
    pub fn take(self: &Arc<Seats>, ip: IpAddr) -> Result<Seat, String> {
        // The address's own limit first, holding its lock while the total is
        // taken: a client refused for its address never holds a place that
        // another is then refused for, not even for a moment.
        let mut per_ip = self
            .per_ip
            .as_ref()
            .map(|(max, counts)| (*max, lock(counts)));
        if let Some((max, counts)) = &per_ip {
            let here = counts.get(&ip).copied().unwrap_or(0);
            if here >= *max {
                let ip = ip.to_string();
                return Err(Refusal::TooManyFromAddress { ip: &ip, here }.to_string());
            }
        }
        let max = self.max;
        let full = self
            .taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err();
        if full {
            return Err(Refusal::ServerFull { max }.to_string());
        }
        if let Some((_, counts)) = &mut per_ip {
            *counts.entry(ip).or_default() += 1;
        }
        Ok(Seat {
            seats: Arc::clone(self),
            ip,
        })
    }
}

/// One client's place in the chat, given back when dropped.
#[derive(Debug)]
pub struct Seat {
    seats: Arc<Seats>,
    ip: IpAddr,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some((_, counts)) = &self.seats.per_ip {
            let mut counts = lock(counts);
            if let Some(count) = counts.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
        self.seats.taken.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_are_counted_and_given_back() {
        let seats = Seats::new(3, Some(2));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = seats.take(a).unwrap();
        let _second = seats.take(a).unwrap();
        assert_eq!(
            seats.take(a).unwrap_err(),
            "too many connections from 10.0.0.1 (2); close one and try again"
        );
        let _third = seats.take(b).unwrap();
        assert_eq!(
            seats.take(b).unwrap_err(),
            "server full (3 clients); try again later"
        );
        drop(first);
        let _again = seats.take(b).unwrap();
        assert_eq!(seats.taken.load(Ordering::SeqCst), 3);
        let counts = lock(&seats.per_ip.as_ref().unwrap().1);
        assert_eq!((counts[&a], counts[&b]), (1, 2));
    }
}
