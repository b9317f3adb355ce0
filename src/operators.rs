//! The server operators file (`--operators FILE`): one `sha256:` key
//! fingerprint a line, read at start and again on SIGHUP, and the handle
//! that hands each new list to the hub. Not what operators may do: that
//! is the chat's (`chat::moderation`), which owns who is one.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::hub::Event;
use crate::queue;
use crate::sync::lock;
use crate::tls::Fingerprint;

/// Reads an operators file: one fingerprint a line, in the form
/// chat-server logs and `chat-client --pin` takes (`sha256:` and 43
/// base64 characters); `#` starts a comment, blank lines are skipped.
/// The error names the file and the first bad line.
pub fn load(path: &Path) -> Result<Vec<Fingerprint>, String> {
    let text = fs::read_to_string(path)
        .map_err(|err| format!("cannot read the operators file {}: {err}", path.display()))?;
    parse(&text).map_err(|why| format!("the operators file {}: {why}", path.display()))
}

/// Reads an operators file's text (see [`load`]).
pub fn parse(text: &str) -> Result<Vec<Fingerprint>, String> {
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        if line.is_empty() {
            continue;
        }
        let key = line
            .parse::<Fingerprint>()
            .map_err(|why| format!("line {}: {why}", number + 1))?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Hands the server operators to a running server's hub: the list given
/// before the server starts reaches the hub as it starts; each later one
/// at once. Clones share it.
#[derive(Clone, Default)]
pub struct Operators {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    /// The last list given, for a hub that starts later.
    keys: Option<Vec<Fingerprint>>,
    /// The hub's inbox, once it runs.
    hub: Option<queue::Sender<Event>>,
}

impl Operators {
    /// The server operators from now on.
    pub fn replace(&self, keys: Vec<Fingerprint>) {
        let hub = {
            let mut shared = lock(&self.shared);
            shared.keys = Some(keys.clone());
            shared.hub.clone()
        };
        // Outside the lock: the hub's queue may be full for a moment.
        if let Some(hub) = hub {
            // A hub that is gone has stopped: nobody is left to moderate.
            let _ = hub.send(Event::Operators(keys));
        }
    }

    /// The hub runs and reads `hub`: it gets the list given so far, and
    /// every later one.
    pub(crate) fn connect(&self, hub: queue::Sender<Event>) {
        let keys = {
            let mut shared = lock(&self.shared);
            shared.hub = Some(hub.clone());
            shared.keys.clone()
        };
        if let Some(keys) = keys {
            let _ = hub.send(Event::Operators(keys));
        }
    }
}

impl std::fmt::Debug for Operators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Operators")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";

    #[test]
    fn one_key_a_line_with_comments_and_blanks() {
        let text = format!("# the operators\n\n{KEY}  # alice\n   \n{KEY}\n");
        let keys = parse(&text).unwrap();
        assert_eq!(keys, [KEY.parse::<Fingerprint>().unwrap()]);
        assert_eq!(parse("# nobody\n").unwrap(), []);
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = parse(&format!("{KEY}\n\nsha256:nope\n")).unwrap_err();
        assert!(
            err.starts_with("line 3: \"sha256:nope\" is not a fingerprint"),
            "{err}"
        );
        let err = load(Path::new("/nonexistent/operators")).unwrap_err();
        assert!(err.starts_with("cannot read the operators file /nonexistent/operators"));
    }

    #[test]
    fn a_list_given_before_the_hub_runs_reaches_it_as_it_starts() {
        let operators = Operators::default();
        let key: Fingerprint = KEY.parse().unwrap();
        operators.replace(vec![key]);
        let (sender, receiver) = queue::bounded(4);
        operators.connect(sender);
        operators.replace(Vec::new());
        let mut got = Vec::new();
        assert!(receiver.recv_batch(&mut got, 4));
        match &got[..] {
            [Event::Operators(first), Event::Operators(second)] => {
                assert_eq!(first, &[key]);
                assert!(second.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}
