//! Places in the chat: at most `--max-clients` at once and, if limited,
//! `--max-per-ip` from one address (for IPv6, one /64 network: see
//! [`Block`]). The server takes a [`Seat`] for a
//! client once its handshake is done; the hub holds it while the client is
//! in the chat and lets it go when it closes the client, so a place is free
//! again in the order of events (a client that said `bye` has left before
//! the next one is counted).
//!
//! Next: [`queue`](crate::queue), the hub's inbox.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
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
    per_ip: HashMap<Block, usize>,
}

/// What `--max-per-ip` counts as one address: an IPv4 address, or an IPv6
/// /64 network. One IPv6 host is usually given a whole /64 (2^64
/// addresses), so counting each address alone would let it take any
/// number of places by changing the low bits. An IPv4 address mapped into
/// IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Block(IpAddr);

impl Block {
    /// The block `ip` belongs to.
    pub fn of(ip: IpAddr) -> Block {
        match ip {
            IpAddr::V4(_) => Block(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Block(IpAddr::V4(v4)),
                None => Block(IpAddr::V6(Ipv6Addr::from_bits(
                    v6.to_bits() & !u128::from(u64::MAX),
                ))),
            },
        }
    }
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
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

    /// A place for a client from `ip`, or why there is none.
    pub fn take(self: &Arc<Seats>, ip: IpAddr) -> Result<Seat, NoSeat> {
        let block = Block::of(ip);
        let mut taken = lock(&self.taken);
        let here = taken.per_ip.get(&block).copied().unwrap_or(0);
        if self.max_per_ip.is_some_and(|max| here >= max) {
            let ip = block.to_string();
            return Err(NoSeat {
                told: Refusal::TooManyFromAddress { ip: &ip, here }.to_string(),
                server_full: false,
            });
        }
        if taken.all >= self.max {
            return Err(NoSeat {
                told: Refusal::ServerFull { max: self.max }.to_string(),
                server_full: true,
            });
        }
        taken.all += 1;
        if self.max_per_ip.is_some() {
            *taken.per_ip.entry(block).or_default() += 1;
        }
        let seats = Arc::clone(self);
        Ok(Seat { seats, block })
    }

    /// The places taken now: the clients in the chat.
    pub fn taken(&self) -> usize {
        lock(&self.taken).all
    }
}

/// Why a client got no place in the chat.
#[derive(Debug)]
pub struct NoSeat {
    /// The refusal the client is told.
    pub told: String,
    /// True if the server is full; false if its address has all it may.
    pub server_full: bool,
}

/// One client's place in the chat, given back when dropped.
#[derive(Debug)]
pub struct Seat {
    seats: Arc<Seats>,
    block: Block,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut taken = lock(&self.seats.taken);
        taken.all -= 1;
        if let Some(count) = taken.per_ip.get_mut(&self.block) {
            *count -= 1;
            if *count == 0 {
                taken.per_ip.remove(&self.block);
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
            seats.take(a).unwrap_err().told,
            "too many connections from 10.0.0.1 (2); close one and try again"
        );
        let _third = seats.take(b).unwrap();
        assert_eq!(
            seats.take(b).unwrap_err().told,
            "server full (3 clients); try again later"
        );
        drop(first);
        let _again = seats.take(b).unwrap();
        // Full, and b has all it may: each refusal names its limit.
        assert!(seats.take(a).unwrap_err().server_full);
        assert!(!seats.take(b).unwrap_err().server_full);
        assert_eq!(seats.taken(), 3);
        let taken = lock(&seats.taken);
        assert_eq!(taken.all, 3);
        assert_eq!(
            (taken.per_ip[&Block::of(a)], taken.per_ip[&Block::of(b)]),
            (1, 2)
        );
    }

    #[test]
    fn an_ipv6_network_of_64_bits_is_one_address() {
        let seats = Seats::new(100, Some(2));
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let _first = seats.take(ip("2001:db8:1:2::1")).unwrap();
        let _second = seats.take(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).unwrap();
        assert_eq!(
            seats.take(ip("2001:db8:1:2:abcd::9")).unwrap_err().told,
            "too many connections from 2001:db8:1:2::/64 (2); close one and try again"
        );
        // The next /64 is another network.
        let _other = seats.take(ip("2001:db8:1:3::1")).unwrap();
        // IPv4 mapped into IPv6 is the IPv4 address.
        let _v4 = seats.take(ip("192.0.2.7")).unwrap();
        let _mapped = seats.take(ip("::ffff:192.0.2.7")).unwrap();
        assert!(seats.take(ip("192.0.2.7")).is_err());
    }
}
