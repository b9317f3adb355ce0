//! The servers a user trusts by their key: trust on first use, as SSH's
//! `known_hosts`.
//!
//! When the client meets a server whose certificate its CA does not vouch
//! for, and it runs on a terminal, it shows the server key's fingerprint
//! and asks the user once (see
//! [`client::connect_or_ask`](crate::client::connect_or_ask)). A yes is
//! written here, and from then on that server is trusted by that key, as
//! if `--pin` were given: a later connection whose key differs is refused
//! loudly, never silently accepted or asked about again.
//!
//! The file, `$XDG_CONFIG_HOME/secure-chat/known_servers` (by default
//! `~/.config/secure-chat/known_servers`), holds one server a line:
//!
//! ```text
//! # comments and blank lines are allowed
//! chat.example.org:8080 sha256:J6mC3a0QkVxk3dX0n4XGzW5M1Xc5m8Nq2h5k0jJp1a4
//! ```
//!
//! The server is `HOST:PORT` as given to `--addr`, written one way however
//! it was spelt ([`server_key`]); the fingerprint is a [`Fingerprint`].
//! Removing a line forgets the server. The client writes the file with
//! mode 0600, through a symbolic link if the path is one, and one client at
//! a time ([`KnownServers::remember`]).
//!
//! Everything but [`KnownServers::load`] and [`KnownServers::remember`] is
//! a pure function on the file's text, so that the rules (what a line is,
//! which one answers, what a changed key is) are tested without files.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::tls::Fingerprint;

/// One line of the file: a server and the key it is trusted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `HOST:PORT`, as [`server_key`] writes it.
    pub server: String,
    /// The fingerprint of its key.
    pub fingerprint: Fingerprint,
    /// Its line number in the file, from 1.
    pub line: usize,
}

/// A line of the file that is not a server, a comment or blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// Its line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

/// What the file says about a server and the key it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known<'a> {
    /// The file does not name the server.
    Unknown,
    /// The file names it with this very key.
    Same(&'a Entry),
    /// The file names it with another key: the server's key changed, or
    /// someone else answers in its place.
    Changed(&'a Entry),
}

/// The name a server is filed under, so that one server has one line
/// however `--addr` spelt it: the host in lower case and without a final
/// dot (DNS names are case-insensitive, and `host.` is `host`), an IP
/// address in its standard form, this machine's own names (`localhost`,
/// `127.0.0.1`, `[::1]`) as `localhost`, and the port as a number (`08080`
/// is 8080). What is not `HOST:PORT` stays as given, in lower case, for
/// the caller to refuse.
pub fn server_key(addr: &str) -> String {
    let as_given = || addr.to_ascii_lowercase();
    let Some((host, port)) = addr.rsplit_once(':') else {
        return as_given();
    };
    let Ok(port) = port.parse::<u16>() else {
        return as_given();
    };
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    match host.parse::<IpAddr>() {
        Ok(ip) if ip == Ipv4Addr::LOCALHOST || ip == Ipv6Addr::LOCALHOST => {
            format!("localhost:{port}")
        }
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Ok(ip) => format!("{ip}:{port}"),
        Err(_) => format!("{host}:{port}"),
    }
}

/// True if `host` is an IPv4 address written in one of the short or
/// numeric forms the system's resolver takes (`127.1`, `0x7f.0.0.1`,
/// `127.000.000.001`, `2130706433`) rather than the dotted four numbers:
/// such a host reaches an address the file would file under another name,
/// and a client asks it to be written in full.
pub fn is_odd_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    let numeric = |part: &&str| {
        let digits = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X"));
        match digits {
            Some(hex) => hex.chars().all(|c| c.is_ascii_hexdigit()),
            None => !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()),
        }
    };
    parts.len() <= 4 && parts.iter().all(numeric) && host.parse::<Ipv4Addr>().is_err()
}

/// Every server in the file's text, in order.
///
/// Strict on purpose: a line that cannot be read is an error, not skipped.
/// A damaged line for a server would otherwise make that server unknown,
/// and the client would ask about it afresh instead of refusing a changed
/// key. A server named twice with two keys is an error for the same
/// reason (which line would count?); twice with one key (spelt two ways
/// by a file written before [`server_key`] wrote one way) is that key.
pub fn parse(text: &str) -> Result<Vec<Entry>, LineError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let error = |why: String| LineError { line, why };
        let mut words = content.split_whitespace();
        let (Some(server), Some(fingerprint), None) = (words.next(), words.next(), words.next())
        else {
            return Err(error(format!(
                "expected `HOST:PORT sha256:FINGERPRINT`, found {content:?}"
            )));
        };
        if !is_server(server) {
            return Err(error(format!("{server:?} is not HOST:PORT")));
        }
        let fingerprint: Fingerprint = fingerprint.parse().map_err(error)?;
        let server = server_key(server);
        if let Some(first) = entries.iter().find(|entry| entry.server == server) {
            if first.fingerprint == fingerprint {
                continue;
            }
            return Err(error(format!(
                "{server} is already on line {} with another key; keep one of the two",
                first.line
            )));
        }
        entries.push(Entry {
            server,
            fingerprint,
            line,
        });
    }
    Ok(entries)
}

/// True if `server` can be a line's first word: `HOST:PORT` with a numeric
/// port and nothing that would split or comment out the line.
fn is_server(server: &str) -> bool {
    let Some((host, port)) = server.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !server.starts_with('#')
        && !server.chars().any(char::is_whitespace)
        && port.parse::<u16>().is_ok()
}

/// The entry for `server` (as [`server_key`] writes it), if any.
pub fn lookup<'a>(entries: &'a [Entry], server: &str) -> Option<&'a Entry> {
    let server = server_key(server);
    entries.iter().find(|entry| entry.server == server)
}

/// Whether `presented` is the key the file trusts for `server`.
pub fn check<'a>(entries: &'a [Entry], server: &str, presented: &Fingerprint) -> Known<'a> {
    match lookup(entries, server) {
        None => Known::Unknown,
        Some(entry) if entry.fingerprint == *presented => Known::Same(entry),
        Some(entry) => Known::Changed(entry),
    }
}

/// What a new file starts with.
const HEADER: &str = "\
# Servers chat-client trusts by their key, one a line: HOST:PORT sha256:FINGERPRINT
# Delete a server's line to forget it (after checking with its operator).
";

/// The text with `server` trusted by `fingerprint`: a line appended (and
/// the header, to a file that is empty). Already there with this key: the
/// text unchanged. There with another key: an error, for the caller must
/// not replace a trusted key without the user removing it first.
pub fn add(text: &str, server: &str, fingerprint: &Fingerprint) -> Result<String, LineError> {
    let entries = parse(text)?;
    let next_line = text.lines().count() + 1;
    match check(&entries, server, fingerprint) {
        Known::Same(_) => return Ok(text.to_string()),
        Known::Changed(entry) => {
            return Err(LineError {
                line: entry.line,
                why: format!(
                    "{} is trusted with another key ({}), not {fingerprint}",
                    entry.server, entry.fingerprint
                ),
            })
        }
        Known::Unknown => {}
    }
    if !is_server(server) {
        return Err(LineError {
            line: next_line,
            why: format!("{server:?} is not HOST:PORT"),
        });
    }
    let mut text = text.to_string();
    if text.trim().is_empty() {
        text = HEADER.to_string();
    } else if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{} {fingerprint}\n", server_key(server)));
    Ok(text)
}

/// Where the file is by default: `$XDG_CONFIG_HOME/secure-chat/known_servers`,
/// else `$HOME/.config/secure-chat/known_servers`; `None` if neither is
/// set. The XDG base directory rules ignore a relative `XDG_CONFIG_HOME`,
/// and so does this.
pub fn default_path(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |dir: OsString| Some(PathBuf::from(dir)).filter(|dir| dir.is_absolute());
    let config = xdg_config_home
        .and_then(absolute)
        .or_else(|| home.and_then(absolute).map(|home| home.join(".config")))?;
    Some(config.join("secure-chat").join("known_servers"))
}

/// Why the file could not be used.
#[derive(Debug)]
pub enum FileError {
    /// It could not be read, or written.
    Io {
        /// The file.
        path: PathBuf,
        /// "read" or "write".
        doing: &'static str,
        /// Why the operating system refused.
        source: io::Error,
    },
    /// A line of it is wrong, or the change asked for would replace a key.
    Line {
        /// The file.
        path: PathBuf,
        /// The line and what is wrong.
        error: LineError,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Io { path, doing, .. } => write!(f, "cannot {doing} {}", path.display()),
            FileError::Line { path, error } => write!(f, "{}, {error}", path.display()),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileError::Io { source, .. } => Some(source),
            FileError::Line { .. } => None,
        }
    }
}

/// The known-servers file, as read when the client started.
#[derive(Debug, Clone)]
pub struct KnownServers {
    path: PathBuf,
    entries: Vec<Entry>,
}

impl KnownServers {
    /// Reads the file; one that does not exist yet knows no server.
    pub fn load(path: &Path) -> Result<KnownServers, FileError> {
        let text = read(path)?;
        let entries = parse(&text).map_err(|error| FileError::Line {
            path: path.to_owned(),
            error,
        })?;
        Ok(KnownServers {
            path: path.to_owned(),
            entries,
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry for `server` (`HOST:PORT`), if the file has one.
    pub fn lookup(&self, server: &str) -> Option<&Entry> {
        lookup(&self.entries, server)
    }

    /// Trusts `server` by `fingerprint` from now on: adds its line to the
    /// file.
    ///
    /// Two clients may trust a server at the same moment, so the file is
    /// read again, changed and replaced under an exclusive lock on a file
    /// beside it (`known_servers.lock`; the file itself is replaced, so it
    /// cannot hold the lock): neither loses the other's line. It is written
    /// whole to a temporary file with mode 0600 (it says whom the user
    /// trusts), then renamed over the old one, so that a crash never leaves
    /// half a file. If the path is a symbolic link, the file it points to
    /// is the one replaced, and the link stays.
    pub fn remember(&mut self, server: &str, fingerprint: &Fingerprint) -> Result<(), FileError> {
        let path = link_target(&self.path);
        let io_error = |doing| {
            let path = path.clone();
            move |source| FileError::Io {
                path,
                doing,
                source,
            }
        };
        for file in [&self.path, &path] {
            if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(io_error("write"))?;
            }
        }
        // Beside the path every client is given, which does not move when
        // the file a link points to comes into being.
        let lock = private_file(&self.path.with_file_name("known_servers.lock"))
            .and_then(|file| {
                rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
                Ok(file)
            })
            .map_err(io_error("lock"))?;
        let line_error = |error| FileError::Line {
            path: path.clone(),
            error,
        };
        let text = add(&read(&path)?, server, fingerprint).map_err(line_error)?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".{}.tmp", std::process::id()));
        let temporary = PathBuf::from(temporary);
        // Made anew, never opened through whatever has that name (a link
        // someone left there, a file of an earlier run with another mode),
        // and on the disk before it takes the file's place.
        let _ = fs::remove_file(&temporary);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
            })
            .and_then(|()| fs::rename(&temporary, &path))
            .map_err(|err| {
                let _ = fs::remove_file(&temporary);
                io_error("write")(err)
            })?;
        drop(lock);
        self.entries = parse(&text).map_err(line_error)?;
        Ok(())
    }
}

/// The file `path` names: the file a symbolic link points to (through
/// every link on the way), even if it does not exist yet; `path` itself if
/// it is no link.
fn link_target(path: &Path) -> PathBuf {
    let mut path = path.to_path_buf();
    // A loop of links ends somewhere: give up after as many as the kernel.
    for _ in 0..40 {
        match fs::read_link(&path) {
            // Relative to the directory the link really is in, as the
            // kernel reads it (`..` after a linked directory is not the
            // text's parent).
            Ok(target) => {
                let dir = path
                    .parent()
                    .filter(|dir| !dir.as_os_str().is_empty())
                    .map(|dir| fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()));
                path = match dir {
                    Some(dir) => dir.join(target),
                    None => target,
                }
            }
            Err(_) => break,
        }
    }
    path
}

/// Opens `path` for writing, made with mode 0600 if it is new.
fn private_file(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// The file's text; empty if it does not exist.
fn read(path: &Path) -> Result<String, FileError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(FileError::Io {
            path: path.to_owned(),
            doing: "read",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Fingerprint {
        Fingerprint::of_spki(&[byte])
    }

    #[test]
    fn parses_servers_comments_and_blank_lines() {
        let text = format!(
            "# a comment\n\n  localhost:8080 {}\n\tChat.Example.org:9000   {}  \n   # indented\n",
            key(1),
            key(2)
        );
        let entries = parse(&text).unwrap();
        assert_eq!(
            entries,
            vec![
                Entry {
                    server: "localhost:8080".into(),
                    fingerprint: key(1),
                    line: 3
                },
                Entry {
                    server: "chat.example.org:9000".into(),
                    fingerprint: key(2),
                    line: 4
                },
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn a_bad_line_is_an_error_with_its_number() {
        let good = format!("localhost:8080 {}\n", key(1));
        for (bad, why) in [
            ("localhost:8080\n".to_string(), "expected `HOST:PORT"),
            (format!("localhost {}\n", key(1)), "is not HOST:PORT"),
            (format!("localhost:http {}\n", key(1)), "is not HOST:PORT"),
            (
                "localhost:1 sha256:short\n".to_string(),
                "is not a fingerprint",
            ),
            (
                format!("localhost:1 {} extra\n", key(1)),
                "expected `HOST:PORT",
            ),
            (format!("LOCALHOST:8080 {}\n", key(2)), "already on line 1"),
        ] {
            let err = parse(&format!("{good}{bad}")).unwrap_err();
            assert_eq!(err.line, 2, "{bad:?}");
            assert!(err.why.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn lookup_ignores_the_case_of_the_host() {
        let entries = parse(&format!(
            "[::1]:8080 {}\nhost.example:1 {}\n",
            key(1),
            key(2)
        ))
        .unwrap();
        assert_eq!(lookup(&entries, "[::1]:8080").unwrap().fingerprint, key(1));
        assert_eq!(lookup(&entries, "HOST.example:1").unwrap().line, 2);
        assert_eq!(lookup(&entries, "host.example:2"), None);
    }

    #[test]
    fn check_tells_a_changed_key_from_a_known_and_an_unknown_one() {
        let entries = parse(&format!("a:1 {}\n", key(1))).unwrap();
        assert_eq!(check(&entries, "a:1", &key(1)), Known::Same(&entries[0]));
        assert_eq!(check(&entries, "a:1", &key(2)), Known::Changed(&entries[0]));
        assert_eq!(check(&entries, "b:1", &key(1)), Known::Unknown);
    }

    #[test]
    fn add_appends_keeps_and_refuses_to_replace() {
        let first = add("", "Localhost:8080", &key(1)).unwrap();
        assert!(first.starts_with(HEADER), "{first}");
        assert!(
            first.ends_with(&format!("\nlocalhost:8080 {}\n", key(1))),
            "{first}"
        );
        // Again with the same key: nothing changes.
        assert_eq!(add(&first, "localhost:8080", &key(1)).unwrap(), first);
        // A changed key is not written over the trusted one.
        let err = add(&first, "localhost:8080", &key(2)).unwrap_err();
        assert!(err.why.contains("another key"), "{err}");
        assert!(err.why.contains(&key(1).to_string()), "{err}");
        // Another server joins; a file without a final newline gets one.
        let text = format!("# mine\nb:2 {}", key(3));
        let added = add(&text, "c:3", &key(4)).unwrap();
        assert_eq!(added, format!("# mine\nb:2 {}\nc:3 {}\n", key(3), key(4)));
        assert_eq!(parse(&added).unwrap().len(), 2);
        // What cannot be read back is not written.
        assert!(add("", "no port", &key(1)).is_err());
        assert!(add("", "#x:1", &key(1)).is_err());
    }

    #[test]
    fn remember_writes_the_file_and_keeps_what_others_added() {
        let dir =
            std::env::temp_dir().join(format!("secure-chat-known-servers-{}", std::process::id()));
        let path = dir.join("deeper").join("known_servers");
        let mut known = KnownServers::load(&path).unwrap();
        assert_eq!(known.lookup("a:1"), None);
        known.remember("a:1", &key(1)).unwrap();
        // Meanwhile another client trusts another server.
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, format!("{text}b:2 {}\n", key(2))).unwrap();
        known.remember("c:3", &key(3)).unwrap();
        let again = KnownServers::load(&path).unwrap();
        for (server, byte) in [("a:1", 1), ("b:2", 2), ("c:3", 3)] {
            assert_eq!(again.lookup(server).unwrap().fingerprint, key(byte));
        }
        assert_eq!(known.lookup("b:2").unwrap().line, 4);
        // A trusted key is never replaced, and the file stays as it was.
        let before = fs::read_to_string(&path).unwrap();
        let err = known.remember("a:1", &key(9)).unwrap_err();
        assert!(
            err.to_string()
                .contains("line 3: a:1 is trusted with another key"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), before);
        // A damaged file is an error naming the file and the line.
        fs::write(&path, "garbage\n").unwrap();
        let err = KnownServers::load(&path).unwrap_err();
        assert!(
            err.to_string().ends_with(
                "known_servers, line 1: expected `HOST:PORT sha256:FINGERPRINT`, found \"garbage\""
            ),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_server_is_filed_under_one_name_however_it_is_spelt() {
        for spelt in [
            "localhost:8080",
            "LocalHost.:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost:08080",
        ] {
            assert_eq!(server_key(spelt), "localhost:8080", "{spelt}");
        }
        assert_eq!(server_key("Chat.Example.org.:443"), "chat.example.org:443");
        assert_eq!(server_key("[2001:DB8:0::1]:1"), "[2001:db8::1]:1");
        assert_eq!(server_key("192.0.2.10:0080"), "192.0.2.10:80");
        // Another loopback address is another server.
        assert_eq!(server_key("127.0.0.2:8080"), "127.0.0.2:8080");
        // Not HOST:PORT: kept for the caller to refuse.
        assert_eq!(server_key("No Port"), "no port");
        assert_eq!(server_key("host:99999"), "host:99999");

        // A file written before, with one server spelt two ways.
        let same = format!("localhost:8080 {}\n127.0.0.1:8080 {}\n", key(1), key(1));
        assert_eq!(parse(&same).unwrap().len(), 1);
        let two_keys = format!("localhost:8080 {}\n[::1]:8080 {}\n", key(1), key(2));
        let err = parse(&two_keys).unwrap_err();
        assert!(
            err.why.contains("already on line 1 with another key"),
            "{err}"
        );
        assert_eq!(
            lookup(&parse(&same).unwrap(), "[::1]:8080").unwrap().line,
            1
        );
    }

    /// A directory of a test's own, removed at the end.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("known-servers-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_file_is_private_and_a_link_to_it_stays_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("mode");
        let real = dir.join("kept-elsewhere");
        fs::write(&real, format!("a:1 {}\n", key(1))).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.join("known_servers");
        std::os::unix::fs::symlink(&real, &link).unwrap();

        KnownServers::load(&link)
            .unwrap()
            .remember("b:2", &key(2))
            .unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let text = fs::read_to_string(&real).unwrap();
        assert!(text.contains(&format!("b:2 {}", key(2))), "{text}");
        let mode = fs::metadata(&real).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // A link to a file that does not exist yet stays a link too.
        let later = dir.join("made-later");
        let dangling = dir.join("dangling");
        std::os::unix::fs::symlink(&later, &dangling).unwrap();
        KnownServers::load(&dangling)
            .unwrap()
            .remember("d:4", &key(4))
            .unwrap();
        assert!(fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(fs::read_to_string(&later).unwrap().contains("d:4"));

        // A relative link inside a linked directory: `..` is taken from
        // where the link really is, as the kernel does, so what is written
        // is what is read.
        fs::create_dir_all(dir.join("real/conf")).unwrap();
        fs::create_dir_all(dir.join("real/shared")).unwrap();
        std::os::unix::fs::symlink(dir.join("real/conf"), dir.join("conf")).unwrap();
        std::os::unix::fs::symlink("../shared/ks", dir.join("real/conf/known_servers")).unwrap();
        let through = dir.join("conf/known_servers");
        KnownServers::load(&through)
            .unwrap()
            .remember("e:5", &key(5))
            .unwrap();
        assert!(fs::read_to_string(dir.join("real/shared/ks"))
            .unwrap()
            .contains("e:5"));
        assert!(KnownServers::load(&through)
            .unwrap()
            .lookup("e:5")
            .is_some());

        let fresh = dir.join("fresh");
        KnownServers::load(&fresh)
            .unwrap()
            .remember("c:3", &key(3))
            .unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clients_trusting_at_once_lose_no_line() {
        const CLIENTS: u8 = 4;
        const EACH: u8 = 25;
        let dir = scratch("race");
        let path = dir.join("known_servers");
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for n in 0..EACH {
                        // Each client as a separate process would: its own
                        // copy, read when it started.
                        let mut known = KnownServers::load(&path).unwrap();
                        let server = format!("host{client}-{n}:1");
                        known.remember(&server, &key(client * EACH + n)).unwrap();
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        let known = KnownServers::load(&path).unwrap();
        assert_eq!(known.entries.len(), usize::from(CLIENTS * EACH));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_and_numeric_forms_of_an_ipv4_address_are_told_apart() {
        for odd in [
            "127.1",
            "0x7f.0.0.1",
            "127.000.000.001",
            "2130706433",
            "0X7F.1",
        ] {
            assert!(is_odd_ipv4(odd), "{odd}");
        }
        for plain in [
            "127.0.0.1",
            "192.0.2.10",
            "localhost",
            "cafe.be",
            "chat.example.org",
            "::1",
        ] {
            assert!(!is_odd_ipv4(plain), "{plain}");
        }
    }

    #[test]
    fn default_path_follows_xdg_then_home() {
        let path = |xdg: Option<&str>, home: Option<&str>| {
            default_path(xdg.map(OsString::from), home.map(OsString::from))
        };
        assert_eq!(
            path(Some("/x"), Some("/home/u")),
            Some(PathBuf::from("/x/secure-chat/known_servers"))
        );
        assert_eq!(
            path(None, Some("/home/u")),
            Some(PathBuf::from("/home/u/.config/secure-chat/known_servers"))
        );
        assert_eq!(
            path(Some("relative"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.config/secure-chat/known_servers"))
        );
        assert_eq!(path(None, None), None);
    }
}
