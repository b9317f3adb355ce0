//! # secure-chat: a multi-user chat over TCP and TLS
//!
//! A server ([`server::Server`], the `chat-server` binary) and a client
//! ([`client`], the `chat-client` binary). Plain blocking sockets from
//! `std::net`, OS threads, [rustls] for TLS, and queues between threads: no
//! async runtime, nothing hidden. Each client has one thread of its own on
//! the server; a few writer threads send to everyone.
//!
//! ## Before the tour: the ladder
//!
//! Start in `examples/`: `echo-server` and `echo-client` show a verified
//! TLS handshake with `StreamOwned` and a thread per client in about 140
//! lines each; `card-chat` is the chat in the plainest shape (a thread per
//! client, a crossbeam hub) and names, measured, what that shape costs.
//! This crate is the same chat after answering each cost; the README's
//! "How it works" tells the steps and their reasons.
//!
//! ## Reading order: the path of one message
//!
//! The tour follows one chat line from alice's keyboard to bob's screen,
//! through the server as it really runs. Each step is one module (or the
//! part of it named); each module's documentation ends by naming the next.
//!
//! 1. [`line`](mod@line) and [`line_reader`]: on alice's reading thread,
//!    bytes into lines, with a length limit and no terminal control
//!    characters.
//! 2. [`protocol`]: what a line means, and how the server's lines look;
//!    `protocol::notice`, the notices a client acts on, as typed values.
//! 3. [`chat`]: the chat itself as a plain value: names, rooms, what each
//!    command does; an event in, what to send to whom out.
//! 4. [`elsewhere`]: the one seam to other servers. A server alone has
//!    none ([`elsewhere::Alone`]): its room lines go straight on.
//! 5. [`hub`]: the one thread that owns the chat, and hands each room
//!    line to the writers once, to each shard with someone in the room.
//! 6. [`budget`] and [`shard`]: what the lines waiting for the writers
//!    cost, and the writer threads: send what fits, remember the rest,
//!    wait until the kernel has room; cut the clients that stall, as
//!    [`slow_readers`], the slow-consumer policy in one place, decides.
//! 7. [`server`]: the accept loop, one thread per client (a handshake,
//!    then a reading thread for the connection's life), shutdown; with
//!    [`seats`], admission: a place in the chat, taken after the
//!    handshake and given back at the close; and [`queue`], the hub's
//!    inbox every reading thread hands its lines to.
//! 8. [`client`] (its reading side) and [`screen`]: bob's client frames
//!    the line and shows it.
//! 9. Last, and optional: `linked` (the `redis` feature, `--redis`):
//!    several servers as one chat through Redis, behind the seam of step 4.
//!
//! ## Supporting modules
//!
//! The connection the message travels on, and the rest of the programs:
//!
//! - [`tls`]: certificates and keys from PEM files; what the client
//!   trusts: CAs, or one server key (a pin, kept in [`known_servers`]).
//! - [`client::connect`]: whom the client talks to: the roots it trusts,
//!   the name it checks, the error it reports; then [`duplex`]: the
//!   handshake loop written for both sides, and one connection split so
//!   that one thread reads while another writes.
//! - [`outbox`]: the client's writer; [`terminal`]: the client for a
//!   person at a terminal (a line editor, reconnecting after a drop),
//!   waiting between attempts as [`backoff`] says.
//! - [`classic`]: the original app's one-reply-per-line rules, for
//!   `--classic`.
//! - [`throttle`] (flood control), [`capacity`] (what the machine
//!   allows), [`pool`] (threads kept between clients), for [`server`].
//! - [`store`]: what a server alone keeps across a restart (each room's
//!   history and topic, and its moderation rules), written by a thread of
//!   its own for the [`hub`].
//! - Moderation: who may moderate and what bans, mutes and kicks do is
//!   part of the chat (`chat::moderation`, a plain value like the rest);
//!   the server operators come from a file, [`operators`] (`--operators`,
//!   read again on SIGHUP); linked servers share rules through `linked`.
//! - [`sync`]: taking a lock a panicking thread left behind, and why
//!   that is safe for the crate's locks.
//! - [`metrics`] (`--metrics`): what the server counts, served to
//!   Prometheus over plain HTTP.
//! - [`x509`], [`error`] and [`logging`].
//!
//! ## One name for each thing
//!
//! - A **connection** is one TCP stream with TLS inside; rustls' state for
//!   it is a `rustls::Connection` (`conn` in the code). After the
//!   handshake it is split into a [`duplex::ReadHalf`] and a
//!   [`duplex::WriteHalf`]; a [`line_reader::LineReader`] is the read half
//!   in lines.
//! - On the client, [`client::Connected`] is a connection whose handshake
//!   is done and whose server was verified. Its [`outbox::Outbox`] is
//!   where lines wait to be sent; the writer thread holds the other end,
//!   the [`outbox::Drain`].
//! - On the server, each connection is first a *handshake* (on a handshake
//!   thread), then a *reader* (on its reading thread, for the rest of its
//!   life), and a *client* of one writer *shard*, which knows it by its
//!   [`shard::Slot`]. A [`chat::ClientId`] names it in the chat and the
//!   logs. A *member* is a client in the chat, with a nick and a room.
//!
//! ## The threads, and the path of one message
//!
//! ```text
//!  clients                               server
//!  ───────                               ─────────────────────────────────────────────
//!                      accept loop ── TCP socket ──> handshake thread: TLS handshake
//!                                                    (with a deadline), admission, then
//!                                                    hands the two halves on
//!  alice: keyboard ─> writer ═══TLS═══> reading thread (alice) ──Event::Frame──> hub
//!                                                                          (the Chat)
//!                                                                                 │
//!                                              one Work::Deliver per shard with   │
//!                                              someone in the room, not per client│
//!                                                       ┌─────────────────────────┤
//!                                                       v                         v
//!                                                    shard 0                   shard 1
//!  bob:   screen <─ reader <═══════════TLS══════ (alice, bob, ...)        (carol, ...)
//! ```
//!
//! 1. Alice types `hello`. Her keyboard thread queues it; her writer
//!    thread encrypts it (rustls) and writes the TLS records to the socket.
//! 2. On the server, alice's **reading thread** waits on the socket without
//!    holding any lock, then locks her rustls connection just long enough
//!    to decrypt and frame the bytes into lines ([`line::LineFramer`],
//!    inside her [`line_reader::LineReader`]).
//! 3. The line goes to the **hub** as a [`hub::Event`], through a bounded
//!    queue. The hub hands it to the [`chat::Chat`], the only owner of who
//!    is where, which answers with one [`chat::Output`]: `chat alice hello`,
//!    formatted once, for her room. A server alone shows it at once (the
//!    room keeps it in its history); for each writer shard with someone in
//!    the room, the hub queues one delivery: the line (one
//!    [`budget::Outgoing`]) and the room. At the end of its round, each
//!    shard gets its batch with one lock and at most one wake-up.
//! 4. The **shard** adds a pointer to the line to the queue of each of its
//!    clients in the room, alice included (her acknowledgement). Then, for
//!    each, it encrypts what waits into as few records as it can and sends
//!    them without waiting. What the kernel does not take stays pending,
//!    and the shard hears from epoll when that socket has room again.
//! 5. Bob's client decrypts, frames, and prints `<alice> hello`.
//!
//! The certificate check happens once per connection, before all this:
//! the client's handshake ([`duplex::handshake`], called by
//! [`client::connect`]) fails unless the server's certificate chains to a
//! trusted CA, is within its dates, and names the host the client asked for
//! (or `--server-name`). rustls checks all three inside
//! `process_new_packets`, when it reads the server's CertificateVerify.
//! There is no switch to skip it. The one alternative to a CA is a pin
//! (`--pin`, or a key the user accepted once, kept in [`known_servers`]):
//! then exactly that key is trusted, names and dates are not checked, and
//! the server must still prove it holds the key ([`tls`] says what that
//! gives up).
//!
//! ## Who waits for whom
//!
//! No thread waits on the network for another. Each blocking call waits on
//! its own socket, its own queue or clock, or for a lock that is never
//! held across a network wait:
//!
//! - a reading thread waits on its own socket; if its client floods, on
//!   its own rate limit; and, whenever the hub's queue (4096 events, shared
//!   by every reader) is full, for room in it;
//! - the hub waits on its queue, and, only when more lines wait for the
//!   writers than the memory budget allows, for the writers to catch up;
//! - a shard waits in one epoll wait: for any of its sockets to have room,
//!   for new work, or for its next deadline; it never waits on one socket;
//! - with a data directory, the store's thread waits on its queue and on
//!   the disk; nobody waits for it: a line that finds its queue full is
//!   dropped and counted.
//!
//! The locks are short: a reading thread and its shard share the
//! connection's lock (one holds it to decrypt a read, the other to encrypt
//! a batch), and everyone who hands a shard work takes its inbox's lock.
//!
//! So a client that stops reading makes nobody wait: its lines pile up in
//! its shard's queue until it is cut as stalled or too far behind. With
//! the default limits it cannot hold more than half the memory budget
//! (`--max-pending`), so it cannot pause the hub by itself. What makes
//! others wait is by design: a flood past the memory budget, or several
//! clients behind at once with that much waiting for them, pauses the hub,
//! the hub's queue fills, every reading thread waits for room in it, and
//! TCP slows every sender down; no line is dropped, and cutting the
//! stalled ones ends the pause. Flood control (`--rate`) keeps one client
//! from filling the hub's queue by itself.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod budget;
pub mod capacity;
pub mod chat;
pub mod classic;
pub mod client;
pub mod duplex;
pub mod elsewhere;
pub mod error;
pub mod hub;
pub mod known_servers;
pub mod line;
pub mod line_reader;
#[cfg(feature = "redis")]
pub mod linked;
pub mod logging;
pub mod metrics;
pub mod operators;
pub mod outbox;
pub mod pool;
pub mod protocol;
pub mod queue;
pub mod screen;
pub mod seats;
pub mod server;
pub mod shard;
pub mod slow_readers;
pub mod store;
pub mod sync;
pub mod terminal;
pub mod throttle;
pub mod tls;
pub mod x509;

pub use error::Error;
