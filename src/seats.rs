//! Places in the chat: at most `--max-clients` at once and, if limited,
//! `--max-per-ip` from one address. The server takes a [`Seat`] for a
//! client once its handshake is done; the hub holds it while the client is
//! in the chat and lets it go when it closes the client, so a place is free
//! again in the order of events (a client that said `bye` has left before
//! the next one is counted).
//!
//! Next: [`queue`](crate::queue), the hub's inbox.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::protocol::Refusal;
use crate::sync::lock;

/// Places in the chat: at most `--max-clients` at once and, if limited,
/// `--max-per-ip` from one address. Counted, so that admitting a client
/// is one short lock and a map lookup, however many are here.
#[derive(Debug)]
pub struct Seats {
    max: usize,
    max_per_ip: Option<usize>,
    /// The places taken, and how many from each address when that is
    /// limited. One lock for both, so a client refused for one limit never
    /// holds, even for a moment, a place another is refused for. Changed
    /// by single steps: a panicking thread cannot leave it half changed, so
    /// `lock` takes a poisoned one (see crate::sync).
    taken: Mutex<Taken>,
}

/// The places taken, in all and per address.
#[derive(Debug, Default)]
struct Taken {
    all: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Seats {
    /// Room for `max` clients, and `max_per_ip` from one address if given.
    pub fn new(max: usize, max_per_ip: Option<usize>) -> Arc<Seats> {
        Arc::new(Seats {
            max,
            max_per_ip,
            taken: Mutex::default(),
        })
    }

    /// A place for a client from `ip`, or the refusal it is told.
    pub fn take(self: &Arc<Seats>, ip: IpAddr) -> Result<Seat, String> {
        let mut taken = lock(&self.taken);
        let here = taken.per_ip.get(&ip).copied().unwrap_or(0);
        if self.max_per_ip.is_some_and(|max| here >= max) {
            let ip = ip.to_string();
            return Err(Refusal::TooManyFromAddress { ip: &ip, here }.to_string());
        }
        if taken.all >= self.max {
            return Err(Refusal::ServerFull { max: self.max }.to_string());
        }
        taken.all += 1;
        if self.max_per_ip.is_some() {
            *taken.per_ip.entry(ip).or_default() += 1;
        }
        let seats = Arc::clone(self);
        Ok(Seat { seats, ip })
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
        let mut taken = lock(&self.seats.taken);
        taken.all -= 1;
        if let Some(count) = taken.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                taken.per_ip.remove(&self.ip);
            }
        }
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
        let taken = lock(&seats.taken);
        assert_eq!(taken.all, 3);
        assert_eq!((taken.per_ip[&a], taken.per_ip[&b]), (1, 2));
    }
}
