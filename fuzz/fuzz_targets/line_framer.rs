//! `LineFramer` on an arbitrary byte stream, cut into arbitrary reads.
//!
//! The input chooses the line limit and where the reads end. Every run
//! frames the same bytes three ways (as those reads, in one push, a byte at
//! a time) and checks that all three give the frames a straightforward
//! line-by-line reading of the stream gives.

#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use secure_chat::line::{Frame, LineFramer};

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(selector) = input.arbitrary::<u8>() else {
        return;
    };
    // Small limits, so that lines cross them often; and now and then the
    // largest one, which a `--max-line` from the command line can ask for.
    let max = match selector {
        0xff => usize::MAX,
        n => usize::from(n % 64),
    };
    let mut reads = Vec::new();
    while !input.is_empty() {
        let Ok(len) = input.arbitrary_len::<u8>() else {
            break;
        };
        let Ok(read) = input.bytes(len) else {
            break;
        };
        reads.push(read);
    }
    let stream = reads.concat();

    let as_read = frame(max, reads.iter().copied());
    for frame in &as_read {
        if let Frame::Line(line) = frame {
            assert!(
                line.len() <= max,
                "line of {} bytes, limit {max}",
                line.len()
            );
            assert!(!line.contains('\n'), "line holds a newline: {line:?}");
            assert!(
                !line.chars().any(|c| c.is_control() && c != '\t'),
                "line holds a control character: {line:?}"
            );
        }
    }
    assert_eq!(as_read, frame(max, [stream.as_slice()]), "one push differs");
    assert_eq!(
        as_read,
        frame(max, stream.chunks(1)),
        "a byte at a time differs"
    );
    assert_eq!(as_read, expected(max, &stream), "differs from the rules");
});

/// Frames `reads` in order, then ends the stream.
fn frame<'a>(max: usize, reads: impl IntoIterator<Item = &'a [u8]>) -> Vec<Frame> {
    let mut framer = LineFramer::new(max);
    let mut out = Vec::new();
    for read in reads {
        framer.push(read, &mut out);
    }
    out.extend(framer.finish());
    out
}

/// The rules of `secure_chat::line` applied to the whole stream at once:
/// lines end at `\n`, one `\r` before it goes, the limit comes first, then
/// UTF-8, then control characters (all but tab) and the marks and
/// overrides of writing direction are dropped. A last line without `\n`
/// counts if it is not empty.
fn expected(max: usize, stream: &[u8]) -> Vec<Frame> {
    let mut lines: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|last| last.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max {
                return Frame::TooLong;
            }
            match std::str::from_utf8(line) {
                Ok(text) => Frame::Line(
                    text.chars()
                        .filter(|&c| (!c.is_control() || c == '\t') && !is_direction(c))
                        .collect(),
                ),
                Err(_) => Frame::InvalidUtf8,
            }
        })
        .collect()
}

/// Unicode's bidirectional formatting characters, written out here as the
/// rule says them (UAX #9), not taken from the code under test.
fn is_direction(c: char) -> bool {
    matches!(
        c,
        '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}
