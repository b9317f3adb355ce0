//! The hub: one thread that owns everything the sessions share.
//!
//! Sessions never touch each other. Their readers send the hub [`Event`]s;
//! the hub decides, and pushes lines into each recipient's [`Outbox`]. It
//! knows channels and sockets to cut, never TLS.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::line::Frame;
use crate::outbox::{Outbox, Overflow};
use crate::protocol::{self, Command, ServerLine};

/// A connection's number, unique for the life of the server; logs use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What sessions tell the hub.
#[derive(Debug)]
pub enum Event {
    /// The accept loop took a connection; its handshake starts now. The hub
    /// keeps the socket so it can cut the connection at shutdown.
    Accepted {
        /// The new connection.
        id: ClientId,
        /// Where it comes from.
        peer: SocketAddr,
        /// Used only to shut the connection down.
        socket: Arc<TcpStream>,
    },
    /// The handshake succeeded: the client may chat. Lines for it go to `outbox`.
    Ready {
        /// The connection.
        id: ClientId,
        /// The writer thread drains it.
        outbox: Outbox,
    },
    /// The client sent a line (or something that was refused as one).
    Frame {
        /// Who sent it.
        id: ClientId,
        /// What arrived.
        frame: Frame,
    },
    /// The connection ended, for the reason given.
    Gone {
        /// The connection.
        id: ClientId,
        /// Why, for the log.
        reason: String,
    },
    /// The server is stopping: tell everyone, close every connection.
    Shutdown,
}

/// The notice every client gets when the server stops.
pub const SHUTDOWN_NOTICE: &str = "server shutting down, goodbye";

/// One connection, from accept to goodbye.
struct Conn {
    peer: SocketAddr,
    socket: Arc<TcpStream>,
    /// `None` until the handshake is done.
    member: Option<Member>,
}

/// A client that is in the chat.
struct Member {
    nick: String,
    outbox: Outbox,
}

/// The hub's state. Only the hub thread ever holds it.
struct Hub {
    /// Ordered by id, so a broadcast reaches clients in the order they came.
    conns: BTreeMap<ClientId, Conn>,
    /// Size limit for lines, named in the error for an over-long one.
    max_line: usize,
    /// Clients that overflowed during the current event, to be cut after it.
    too_slow: HashMap<ClientId, Overflow>,
}

/// The hub thread's loop: handles events until [`Event::Shutdown`] or until
/// every sender is gone.
///
/// Returns the sockets of the connections still open, so the server can cut
/// any that do not finish closing on their own.
pub fn run(events: Receiver<Event>, max_line: usize) -> Vec<Arc<TcpStream>> {
    let mut hub = Hub {
        conns: BTreeMap::new(),
        max_line,
        too_slow: HashMap::new(),
    };
    for event in events {
        if let Event::Shutdown = event {
            hub.shutdown();
            break;
        }
        hub.handle(event);
        hub.drop_slow_clients();
    }
    hub.conns.into_values().map(|conn| conn.socket).collect()
}

impl Hub {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Accepted { id, peer, socket } => {
                let conn = Conn {
                    peer,
                    socket,
                    member: None,
                };
                self.conns.insert(id, conn);
            }
            Event::Ready { id, outbox } => self.join(id, outbox),
            Event::Frame { id, frame } => self.frame(id, frame),
            Event::Gone { id, reason } => self.leave(id, &reason),
            Event::Shutdown => unreachable!("handled by run"),
        }
    }

    fn join(&mut self, id: ClientId, outbox: Outbox) {
        let Some(conn) = self.conns.get_mut(&id) else {
            // Gone before its handshake finished; the writer stops when
            // this last outbox is dropped.
            return;
        };
        let nick = format!("guest{}", id.0);
        conn.member = Some(Member {
            nick: nick.clone(),
            outbox,
        });
        self.send_to(id, ServerLine::Notice(protocol::WELCOME));
        self.send_to(id, ServerLine::Notice(&format!("you are {nick}")));
        self.broadcast_except(id, ServerLine::Notice(&format!("{nick} joined")));
    }

    fn frame(&mut self, id: ClientId, frame: Frame) {
        // Lines from a client that said bye still arrive; they are dropped.
        let Some(nick) = self.nick(id).map(str::to_owned) else {
            return;
        };
        let text = match frame {
            Frame::Line(text) => text,
            Frame::TooLong => {
                let text = format!(
                    "line too long: the limit is {} bytes; it was not sent",
                    self.max_line
                );
                return self.send_to(id, ServerLine::Error(&text));
            }
            Frame::InvalidUtf8 => {
                let text = "line is not valid UTF-8; it was not sent";
                return self.send_to(id, ServerLine::Error(text));
            }
        };
        match protocol::parse_command(&text) {
            None => {}
            Some(Command::Say(said)) => {
                // The sender gets the line too: its acknowledgement, in the
                // same order everyone else sees.
                self.broadcast(ServerLine::Chat {
                    from: &nick,
                    text: said,
                });
                if protocol::is_greeting(said) {
                    self.send_to(id, ServerLine::Notice(protocol::HI_REPLY));
                }
            }
            Some(Command::Quit) => {
                self.send_to(id, ServerLine::Notice(protocol::BYE_REPLY));
                self.leave(id, "said goodbye");
            }
            Some(Command::Unknown(name)) => {
                let text =
                    format!("unknown command /{name}; to send a line that starts with /, type //");
                self.send_to(id, ServerLine::Error(&text));
            }
        }
    }

    /// Removes a connection; a member's writer sends what is queued, then
    /// closes. Harmless for a connection already gone.
    fn leave(&mut self, id: ClientId, reason: &str) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        match conn.member {
            Some(member) => {
                log::info!("{id} {}: {} left: {reason}", conn.peer, member.nick);
                member.outbox.close();
                self.broadcast(ServerLine::Notice(&format!("{} left", member.nick)));
            }
            None => log::info!("{id} {}: closed before joining: {reason}", conn.peer),
        }
    }

    fn nick(&self, id: ClientId) -> Option<&str> {
        let member = self.conns.get(&id)?.member.as_ref()?;
        Some(&member.nick)
    }

    fn send_to(&mut self, id: ClientId, line: ServerLine<'_>) {
        let wire: Arc<str> = line.to_wire().into();
        if let Some(member) = self.conns.get(&id).and_then(|c| c.member.as_ref()) {
            if let Err(overflow) = member.outbox.push(wire) {
                self.too_slow.insert(id, overflow);
            }
        }
    }

    fn broadcast(&mut self, line: ServerLine<'_>) {
        self.broadcast_filtered(line, None);
    }

    fn broadcast_except(&mut self, except: ClientId, line: ServerLine<'_>) {
        self.broadcast_filtered(line, Some(except));
    }

    /// Sends one line to every member: the text is formatted once and each
    /// queue gets a pointer to it. A full queue never blocks the hub; its
    /// client is noted and cut once the current event is handled.
    fn broadcast_filtered(&mut self, line: ServerLine<'_>, except: Option<ClientId>) {
        let wire: Arc<str> = line.to_wire().into();
        for (&id, conn) in &self.conns {
            let Some(member) = &conn.member else { continue };
            if Some(id) == except {
                continue;
            }
            if let Err(overflow) = member.outbox.push(Arc::clone(&wire)) {
                self.too_slow.insert(id, overflow);
            }
        }
    }

    /// Cuts every client that could not keep up. Each departure is announced,
    /// which may overflow someone else, hence the loop.
    fn drop_slow_clients(&mut self) {
        while let Some(&id) = self.too_slow.keys().next() {
            let overflow = self.too_slow.remove(&id).expect("key just seen");
            let Some(conn) = self.conns.remove(&id) else {
                continue;
            };
            let nick = conn.member.as_ref().map_or("?", |m| m.nick.as_str());
            log::warn!(
                "{id} {}: {nick} disconnected: too slow ({} lines, {} bytes waiting)",
                conn.peer,
                overflow.messages,
                overflow.bytes
            );
            // Its writer may be stuck in a send the peer never reads: only
            // shutting the socket down frees it.
            let _ = conn.socket.shutdown(Shutdown::Both);
            if let Some(member) = conn.member {
                self.broadcast(ServerLine::Notice(&format!(
                    "{} left (too slow)",
                    member.nick
                )));
            }
        }
    }

    /// Says goodbye to every member and closes their connections; cuts the
    /// ones still in their handshake.
    fn shutdown(&mut self) {
        let notice: Arc<str> = ServerLine::Notice(SHUTDOWN_NOTICE).to_wire().into();
        for conn in self.conns.values() {
            match &conn.member {
                Some(member) => {
                    // A client too far behind to take one more line is cut
                    // by the server's deadline instead.
                    let _ = member.outbox.push(Arc::clone(&notice));
                    member.outbox.close();
                }
                None => {
                    let _ = conn.socket.shutdown(Shutdown::Both);
                }
            }
        }
    }
}
