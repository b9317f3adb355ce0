//! The protocol's parsers on arbitrary text: a client's command line, nick
//! and room names, the lines a server sends, and the notices and refusals
//! in them that a client acts on.
//!
//! Beyond not panicking, each check is a promise `secure_chat::protocol`
//! makes in its documentation or its tests; nothing stricter.

#![no_main]

use libfuzzer_sys::fuzz_target;
use secure_chat::protocol::{
    command_info, parse_command, Command, CommandError, NameError, Nick, Notice, Refusal, Room,
    ServerLine, MAX_NAME_LEN, WORDING,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    command(text);
    names(text);
    // What a client reads arrives a line at a time, without its `\n`.
    for line in text.split('\n') {
        server_line(line);
        let body = line
            .strip_prefix("notice ")
            .or_else(|| line.strip_prefix("error "))
            .unwrap_or(line);
        notice(body);
        refusal(body);
    }
});

fn command(line: &str) {
    match parse_command(line) {
        Ok(None) => assert!(line.trim().is_empty(), "{line:?} ignored"),
        Ok(Some(command)) => {
            assert!(!line.trim().is_empty(), "blank {line:?} parsed");
            match command {
                Command::Say(text) => {
                    // As typed, or with the first `/` of a `//` dropped.
                    assert!(text == line || (line.starts_with("//") && text == &line[1..]));
                }
                Command::Nick(word)
                | Command::Join(word)
                | Command::Whois(word)
                | Command::Rooms(Some(word))
                | Command::Who(Some(word)) => {
                    assert!(!word.is_empty() && !word.contains(char::is_whitespace));
                }
                Command::Msg { to, text } => {
                    assert!(!to.is_empty() && !to.contains(char::is_whitespace));
                    assert!(!text.is_empty() && text == text.trim());
                }
                Command::Me(text) => assert!(!text.is_empty() && text == text.trim()),
                Command::Topic(arg) | Command::Help(arg) | Command::Quit(arg) => {
                    if let Some(arg) = arg {
                        assert!(!arg.is_empty() && arg == arg.trim());
                    }
                }
                // The rest carry nothing that could be checked here.
                _ => {}
            }
        }
        Err(error) => {
            assert!(line.starts_with('/') && !line.starts_with("//"));
            // The message is shown to the user: it must build.
            let message = error.to_string();
            if let CommandError::MissingArgument(info) = error {
                assert!(message.ends_with(info.usage), "{message:?}");
            }
        }
    }
    if let Some(info) = command_info(line) {
        assert_eq!(&info.name[1..], line.trim_start_matches('/'));
    }
}

fn names(name: &str) {
    match Nick::parse(name) {
        Ok(nick) => {
            assert_eq!(nick.as_str(), name);
            assert!((1..=MAX_NAME_LEN).contains(&name.len()));
            assert!(name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            assert_eq!(nick.key(), name.to_ascii_lowercase());
            assert_eq!(nick.to_string(), name);
        }
        Err(error) => {
            assert_ne!(error, NameError::NoHash);
            let _ = error.to_string();
        }
    }
    // A room is `#` and then what a nick may be.
    match (Room::parse(name), name.strip_prefix('#')) {
        (Ok(room), Some(bare)) => {
            assert_eq!(room.as_str(), name);
            assert!(Nick::parse(bare).is_ok());
            assert_eq!(room.key(), name.to_ascii_lowercase());
        }
        (Err(error), Some(bare)) => assert_eq!(Err(error), Nick::parse(bare).map(|_| ())),
        (Err(error), None) => assert_eq!(error, NameError::NoHash),
        (Ok(_), None) => panic!("room {name:?} without #"),
    }
}

fn server_line(line: &str) {
    let Some(parsed) = ServerLine::parse(line) else {
        return;
    };
    // A line that parses goes back on the wire as one line, and reads back
    // as the same value: a client never sees a line change meaning when a
    // server relays it.
    let wire = parsed.to_wire();
    let body = wire.strip_suffix('\n').expect("to_wire ends with \\n");
    assert!(!body.contains('\n'), "{wire:?}");
    assert_eq!(ServerLine::parse(body), Some(parsed), "{wire:?}");
    assert_eq!(
        ServerLine::parse(body).map(|again| again.to_wire()),
        Some(wire)
    );
}

/// A notice read as a typed value is written back as text that reads as
/// the same value (not always the same text: `007` is written `7`).
fn notice(text: &str) {
    let Some(read) = Notice::parse(text) else {
        return;
    };
    let written = read.to_string();
    assert!(!written.contains('\n'), "{written:?}");
    assert!(
        Notice::readings_in(&WORDING, &written).contains(&read),
        "{text:?} read as {read:?}, written {written:?}"
    );
    if let Notice::Who(list) = &read {
        for name in &list.names {
            assert!(Nick::parse(name).is_ok(), "{name:?} in {text:?}");
        }
    }
}

/// Likewise for a refusal; and only the reclaim refused does not pass.
fn refusal(text: &str) {
    let Some(read) = Refusal::parse(text) else {
        return;
    };
    let written = read.to_string();
    assert_eq!(Refusal::parse(&written), Some(read.clone()), "{text:?}");
}
