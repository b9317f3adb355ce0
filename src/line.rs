//! Bounded line framing: bytes in, complete lines out.
//!
//! Owns the limits on what one line may be (length, UTF-8, control
//! characters). Knows nothing of sockets or TLS, so every rule is unit-tested.
//!
//! Next: [`line_reader`](crate::line_reader), the read half and the framer
//! together.

/// Default for the longest line, in bytes, not counting `\n` or `\r\n`.
///
/// 4 KiB is several screenfuls of chat: long enough for any message a person
/// types or pastes, short enough that a client sending megabytes without a
/// newline costs the server at most this much memory.
pub const MAX_LINE_LEN: usize = 4096;

/// One result of framing: a line, or the reason a line was refused.
///
/// Refusals are values, not errors: the connection carries on and the sender
/// is told why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line: valid UTF-8, terminator and control characters removed.
    Line(String),
    /// A line longer than the limit; its bytes were discarded as they arrived.
    TooLong,
    /// A line that is not valid UTF-8; nothing of it is passed on.
    InvalidUtf8,
}

/// Splits a byte stream into [`Frame`]s, holding at most one partial line.
///
/// The partial line lives in a `Vec` that is handed over (not copied) when
/// the line completes, so an idle connection holds no buffer at all.
#[derive(Debug)]
pub struct LineFramer {
    /// Bytes of the line not yet ended by `\n`.
    partial: Vec<u8>,
    /// The longest line accepted, in bytes, without its terminator.
    max_len: usize,
    /// True after an over-long line was reported, until its `\n` arrives.
    discarding: bool,
}

impl LineFramer {
    /// A framer that refuses lines longer than `max_len` bytes.
    pub fn new(max_len: usize) -> LineFramer {
        LineFramer {
            partial: Vec::new(),
            max_len,
            discarding: false,
        }
    }

    /// Feeds bytes from the stream, appending each frame they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut impl Extend<Frame>) {
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let (chunk, ends_line) = match piece.strip_suffix(b"\n") {
                Some(chunk) => (chunk, true),
                None => (piece, false),
            };
            // One byte of slack for the `\r` of a `\r\n` that has not
            // arrived whole; `finish_line` applies the exact limit. The
            // slack saturates: a limit of `usize::MAX` (`--max-line` takes
            // any number) means no limit, where a plain `+ 1` would panic in
            // a debug build and wrap to 0 in release, refusing every line.
            let limit = self.max_len.saturating_add(1);
            if self.discarding || self.partial.len() + chunk.len() > limit {
                self.too_long(ends_line, out);
                continue;
            }
            self.partial.extend_from_slice(chunk);
            if ends_line {
                out.extend([self.finish_line()]);
            }
        }
    }

    /// Part of a line over the limit: reported once, then dropped as it
    /// arrives, never kept, until the line's `\n`.
    fn too_long(&mut self, ends_line: bool, out: &mut impl Extend<Frame>) {
        if !self.discarding {
            self.partial = Vec::new();
            out.extend([Frame::TooLong]);
        }
        self.discarding = !ends_line;
    }

    /// Ends the stream: a last line without `\n` is still a line.
    ///
    /// Call it only when the peer closed cleanly; after an abrupt
    /// disconnect a partial line may be cut anywhere.
    pub fn finish(&mut self) -> Option<Frame> {
        let pending = !self.partial.is_empty() && !self.discarding;
        self.discarding = false;
        if pending {
            Some(self.finish_line())
        } else {
            self.partial = Vec::new();
            None
        }
    }

    fn finish_line(&mut self) -> Frame {
        let mut bytes = std::mem::take(&mut self.partial);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if bytes.len() > self.max_len {
            return Frame::TooLong;
        }
        match String::from_utf8(bytes) {
            Ok(text) => Frame::Line(strip_controls(text)),
            Err(_) => Frame::InvalidUtf8,
        }
    }
}

/// Removes every control character except tab: C0 (ESC among them), DEL and
/// C1; and Unicode's marks and overrides of writing direction.
///
/// Control characters are what terminals interpret as commands (colours,
/// cursor moves, window titles, even answer-back), so no peer may put them
/// on another user's screen. The direction controls reorder what follows
/// them on the line: `<mallory> ` then a right-to-left override can make
/// the rest of a line read as if someone else had said it, or hide what a
/// command really is. The line is returned untouched, without copying, in
/// the common case where it has none.
pub fn strip_controls(text: String) -> String {
    if text.chars().any(is_forbidden) {
        text.chars().filter(|&c| !is_forbidden(c)).collect()
    } else {
        text
    }
}

/// True for what [`strip_controls`] removes: no line that reaches a screen may
/// hold it.
pub(crate) fn is_forbidden(c: char) -> bool {
    (c.is_control() && c != '\t') || is_direction_control(c)
}

/// The bidirectional formatting characters (Unicode's UAX #9): the marks
/// LRM, RLM and ALM, the embeddings and overrides LRE to RLO with their
/// end PDF, and the isolates LRI to PDI.
fn is_direction_control(c: char) -> bool {
    matches!(
        c,
        '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut framer = LineFramer::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, &mut out);
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.to_string())
    }

    #[test]
    fn splits_lines_and_accepts_crlf() {
        assert_eq!(
            frames(100, &[b"one\ntwo\r\nthree\n"]),
            vec![line("one"), line("two"), line("three")]
        );
    }

    #[test]
    fn joins_lines_split_across_reads() {
        assert_eq!(
            frames(100, &[b"he", b"llo\r", b"\nwor", b"ld\n"]),
            vec![line("hello"), line("world")]
        );
    }

    #[test]
    fn keeps_empty_lines_and_unicode() {
        assert_eq!(
            frames(100, &["\nhéllo 世界 🙂\n".as_bytes()]),
            vec![line(""), line("héllo 世界 🙂")]
        );
    }

    #[test]
    fn utf8_split_across_reads_is_rejoined() {
        let bytes = "世界\n".as_bytes();
        assert_eq!(frames(100, &[&bytes[..2], &bytes[2..]]), vec![line("世界")]);
    }

    #[test]
    fn line_of_exactly_the_limit_passes_and_one_more_byte_does_not() {
        assert_eq!(frames(5, &[b"12345\n"]), vec![line("12345")]);
        assert_eq!(frames(5, &[b"12345\r\n"]), vec![line("12345")]);
        assert_eq!(frames(5, &[b"123456\n"]), vec![Frame::TooLong]);
        assert_eq!(frames(5, &[b"123456\r\n"]), vec![Frame::TooLong]);
    }

    #[test]
    fn over_long_line_is_reported_once_and_the_next_line_survives() {
        let long = vec![b'x'; 20];
        assert_eq!(
            frames(5, &[&long, &long, &long, b"tail\nok\n"]),
            vec![Frame::TooLong, line("ok")]
        );
    }

    #[test]
    fn over_long_line_is_never_buffered() {
        let mut framer = LineFramer::new(8);
        let mut out = Vec::new();
        for _ in 0..1000 {
            framer.push(&[b'y'; 1000], &mut out);
            assert!(
                framer.partial.capacity() <= 64,
                "buffered an over-long line"
            );
        }
        assert_eq!(out, vec![Frame::TooLong]);
    }

    #[test]
    fn invalid_utf8_is_refused_and_framing_continues() {
        assert_eq!(
            frames(100, &[b"ok\n\xff\xfe bad\nfine\n"]),
            vec![line("ok"), Frame::InvalidUtf8, line("fine")]
        );
    }

    #[test]
    fn control_characters_are_removed_but_tab_stays() {
        assert_eq!(
            frames(100, &["a\x1b[31mred\x07\tb\u{9b}c\x7f\n".as_bytes()]),
            vec![line("a[31mred\tbc")]
        );
    }

    #[test]
    fn direction_controls_are_removed_and_other_scripts_stay() {
        // "<mallory> " then an override: the rest would read backwards.
        let forged = "hi \u{202E}<alice> yes\u{202C} \u{2067}x\u{2069}\u{200F}\u{061C}\n";
        assert_eq!(
            frames(100, &[forged.as_bytes()]),
            vec![line("hi <alice> yes x")]
        );
        // Right-to-left text itself, and a joiner, are words, not controls.
        let words = "שלום مرحبا a\u{200D}b\n";
        assert_eq!(
            frames(100, &[words.as_bytes()]),
            vec![line("שלום مرحبا a\u{200D}b")]
        );
    }

    #[test]
    fn a_lone_carriage_return_is_not_a_line_end() {
        assert_eq!(frames(100, &[b"a\rb\n"]), vec![line("ab")]);
    }

    #[test]
    fn finish_returns_an_unterminated_last_line() {
        let mut framer = LineFramer::new(10);
        let mut out = Vec::new();
        framer.push(b"done\nhalf", &mut out);
        assert_eq!(out, vec![line("done")]);
        assert_eq!(framer.finish(), Some(line("half")));
        assert_eq!(framer.finish(), None);
    }

    #[test]
    fn the_largest_limit_accepts_lines_instead_of_overflowing() {
        // Found by the line_framer fuzz target: `max_len + 1` overflowed.
        assert_eq!(
            frames(usize::MAX, &[b"one\r", b"\ntwo\n"]),
            vec![line("one"), line("two")]
        );
    }

    #[test]
    fn finish_after_an_over_long_line_returns_nothing() {
        let mut framer = LineFramer::new(3);
        let mut out = Vec::new();
        framer.push(b"toolong", &mut out);
        assert_eq!(out, vec![Frame::TooLong]);
        assert_eq!(framer.finish(), None);
    }
}
