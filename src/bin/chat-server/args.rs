//! `chat-server`'s command line: the flags, their defaults and checks, and
//! `--help`. What the flags do is in `main.rs` and the library.

use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;
use secure_chat::server::{self, Limits};
use secure_chat::throttle::RateLimit;
use secure_chat::{logging, store};

pub(super) const HELP: &str = "\
chat-server: a multi-user chat over TLS

Usage: chat-server [OPTIONS]

Options:
  --addr HOST:PORT           address to listen on [default: 127.0.0.1:8080]
  --cert FILE                certificate chain, PEM, leaf first [default: certs/server.crt]
  --key FILE                 private key of the certificate, PEM [default: certs/server.key]
  --handshake-timeout SECS   time a client has to finish the TLS handshake [default: 10]
  --max-line BYTES           longest line a client may send [default: 4096]
  --history N                lines each room replays to newcomers; 0 keeps
                             none [default: 50]
  --announce-limit N         rooms with more people than this do not announce
                             who joins and quits [default: 100]
  --rooms-per-minute N       new rooms the clients of one address may make in
                             a minute [default: 10]
  --max-clients N            clients in the chat at once; more are told
                             'server full' [default: 10000, or fewer if the
                             system's limits allow fewer (the log says)]
  --max-per-ip N             clients from one IP address (IPv6: one /64
                             network), and at most 2N connections from it
                             in all [default: no limit]
  --rate LINES_PER_SEC       lines a second each client may send; faster
                             clients are slowed down, never cut off; 0 turns
                             flood control off [default: 5]
  --burst N                  lines a client may send at once [default: 20]
  --stall-timeout SECS       a client whose connection takes nothing for this
                             long while lines wait for it is disconnected as
                             stalled [default: 5]
  --max-lag SECS             a client that is this far behind the room (its
                             oldest waiting line is this old) is disconnected
                             [default: 30]
  --max-pending BYTES        a client for whom more than this waits is
                             disconnected [default: 128M]
  --memory-budget BYTES      past this much waiting in the whole server, new
                             lines wait (the senders slow down) until the
                             writers catch up; nothing is dropped [default: 256M]
  --writers N                writer threads [default: one per core]
  --client-ca FILE           require client certificates signed by the CA in
                             FILE (mutual TLS); each client's nick is then the
                             certificate's common name
  --max-sessions N           with --client-ca: connections one certificate may
                             have at once, sharing its nick [default: 5]
  --guests                   with --client-ca: ask for a client certificate but
                             do not require one; a client without is a guest
                             (guestN, may /nick), one with an invalid one is
                             still refused
  --operators FILE           with --client-ca: the server operators, one
                             client certificate key fingerprint a line
                             (sha256:..., as this server logs it when the
                             client joins), # comments; they moderate every
                             room and may disconnect or ban anyone from the
                             server. Reloaded on SIGHUP [default: none]
  --classic                  the original app's protocol, for its clients: one
                             reply per line, no rooms, no other clients seen
  --redis URL                share the chat with every server using the same
                             Redis: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB],
                             or rediss://... for TLS [default: off, one server].
                             May name any node of a Redis Cluster (7.0+).
                             A URL with a password is better not given here,
                             where every local user can read it (ps): put it
                             in the environment variable CHAT_REDIS_URL or in
                             a file for --redis-url-file instead
  --redis-url-file FILE      as --redis, the URL being FILE's first line
  --node-name NAME           this server's name among them, in logs
                             [default: HOSTNAME-PORT]
  --redis-ca FILE            with rediss://: the CA that Redis' certificate must
                             chain to [default: the system's roots]
  --name-expiry SECS         with --redis: how soon the nicks of a server that
                             died come free for the others, at least 5
                             [default: 30]
  --room-expiry SECS         with --redis: how long Redis keeps a room's
                             history and topic once nobody is in it on any
                             server and nobody speaks there, at least 60
                             [default: 86400]
  --metrics HOST:PORT        serve the server's figures for Prometheus at
                             http://HOST:PORT/metrics, in plain HTTP without
                             authentication: keep it on loopback or a private
                             network; a bare PORT is 127.0.0.1:PORT
                             [default: off]
  --data-dir DIR             keep each room's history and topic in DIR across
                             restarts (made if missing; one server per
                             directory) [default: data]
  --no-data-dir              keep nothing: a restart forgets every room
  --keep-days DAYS           with a data directory: forget lines older than
                             this [default: 30]
  --keep-bytes BYTES         with a data directory: at most this much of each
                             room's lines (--history bounds their number)
                             [default: 1M]
                             With --redis, Redis keeps the rooms and there is
                             no data directory; --classic has none either
  -v, --verbose              more log output, rustls' notes on each handshake
                             included (twice: everything)
  -q, --quiet                only warnings and errors
  -h, --help                 print this help
  -V, --version              print the version

BYTES may end in K, M or G (KiB, MiB, GiB); SECS may have a fraction.

SIGINT or SIGTERM stops the server: every client is told, every connection
closed (a second signal exits at once). SIGHUP reloads the certificate, key
and client CA for new connections, and the operators file for everyone at
once; if one is unusable, the old one stays.
Logs go to standard error, one line per connection event and never what
anyone said; RUST_LOG=debug works as -v does.
";

pub(super) struct Args {
    pub(super) addr: String,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) client_ca: Option<PathBuf>,
    /// `--guests`: client certificates asked for, not required.
    pub(super) guests: bool,
    /// `--operators FILE`.
    pub(super) operators: Option<PathBuf>,
    pub(super) limits: Limits,
    /// `--max-clients`, if given; else the default, or what the system allows.
    pub(super) max_clients: Option<usize>,
    /// The Redis URL (`--redis`, `--redis-url-file` or `CHAT_REDIS_URL`):
    /// may hold a password, so it is never printed.
    pub(super) redis: Option<String>,
    /// Where the URL came from, for the warnings.
    pub(super) redis_from: RedisFrom,
    pub(super) node_name: Option<String>,
    pub(super) redis_ca: Option<PathBuf>,
    pub(super) name_expiry: Option<Duration>,
    pub(super) room_expiry: Option<Duration>,
    /// `--metrics`: where to serve the figures, if anywhere.
    pub(super) metrics: Option<String>,
    /// Where the rooms are kept, if anywhere; what is kept, and for how long.
    pub(super) data: Data,
    pub(super) level: LevelFilter,
}

/// `--data-dir` and the flags that go with it.
pub(super) struct Data {
    /// `None` with `--no-data-dir`; the default unless told.
    pub(super) dir: Option<PathBuf>,
    /// `--data-dir` or `--no-data-dir` was given.
    pub(super) chosen: bool,
    pub(super) keep_days: u32,
    pub(super) keep_bytes: usize,
    /// `--keep-days` or `--keep-bytes` was given.
    pub(super) retention_given: bool,
}

/// Where the Redis URL came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RedisFrom {
    CommandLine,
    File,
    Environment,
}

/// The environment variable that names Redis when no flag does.
pub(super) const REDIS_URL_VARIABLE: &str = "CHAT_REDIS_URL";

pub(super) enum Parsed {
    Run(Box<Args>),
    Exit(&'static str),
}

pub(super) fn parse_args() -> Result<Parsed, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        addr: server::DEFAULT_ADDR.to_string(),
        cert: PathBuf::from("certs/server.crt"),
        key: PathBuf::from("certs/server.key"),
        client_ca: None,
        guests: false,
        operators: None,
        limits: Limits::default(),
        max_clients: None,
        redis: None,
        redis_from: RedisFrom::CommandLine,
        node_name: None,
        redis_ca: None,
        name_expiry: None,
        room_expiry: None,
        metrics: None,
        data: Data {
            dir: Some(PathBuf::from(store::DEFAULT_DATA_DIR)),
            chosen: false,
            keep_days: store::KEEP_DAYS,
            keep_bytes: store::KEEP_ROOM_BYTES,
            retention_given: false,
        },
        level: logging::level_from_env().unwrap_or(LevelFilter::Info),
    };
    let mut rate = RateLimit::default();
    let mut redis_url_file: Option<PathBuf> = None;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("addr") => args.addr = parser.value()?.parse()?,
            Long("cert") => args.cert = parser.value()?.into(),
            Long("key") => args.key = parser.value()?.into(),
            Long("handshake-timeout") => {
                args.limits.handshake_timeout = parser.value()?.parse_with(parse_seconds)?;
            }
            Long("max-line") => args.limits.max_line = parser.value()?.parse()?,
            Long("history") => args.limits.history = parser.value()?.parse()?,
            Long("announce-limit") => args.limits.announce_limit = parser.value()?.parse()?,
            Long("rooms-per-minute") => {
                args.limits.rooms_per_minute = parser.value()?.parse()?;
            }
            Long("max-sessions") => {
                args.limits.max_sessions = parser.value()?.parse::<usize>()?.max(1);
            }
            Long("max-clients") => args.max_clients = Some(parser.value()?.parse()?),
            Long("max-per-ip") => args.limits.max_per_ip = Some(parser.value()?.parse()?),
            Long("rate") => rate.per_second = parser.value()?.parse()?,
            Long("burst") => rate.burst = parser.value()?.parse::<u32>()?.max(1),
            Long("stall-timeout") => {
                args.limits.stall_timeout = parser.value()?.parse_with(parse_seconds)?;
            }
            Long("max-lag") => args.limits.max_lag = parser.value()?.parse_with(parse_seconds)?,
            Long("max-pending") => {
                args.limits.max_pending = parser.value()?.parse_with(parse_bytes)?;
            }
            Long("memory-budget") => {
                args.limits.memory_budget = parser.value()?.parse_with(parse_bytes)?;
            }
            Long("writers") => args.limits.writers = parser.value()?.parse::<usize>()?.max(1),
            // Flags of the earlier design, whose queue limits cut healthy
            // readers during a burst: say what replaced them.
            Long(old @ ("queue-lines" | "queue-bytes" | "write-timeout")) => {
                return Err(format!(
                    "--{old} is gone: a client is now cut when it stalls \
                     (--stall-timeout), falls behind (--max-lag, --max-pending), \
                     and the whole server's waiting lines are bounded by --memory-budget; \
                     see --help"
                )
                .into());
            }
            Long("client-ca") => args.client_ca = Some(parser.value()?.into()),
            Long("guests") => args.guests = true,
            Long("operators") => args.operators = Some(parser.value()?.into()),
            Long("classic") => args.limits.classic = true,
            // Not `parse()`, whose error would print the value back.
            Long("redis") => {
                let url = parser.value()?.into_string();
                args.redis = Some(url.map_err(|_| "--redis: the URL is not valid UTF-8")?);
            }
            Long("redis-url-file") => redis_url_file = Some(parser.value()?.into()),
            Long("node-name") => args.node_name = Some(parser.value()?.parse()?),
            Long("redis-ca") => args.redis_ca = Some(parser.value()?.into()),
            Long("name-expiry") => {
                let expiry = parser.value()?.parse_with(parse_seconds)?;
                // Renewed every third of it, and a renewal may wait up to
                // the link's reply timeout (2 s) when Redis is slow.
                if expiry < Duration::from_secs(5) {
                    return Err("--name-expiry: give at least 5 seconds (names are renewed \
                                every third of it, and a renewal may wait 2 s for Redis)"
                        .into());
                }
                args.name_expiry = Some(expiry);
            }
            Long("room-expiry") => {
                let expiry = parser.value()?.parse_with(parse_seconds)?;
                // Renewed every third of it; below a minute, a few slow
                // renewals or a short outage of Redis would let the keys
                // of a room in use lapse, and its numbering start over.
                if expiry < Duration::from_secs(60) {
                    return Err(
                        "--room-expiry: give at least 60 seconds (the rooms a server \
                                is in are renewed every third of it, and a room whose keys \
                                lapse while in use starts its numbering over)"
                            .into(),
                    );
                }
                args.room_expiry = Some(expiry);
            }
            Long("metrics") => {
                args.metrics = Some(metrics_addr(&parser.value()?.string()?));
            }
            Long("data-dir") | Long("no-data-dir") if args.data.chosen => {
                return Err("--data-dir and --no-data-dir: give one, once".into());
            }
            Long("data-dir") => {
                args.data.dir = Some(parser.value()?.into());
                args.data.chosen = true;
            }
            Long("no-data-dir") => {
                args.data.dir = None;
                args.data.chosen = true;
            }
            Long("keep-days") => {
                let days: u32 = parser.value()?.parse()?;
                if days == 0 {
                    return Err("--keep-days: give at least 1 (--no-data-dir keeps nothing)".into());
                }
                args.data.keep_days = days;
                args.data.retention_given = true;
            }
            Long("keep-bytes") => {
                args.data.keep_bytes = parser.value()?.parse_with(parse_bytes)?;
                args.data.retention_given = true;
            }
            Short('v') | Long("verbose") => {
                args.level = match args.level {
                    LevelFilter::Info | LevelFilter::Warn => LevelFilter::Debug,
                    _ => LevelFilter::Trace,
                }
            }
            Short('q') | Long("quiet") => args.level = LevelFilter::Warn,
            Short('h') | Long("help") => return Ok(Parsed::Exit(HELP)),
            Short('V') | Long("version") => {
                return Ok(Parsed::Exit(concat!(
                    "chat-server ",
                    env!("CARGO_PKG_VERSION"),
                    "\n"
                )))
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if args.guests && args.client_ca.is_none() {
        return Err(
            "--guests needs --client-ca: the CA that the certificates clients \
                    may present must be signed by"
                .into(),
        );
    }
    match (&args.redis, redis_url_file) {
        (Some(_), Some(_)) => {
            return Err("--redis and --redis-url-file: give one of the two".into());
        }
        (None, Some(file)) => {
            args.redis = Some(read_redis_url(&file)?);
            args.redis_from = RedisFrom::File;
        }
        (Some(_), None) => {}
        (None, None) => {
            if let Some(url) = std::env::var_os(REDIS_URL_VARIABLE).filter(|url| !url.is_empty()) {
                let url = url
                    .into_string()
                    .map_err(|_| format!("{REDIS_URL_VARIABLE}: the URL is not valid UTF-8"))?;
                args.redis = Some(url);
                args.redis_from = RedisFrom::Environment;
            }
        }
    }
    if args.limits.classic && args.redis.is_some() {
        return Err(
            "--classic and --redis do not go together: the original app's \
                    clients see nobody else, on this server or any other"
                .into(),
        );
    }
    if cfg!(not(feature = "redis")) && args.redis.is_some() {
        return Err(
            "--redis: this chat-server was built without linked servers; build it with \
             the `redis` feature (on by default: `cargo build --release`, without \
             --no-default-features)"
                .into(),
        );
    }
    let redis_only = args.node_name.is_some() || args.redis_ca.is_some();
    let expiries = args.name_expiry.is_some() || args.room_expiry.is_some();
    if args.redis.is_none() && (redis_only || expiries) {
        return Err(
            "--node-name, --redis-ca, --name-expiry and --room-expiry are for --redis".into(),
        );
    }
    // Redis keeps a shared chat's rooms; the original app has none. A data
    // directory named all the same would be a promise not kept.
    if args.redis.is_some() || args.limits.classic {
        let with = if args.redis.is_some() {
            "--redis"
        } else {
            "--classic"
        };
        if args.data.chosen && args.data.dir.is_some() || args.data.retention_given {
            return Err(format!(
                "--data-dir, --keep-days and --keep-bytes are not for {with}: {}",
                if args.redis.is_some() {
                    "Redis keeps the rooms"
                } else {
                    "its clients have no rooms to keep"
                }
            )
            .into());
        }
        args.data.dir = None;
    } else if args.data.dir.is_none() && args.data.retention_given {
        return Err(
            "--keep-days and --keep-bytes are for a data directory, not --no-data-dir".into(),
        );
    }
    // --rate 0 turns flood control off, whatever the burst.
    args.limits.rate = (rate.per_second > 0).then_some(rate);
    Ok(Parsed::Run(Box::new(args)))
}

/// The first line of `file`, the Redis URL; the error never holds the
/// file's text.
pub(super) fn read_redis_url(file: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| format!("--redis-url-file: cannot read {}: {err}", file.display()))?;
    let url = text.lines().next().unwrap_or("").trim();
    if url.is_empty() {
        return Err(format!(
            "--redis-url-file: {} is empty; its first line must be the Redis URL",
            file.display()
        ));
    }
    Ok(url.to_string())
}

/// Warnings about the password a Redis URL holds, if it holds one: read
/// from the command line (where every local user can read it), or about
/// to cross the network in clear (plain `redis://` to another machine).
/// Only the URL's parts are looked at, never shown.
#[cfg(feature = "redis")]
pub(super) fn redis_password_warnings(url: &str, from: RedisFrom) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let Some((user_info, host_port)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let has_password = user_info
        .split_once(':')
        .is_some_and(|(_, password)| !password.is_empty());
    if !has_password {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    if from == RedisFrom::CommandLine {
        warnings.push(format!(
            "the Redis password was given on the command line, where every local user \
             can read it (ps, /proc/PID/cmdline): put the URL in {REDIS_URL_VARIABLE} \
             or in a file for --redis-url-file"
        ));
    }
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host_port
            .rsplit_once(':')
            .map_or(host_port, |(host, _)| host),
    };
    if scheme.eq_ignore_ascii_case("redis") && !secure_chat::tls::is_loopback(host) {
        warnings.push(format!(
            "the Redis password goes to {host} over plain redis://, readable by anyone \
             on the path: use rediss:// (TLS; --redis-ca for a private CA)"
        ));
    }
    warnings
}

/// Seconds, with a fraction if wanted: `5`, `0.5`.
pub(super) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "{text:?}: give more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Bytes, with an optional K, M or G (powers of 1024): `65536`, `64K`, `256M`.
pub(super) fn parse_bytes(text: &str) -> Result<usize, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => {
            return Err(format!(
                "{text:?}: use a number of bytes, or K, M or G after it"
            ))
        }
    };
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a number of bytes"))?;
    number
        .checked_mul(1 << shift)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("{text:?}: give more than 0 bytes, and not absurdly many"))
}

/// Where `--metrics VALUE` serves: a bare port is on loopback, since the
/// figures are for this machine's monitoring unless said otherwise.
pub(super) fn metrics_addr(value: &str) -> String {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{value}")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_metrics_port_is_on_loopback() {
        assert_eq!(metrics_addr("9464"), "127.0.0.1:9464");
        assert_eq!(metrics_addr("0.0.0.0:9464"), "0.0.0.0:9464");
        assert_eq!(metrics_addr("[::1]:9464"), "[::1]:9464");
        assert_eq!(metrics_addr("localhost:9464"), "localhost:9464");
    }

    #[test]
    fn sizes_take_a_unit() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("256M"), Ok(256 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12MB").is_err());
        assert!(parse_bytes("M").is_err());
        assert!(parse_bytes("-5").is_err());
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_redis_password_is_warned_about_where_it_shows_and_never_shown() {
        let warn = |url, from| redis_password_warnings(url, from).join(" | ");
        // From the environment, to this machine: nothing to say.
        assert_eq!(
            warn("redis://:s3cret@127.0.0.1:6379/0", RedisFrom::Environment),
            ""
        );
        assert_eq!(warn("redis://user:s3cret@localhost", RedisFrom::File), "");
        // No password: nothing to say, wherever it comes from.
        assert_eq!(
            warn("redis://chat.example.org:6379", RedisFrom::CommandLine),
            ""
        );
        assert_eq!(
            warn("redis://user@chat.example.org", RedisFrom::CommandLine),
            ""
        );
        // On the command line.
        let said = warn("redis://:s3cret@[::1]:6379", RedisFrom::CommandLine);
        assert!(said.contains("command line"), "{said}");
        assert!(!said.contains("plain"), "{said}");
        // In clear to another machine, and only in clear.
        let said = warn("redis://:s3cret@10.0.0.5:6379/1", RedisFrom::File);
        assert!(said.contains("to 10.0.0.5 over plain redis://"), "{said}");
        let said = warn(
            "redis://u:s3cret@[2001:db8::1]:6379",
            RedisFrom::Environment,
        );
        assert!(said.contains("to 2001:db8::1 over plain"), "{said}");
        assert_eq!(
            warn("rediss://:s3cret@redis.example.org", RedisFrom::File),
            ""
        );
        for (url, from) in [
            ("redis://:s3cret@10.0.0.5", RedisFrom::CommandLine),
            (
                "redis://u:s3cret@[2001:db8::1]:6379",
                RedisFrom::Environment,
            ),
        ] {
            assert!(!warn(url, from).contains("s3cret"));
        }
    }

    #[test]
    fn seconds_take_a_fraction() {
        assert_eq!(parse_seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("-1").is_err());
    }
}
