//! # secure-chat: a multi-user chat over TCP and TLS
//!
//! A server ([`server::Server`], the `chat-server` binary) and a client
//! ([`client`], the `chat-client` binary). Plain blocking sockets from
//! `std::net`, one OS thread per job, [rustls] for TLS and crossbeam
//! channels between threads: no async runtime, nothing hidden.
//!
//! ## Reading order
//!
//! 1. [`tls`]: certificates and keys from PEM files; what the client trusts.
//! 2. [`duplex`]: the TLS handshake, then one connection split so that one
//!    thread reads while another writes.
//! 3. [`line`](mod@line): bytes into lines, with a length limit and no terminal
//!    control characters.
//! 4. [`protocol`]: what a line means, and how the server's lines look.
//! 5. [`outbox`]: a client's outbound queue and the writer thread.
//! 6. [`hub`]: the one thread that owns the chat and fans messages out.
//! 7. [`server`]: the accept loop, sessions, limits, shutdown; with
//!    [`throttle`], the flood control its readers apply.
//! 8. [`client`]: the interactive client, and [`screen`], how it shows lines.
//!
//! [`x509`], [`error`] and [`logging`] are supporting cast.
//!
//! ## Who waits for whom
//!
//! Every blocking call waits on one thing only, and nothing a client does
//! can make another client's thread wait: a reader waits on its own socket
//! (and, if its client floods, on its own rate limit and on the hub's
//! bounded event queue); the hub waits on its event queue and on nothing
//! else; a writer waits on its own queue and its own socket. A client that
//! stops reading fills only its own queue, and is cut off when that is full.
//!
//! ## The threads, and the path of one message
//!
//! ```text
//!                      accept loop ── TCP socket ──> handshake thread
//!                                                    (TLS handshake, deadline;
//!                                                     starts the two below, ends)
//!
//!  alice's client                        server
//!  ──────────────                        ───────────────────────────────────────
//!  keyboard ─> writer ═══TLS═══> reader(alice) ──Event::Frame──┐
//!                                                              v
//!                                                             hub ── one Arc<str> line
//!                                                              │ try-push into each queue
//!              ┌───────────────────────────────────────────────┤
//!              v                                               v
//!  bob:  outbox ─> writer(bob) ═══TLS═══> reader ─> screen    outbox ─> writer(alice) ═══> alice
//! ```
//!
//! 1. Alice types `hello`. Her keyboard thread queues it; her writer
//!    thread encrypts it (rustls) and writes the TLS records to the socket.
//! 2. On the server, alice's **reader** thread waits on the socket without
//!    holding any lock, then locks her rustls connection just long enough
//!    to decrypt, and frames the bytes into lines ([`line::LineFramer`]).
//! 3. The line goes to the **hub** as an [`hub::Event`]. The hub is the
//!    only owner of who is connected; it formats `chat alice hello` once,
//!    as one shared `Arc<str>`.
//! 4. The hub pushes that pointer into every member's [`outbox::Outbox`],
//!    alice's too (her acknowledgement). A push never blocks: a queue that
//!    is full belongs to a client that stopped reading, and that client is
//!    cut off, so nobody else waits for it.
//! 5. Each member's **writer** thread takes everything waiting in its
//!    queue, encrypts the batch in one go and sends it with one system call.
//! 6. Bob's client decrypts, frames, and prints `<alice> hello`.
//!
//! The certificate check happens once per connection, in step 0: the
//! client's handshake ([`duplex::handshake`]) fails unless the server's
//! certificate chains to a trusted CA and names the host the client asked
//! for. There is no switch to skip it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod budget;
pub mod capacity;
pub mod client;
pub mod duplex;
pub mod error;
pub mod hub;
pub mod line;
pub mod logging;
pub mod outbox;
pub mod pool;
pub mod protocol;
pub mod queue;
pub mod screen;
pub mod server;
pub mod shard;
pub mod throttle;
pub mod tls;
pub mod x509;

pub use error::Error;
