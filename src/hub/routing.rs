//! Where the hub sends each line: every client's shard and slot, its room,
//! and per room how many members each shard holds. A plain value, so its
//! counts are tested through joins, moves, sessions and leaves with no
//! thread or shard; not what is sent (the hub) nor who is who (the chat).

use std::collections::HashMap;

use crate::chat::{ClientId, RoomId};
use crate::seats::Seat;

/// Where one client's lines go, and which room its shard has it in.
#[derive(Debug)]
struct Whereabouts<S> {
    place: Place<S>,
    room: Option<RoomId>,
    /// Let go with the route, when the client is closed: from the next
    /// event on, its place is free.
    _seat: Seat,
}

/// A client's shard and its place there (`S`: a [`Slot`](crate::shard::Slot)
/// in the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<S> {
    /// Index of the shard.
    pub shard: usize,
    /// The client's place in it.
    pub slot: S,
}

/// What a move or a close changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved<S> {
    /// Where the client is.
    pub place: Place<S>,
    /// The room it entered, when nobody here was in it before.
    pub opened: Option<RoomId>,
    /// The room it left, when nobody here is in it any more.
    pub emptied: Option<RoomId>,
}

/// Every client the chat may speak of, from its `Ready` to its close, and
/// the rooms they are in, counted per shard.
#[derive(Debug)]
pub struct Routing<S> {
    routes: HashMap<ClientId, Whereabouts<S>>,
    /// Per room, how many of its members each shard holds: a room's line
    /// goes only to the shards with someone there.
    rooms: HashMap<RoomId, Vec<usize>>,
    shards: usize,
}

impl<S: Copy + PartialEq> Routing<S> {
    /// Nobody yet, over `shards` shards.
    pub fn new(shards: usize) -> Routing<S> {
        Routing {
            routes: HashMap::new(),
            rooms: HashMap::new(),
            shards,
        }
    }

    /// A client the shard `place` names is ready, in no room yet; `seat`
    /// is let go when it is closed.
    pub fn add(&mut self, id: ClientId, place: Place<S>, seat: Seat) {
        let route = Whereabouts {
            place,
            room: None,
            _seat: seat,
        };
        self.routes.insert(id, route);
    }

    /// Where `id`'s lines go, if it is known.
    pub fn place(&self, id: ClientId) -> Option<Place<S>> {
        self.routes.get(&id).map(|route| route.place)
    }

    /// `id` is in `room` from now on, and in no other.
    pub fn enter(&mut self, id: ClientId, room: RoomId) -> Option<Moved<S>> {
        let route = self.routes.get_mut(&id)?;
        let place = route.place;
        let old = route.room.replace(room);
        let emptied = old.and_then(|old| self.leave(old, place.shard));
        let opened = (!self.rooms.contains_key(&room)).then_some(room);
        let counts = self
            .rooms
            .entry(room)
            .or_insert_with(|| vec![0; self.shards]);
        if let Some(count) = counts.get_mut(place.shard) {
            *count += 1;
        }
        Some(Moved {
            place,
            opened,
            emptied,
        })
    }

    /// `id` is closed: forgotten, and out of its room.
    pub fn close(&mut self, id: ClientId) -> Option<Moved<S>> {
        let route = self.routes.remove(&id)?;
        let emptied = route
            .room
            .and_then(|room| self.leave(room, route.place.shard));
        Some(Moved {
            place: route.place,
            opened: None,
            emptied,
        })
    }

    /// One member of `room` fewer on `shard`; the room, if nobody here is
    /// in it any more (it is forgotten).
    fn leave(&mut self, room: RoomId, shard: usize) -> Option<RoomId> {
        let counts = self.rooms.get_mut(&room)?;
        if let Some(count) = counts.get_mut(shard) {
            *count = count.saturating_sub(1);
        }
        if counts.iter().all(|&count| count == 0) {
            self.rooms.remove(&room);
            return Some(room);
        }
        None
    }

    /// Each shard a line for `room` goes to, with the slot there to leave
    /// out (`except`'s, if it is on that shard): one per shard with
    /// someone to give it to, none for a room nobody here is in.
    pub fn shards_of(
        &self,
        room: RoomId,
        except: Option<ClientId>,
    ) -> impl Iterator<Item = (usize, Option<S>)> + '_ {
        let except = except.and_then(|id| self.place(id));
        let counts = self.rooms.get(&room).map_or(&[][..], Vec::as_slice);
        counts
            .iter()
            .enumerate()
            .filter_map(move |(shard, &count)| {
                let except = except.filter(|a| a.shard == shard).map(|a| a.slot);
                (count > usize::from(except.is_some())).then_some((shard, except))
            })
    }

    /// Every client known.
    pub fn clients(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.routes.keys().copied()
    }

    /// How many of `room`'s members `shard` holds.
    #[cfg(test)]
    fn count(&self, room: RoomId, shard: usize) -> usize {
        self.rooms
            .get(&room)
            .and_then(|counts| counts.get(shard))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use super::*;
    use crate::seats::Seats;

    const TEA: RoomId = RoomId(1);
    const LOBBY: RoomId = RoomId(2);

    /// Two shards, and seats to give its clients.
    fn routing() -> (Routing<u32>, Arc<Seats>) {
        (Routing::new(2), Seats::new(100, None))
    }

    fn add(routing: &mut Routing<u32>, seats: &Arc<Seats>, id: u64, shard: usize) -> ClientId {
        let seat = seats.take(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("a seat");
        let slot = u32::try_from(id).expect("small ids");
        routing.add(ClientId(id), Place { shard, slot }, seat);
        ClientId(id)
    }

    fn counts(routing: &Routing<u32>, room: RoomId) -> [usize; 2] {
        [routing.count(room, 0), routing.count(room, 1)]
    }

    fn shards(
        routing: &Routing<u32>,
        room: RoomId,
        except: Option<ClientId>,
    ) -> Vec<(usize, Option<u32>)> {
        routing.shards_of(room, except).collect()
    }

    #[test]
    fn joins_count_per_shard_and_a_room_opens_once() {
        let (mut routing, seats) = routing();
        let a = add(&mut routing, &seats, 1, 0);
        let b = add(&mut routing, &seats, 2, 1);
        let c = add(&mut routing, &seats, 3, 1);
        assert_eq!(routing.enter(a, TEA).unwrap().opened, Some(TEA));
        assert_eq!(routing.enter(b, TEA).unwrap().opened, None);
        assert_eq!(routing.enter(c, TEA).unwrap().opened, None);
        assert_eq!(counts(&routing, TEA), [1, 2]);
        assert_eq!(shards(&routing, TEA, None), [(0, None), (1, None)]);
    }

    #[test]
    fn a_line_skips_a_shard_whose_only_member_is_left_out() {
        let (mut routing, seats) = routing();
        let a = add(&mut routing, &seats, 1, 0);
        let b = add(&mut routing, &seats, 2, 1);
        let c = add(&mut routing, &seats, 3, 1);
        for id in [a, b, c] {
            routing.enter(id, TEA);
        }
        // a alone on shard 0: that shard gets nothing.
        assert_eq!(shards(&routing, TEA, Some(a)), [(1, None)]);
        // b shares shard 1 with c: the shard gets it, leaving b out.
        assert_eq!(shards(&routing, TEA, Some(b)), [(0, None), (1, Some(2))]);
        // Nobody here in the lobby: no shard at all.
        assert!(shards(&routing, LOBBY, None).is_empty());
    }

    #[test]
    fn a_move_leaves_the_old_room_and_empties_it_when_last() {
        let (mut routing, seats) = routing();
        let a = add(&mut routing, &seats, 1, 0);
        let b = add(&mut routing, &seats, 2, 1);
        routing.enter(a, LOBBY);
        routing.enter(b, LOBBY);
        let moved = routing.enter(a, TEA).unwrap();
        assert_eq!((moved.opened, moved.emptied), (Some(TEA), None));
        assert_eq!(counts(&routing, LOBBY), [0, 1]);
        assert_eq!(counts(&routing, TEA), [1, 0]);
        let moved = routing.enter(b, TEA).unwrap();
        assert_eq!((moved.opened, moved.emptied), (None, Some(LOBBY)));
        assert_eq!(counts(&routing, TEA), [1, 1]);
        assert!(shards(&routing, LOBBY, None).is_empty());
    }

    #[test]
    fn sessions_of_one_person_count_each_on_their_own_shard() {
        // One person with a session on each shard, and one more on shard 0:
        // every session is a member where its shard is concerned.
        let (mut routing, seats) = routing();
        let first = add(&mut routing, &seats, 1, 0);
        let second = add(&mut routing, &seats, 2, 1);
        let third = add(&mut routing, &seats, 3, 0);
        for id in [first, second, third] {
            routing.enter(id, TEA);
        }
        assert_eq!(counts(&routing, TEA), [2, 1]);
        // The person moves: each session enters the new room in turn.
        routing.enter(first, LOBBY);
        routing.enter(second, LOBBY);
        assert_eq!(counts(&routing, TEA), [1, 0]);
        assert_eq!(shards(&routing, TEA, None), [(0, None)]);
        let moved = routing.enter(third, LOBBY).unwrap();
        assert_eq!(moved.emptied, Some(TEA));
        assert_eq!(counts(&routing, LOBBY), [2, 1]);
    }

    #[test]
    fn leaves_forget_the_client_and_its_last_room() {
        let (mut routing, seats) = routing();
        let a = add(&mut routing, &seats, 1, 0);
        let b = add(&mut routing, &seats, 2, 1);
        routing.enter(a, TEA);
        routing.enter(b, TEA);
        let closed = routing.close(a).unwrap();
        assert_eq!(closed.place, Place { shard: 0, slot: 1 });
        assert_eq!(closed.emptied, None);
        assert_eq!(counts(&routing, TEA), [0, 1]);
        assert_eq!(routing.place(a), None);
        // Closed twice, or never known: nothing changes.
        assert_eq!(routing.close(a), None);
        assert_eq!(routing.enter(ClientId(99), TEA), None);
        assert_eq!(routing.close(b).unwrap().emptied, Some(TEA));
        assert!(shards(&routing, TEA, None).is_empty());
        assert_eq!(routing.clients().count(), 0);
    }

    #[test]
    fn a_client_in_no_room_closes_without_touching_any() {
        let (mut routing, seats) = routing();
        let a = add(&mut routing, &seats, 1, 0);
        let b = add(&mut routing, &seats, 2, 0);
        routing.enter(b, TEA);
        let closed = routing.close(a).unwrap();
        assert_eq!(closed.emptied, None);
        assert_eq!(counts(&routing, TEA), [1, 0]);
    }

    #[test]
    fn a_closed_clients_seat_is_free_again() {
        let seats = Seats::new(1, None);
        let mut routing = Routing::new(1);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let seat = seats.take(ip).expect("the one seat");
        routing.add(ClientId(1), Place { shard: 0, slot: 1 }, seat);
        assert!(seats.take(ip).is_err(), "the only seat is taken");
        routing.close(ClientId(1));
        assert!(seats.take(ip).is_ok(), "closing gave the seat back");
    }
}
