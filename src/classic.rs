//! The original app's rules, for `chat-server --classic`: one reply to
//! every line, and nothing else.
//!
//! This project descends from a small server that greeted each client,
//! then answered each line it received with exactly one line: a greeting
//! to `hi`, a goodbye to `bye` (and a close), an echo to anything else.
//! Clients were written for that: send a line, read one line, repeat. The
//! chat ([`chat`](crate::chat)) breaks that rhythm on purpose: a client
//! sees its own line come back, what others say, who joins, notices. A
//! lock-step client reads one of those as the answer to its line, falls
//! one line behind, and soon waits for a reply that already came and went.
//!
//! [`Classic`] keeps such clients working. It is a second set of rules
//! beside [`Chat`](crate::chat::Chat), with the same five methods and the
//! same [`Output`]s, so the hub runs either one and everything around it
//! (TLS, admission, flood control, the writers and their limits) stays as
//! it is. No rooms, no nicks, no broadcast: each client talks to the
//! server alone and never sees another. The lines are bare text, with no
//! kind word in front (the original had none).
//!
//! Next: back to [`hub`](crate::hub), which runs these rules or the chat's.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::chat::{ClientId, CloseReason, Output, PeerCertificate};
use crate::line::Frame;
use crate::protocol::{self, BYE_REPLY, HI_REPLY, WELCOME};

/// What the original answered to any line but `hi` and `bye`, before the
/// line itself.
pub const ECHO_PREFIX: &str = "Server received your message: ";

/// The original app's rules: who is connected, and the one reply each line
/// gets.
#[derive(Debug)]
pub struct Classic {
    /// The longest line a client may send, named in the reply to a longer one.
    max_line: usize,
    /// Connected clients that have not said `bye`. Only to drop what comes
    /// after: lines of a client that said `bye` (which may still be on
    /// their way), and events about clients never heard of.
    clients: HashSet<ClientId>,
}

impl Classic {
    /// Nobody connected yet; lines past `max_line` bytes were refused by
    /// the reader, and are answered as such.
    pub fn new(max_line: usize) -> Classic {
        Classic {
            max_line,
            clients: HashSet::new(),
        }
    }

    /// Clients connected.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True if nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// A client was admitted: it gets the welcome, and nothing else until
    /// it speaks. A client certificate (with mutual TLS) changes nothing:
    /// the original had no names to take from it.
    pub fn join(
        &mut self,
        id: ClientId,
        peer: SocketAddr,
        _certificate: Option<PeerCertificate>,
        out: &mut Vec<Output>,
    ) {
        if !self.clients.insert(id) {
            log::warn!("{id} {peer}: joined twice; the second is ignored");
            return;
        }
        log::info!("{id} {peer}: joined (classic)");
        out.push(to(id, WELCOME));
    }

    /// The client sent a line, or something refused as one: exactly one
    /// reply, whatever it was, so that a client that reads one line per
    /// line it sends never falls out of step.
    pub fn line(&mut self, id: ClientId, frame: Frame, out: &mut Vec<Output>) {
        if !self.clients.contains(&id) {
            return;
        }
        let text = match frame {
            // A blank line is a line like any other: the original echoed
            // it (`Server received your message: ` and nothing after), and
            // its client waits for that reply. So do commands such as
            // `/quit`: the original knew of none.
            Frame::Line(text) => text,
            // The original echoed whatever bytes it got. Two kinds of line
            // cannot be echoed here: one past the limit (its bytes were
            // discarded as they came: that is what the limit is for) and
            // one that is not UTF-8 (never sent on: screens and the
            // project's client would choke on it). Each still gets the
            // echo's one line, so the client stays in step, with what
            // happened in place of the text.
            Frame::TooLong => format!("(a line longer than {} bytes, not shown)", self.max_line),
            Frame::InvalidUtf8 => "(a line that is not valid UTF-8, not shown)".to_string(),
        };
        if protocol::is_greeting(&text) {
            out.push(to(id, HI_REPLY));
        } else if is_farewell(&text) {
            out.push(to(id, BYE_REPLY));
            self.close(id, CloseReason::Quit, "said bye", out);
        } else {
            out.push(to(id, &format!("{ECHO_PREFIX}{text}")));
        }
    }

    /// The client sends faster than its rate limit: nothing is said. Its
    /// lines are delayed, not lost, so each still gets its reply, later;
    /// a warning would be one line more than it sent, read as the reply
    /// to its next line, and it would stay one line behind for good.
    pub fn throttled(&mut self, _id: ClientId, _out: &mut Vec<Output>) {}

    /// The connection ended: if the client had not said `bye`, it is
    /// closed. Nobody else is told: nobody else knew of it. `public` is
    /// for the chat's rooms, which classic mode has none of.
    pub fn left(
        &mut self,
        id: ClientId,
        _public: Option<&str>,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        self.close(id, CloseReason::Left, reason, out);
    }

    /// The server is stopping: everyone is closed, with no notice. A
    /// lock-step client reads an unasked-for line as the reply to the line
    /// it sends next (or, if it is waiting for one now, as that reply):
    /// the wrong answer either way. The close alone (TLS close_notify)
    /// tells it that the server has gone, as the original's ending did.
    pub fn shutdown(&mut self, out: &mut Vec<Output>) {
        for id in self.clients.drain() {
            out.push(Output::Close {
                id,
                why: CloseReason::Shutdown,
            });
        }
    }

    /// Forgets a client and closes its connection (`why`), if it was
    /// still here.
    fn close(&mut self, id: ClientId, why: CloseReason, reason: &str, out: &mut Vec<Output>) {
        if self.clients.remove(&id) {
            log::info!("{id}: left: {reason}");
            out.push(Output::Close { id, why });
        }
    }
}

/// True for the line the original answered with [`BYE_REPLY`] and a close:
/// `bye`, with any case and spaces around it, as the chat reads it too.
fn is_farewell(text: &str) -> bool {
    text.trim().eq_ignore_ascii_case("bye")
}

/// `text` as a line for one client: the bare text and its `\n`.
fn to(id: ClientId, text: &str) -> Output {
    Output::To {
        id,
        line: Arc::from(format!("{text}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: ClientId = ClientId(1);
    const BOB: ClientId = ClientId(2);

    fn peer() -> SocketAddr {
        "127.0.0.1:5555".parse().unwrap()
    }

    /// Rules with `ids` joined, their welcomes checked.
    fn with(ids: &[ClientId]) -> Classic {
        let mut classic = Classic::new(100);
        for &id in ids {
            let mut out = Vec::new();
            classic.join(id, peer(), None, &mut out);
            assert_eq!(out, vec![to(id, WELCOME)]);
        }
        classic
    }

    /// What the rules answer to one frame from `id`.
    fn answer(classic: &mut Classic, id: ClientId, frame: Frame) -> Vec<Output> {
        let mut out = Vec::new();
        classic.line(id, frame, &mut out);
        out
    }

    fn say(classic: &mut Classic, id: ClientId, text: &str) -> Vec<Output> {
        answer(classic, id, Frame::Line(text.to_string()))
    }

    #[test]
    fn a_client_is_welcomed_and_the_line_is_bare() {
        let mut classic = Classic::new(100);
        let mut out = Vec::new();
        classic.join(ALICE, peer(), None, &mut out);
        let [Output::To { id, line }] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(*id, ALICE);
        assert_eq!(&**line, "Welcome to the secure chat server!\n");
    }

    #[test]
    fn hi_gets_the_greeting_loosely_read() {
        let mut classic = with(&[ALICE]);
        for hi in ["hi", "Hi", " HI  ", "\thi"] {
            assert_eq!(say(&mut classic, ALICE, hi), vec![to(ALICE, HI_REPLY)]);
        }
    }

    #[test]
    fn anything_else_is_echoed_as_received() {
        let mut classic = with(&[ALICE]);
        for text in [
            "hello",
            "hi there",
            "  spaced  ",
            "/quit",
            "//x",
            "héllo 🙂",
        ] {
            assert_eq!(
                say(&mut classic, ALICE, text),
                vec![to(ALICE, &format!("Server received your message: {text}"))]
            );
        }
    }

    #[test]
    fn a_blank_line_gets_an_empty_echo() {
        let mut classic = with(&[ALICE]);
        assert_eq!(
            say(&mut classic, ALICE, ""),
            vec![to(ALICE, "Server received your message: ")]
        );
        assert_eq!(
            say(&mut classic, ALICE, "   "),
            vec![to(ALICE, "Server received your message:    ")]
        );
    }

    #[test]
    fn bye_says_goodbye_then_closes_and_what_follows_is_dropped() {
        let mut classic = with(&[ALICE]);
        assert_eq!(
            say(&mut classic, ALICE, " Bye "),
            vec![
                to(ALICE, BYE_REPLY),
                Output::Close {
                    id: ALICE,
                    why: CloseReason::Quit
                }
            ]
        );
        assert!(classic.is_empty());
        // Lines already on their way, and the connection's end: nothing.
        assert!(say(&mut classic, ALICE, "still here?").is_empty());
        let mut out = Vec::new();
        classic.left(ALICE, None, "client closed the connection", &mut out);
        assert!(out.is_empty(), "{out:?}");
        // `bye now` is not a goodbye.
        let mut classic = with(&[BOB]);
        assert_eq!(
            say(&mut classic, BOB, "bye now"),
            vec![to(BOB, "Server received your message: bye now")]
        );
    }

    #[test]
    fn refused_lines_get_one_reply_each_in_the_echo_shape() {
        let mut classic = with(&[ALICE]);
        assert_eq!(
            answer(&mut classic, ALICE, Frame::TooLong),
            vec![to(
                ALICE,
                "Server received your message: (a line longer than 100 bytes, not shown)"
            )]
        );
        assert_eq!(
            answer(&mut classic, ALICE, Frame::InvalidUtf8),
            vec![to(
                ALICE,
                "Server received your message: (a line that is not valid UTF-8, not shown)"
            )]
        );
    }

    #[test]
    fn clients_never_hear_of_each_other() {
        let mut classic = with(&[ALICE, BOB]);
        for out in [
            say(&mut classic, ALICE, "hello"),
            say(&mut classic, ALICE, "hi"),
            say(&mut classic, ALICE, "bye"),
        ] {
            assert!(
                out.iter().all(|o| match o {
                    Output::To { id, .. } | Output::Close { id, .. } => *id == ALICE,
                    _ => false,
                }),
                "{out:?}"
            );
        }
        // Bob is still here, and was told nothing of Alice's going either.
        assert_eq!(say(&mut classic, BOB, "hi"), vec![to(BOB, HI_REPLY)]);
    }

    #[test]
    fn being_throttled_says_nothing() {
        let mut classic = with(&[ALICE]);
        let mut out = Vec::new();
        classic.throttled(ALICE, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_lost_connection_is_closed_once_and_told_to_nobody() {
        let mut classic = with(&[ALICE, BOB]);
        let mut out = Vec::new();
        classic.left(ALICE, Some("too slow"), "stalled", &mut out);
        assert_eq!(
            out,
            vec![Output::Close {
                id: ALICE,
                why: CloseReason::Left
            }]
        );
        out.clear();
        classic.left(ALICE, None, "again", &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(classic.len(), 1);
    }

    #[test]
    fn shutdown_closes_everyone_without_a_notice() {
        let mut classic = with(&[ALICE, BOB]);
        let mut out = Vec::new();
        classic.shutdown(&mut out);
        out.sort_by_key(|o| match o {
            Output::Close { id, .. } => *id,
            other => panic!("only closes at shutdown, not {other:?}"),
        });
        assert_eq!(
            out,
            [ALICE, BOB].map(|id| Output::Close {
                id,
                why: CloseReason::Shutdown
            })
        );
        assert!(classic.is_empty());
    }

    #[test]
    fn events_about_strangers_change_nothing() {
        let mut classic = with(&[ALICE]);
        let stranger = ClientId(99);
        let mut out = Vec::new();
        classic.line(stranger, Frame::Line("hi".into()), &mut out);
        classic.throttled(stranger, &mut out);
        classic.left(stranger, None, "test", &mut out);
        // Joining twice keeps the first, and welcomes once.
        classic.join(ALICE, peer(), None, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(classic.len(), 1);
    }

    #[test]
    fn it_never_speaks_of_rooms() {
        let mut classic = with(&[ALICE, BOB]);
        let mut out = Vec::new();
        for text in ["hi", "hello", "", "bye"] {
            classic.line(ALICE, Frame::Line(text.into()), &mut out);
        }
        classic.line(BOB, Frame::TooLong, &mut out);
        classic.left(BOB, Some("too slow"), "test", &mut out);
        classic.shutdown(&mut out);
        assert!(
            out.iter()
                .all(|o| matches!(o, Output::To { .. } | Output::Close { .. })),
            "{out:?}"
        );
    }
}
