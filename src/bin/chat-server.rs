//! `chat-server`: parse the command line, start the server, stop on a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::LevelFilter;
use secure_chat::capacity::Capacity;
use secure_chat::error::{report, Error};
#[cfg(feature = "redis")]
use secure_chat::linked::{redis_link, Linked};
use secure_chat::metrics::{Endpoint, Registry};
use secure_chat::operators;
use secure_chat::server::{self, Limits, Server};
use secure_chat::throttle::RateLimit;
use secure_chat::{logging, store, tls};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

const HELP: &str = "\
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
  --operators FILE           the server operators: one client certificate key
                             fingerprint a line (sha256:..., as this server
                             logs it when the client joins), # comments; they
                             moderate every room and may disconnect or ban
                             anyone from the server. Reloaded on SIGHUP
                             [default: none]
  --classic                  the original app's protocol, for its clients: one
                             reply per line, no rooms, no other clients seen
  --redis URL                share the chat with every server using the same
                             Redis: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB],
                             or rediss://... for TLS [default: off, one server].
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
and client CA for new connections, and the operators file; if one is
unusable, the old one stays.
Logs go to standard error, one line per connection event and never what
anyone said; RUST_LOG=debug works as -v does.
";

struct Args {
    addr: String,
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    /// `--guests`: client certificates asked for, not required.
    guests: bool,
    /// `--operators FILE`.
    operators: Option<PathBuf>,
    limits: Limits,
    /// `--max-clients`, if given; else the default, or what the system allows.
    max_clients: Option<usize>,
    /// The Redis URL (`--redis`, `--redis-url-file` or `CHAT_REDIS_URL`):
    /// may hold a password, so it is never printed.
    redis: Option<String>,
    /// Where the URL came from, for the warnings.
    redis_from: RedisFrom,
    node_name: Option<String>,
    redis_ca: Option<PathBuf>,
    name_expiry: Option<Duration>,
    room_expiry: Option<Duration>,
    /// `--metrics`: where to serve the figures, if anywhere.
    metrics: Option<String>,
    /// Where the rooms are kept, if anywhere; what is kept, and for how long.
    data: Data,
    level: LevelFilter,
}

/// `--data-dir` and the flags that go with it.
struct Data {
    /// `None` with `--no-data-dir`; the default unless told.
    dir: Option<PathBuf>,
    /// `--data-dir` or `--no-data-dir` was given.
    chosen: bool,
    keep_days: u32,
    keep_bytes: usize,
    /// `--keep-days` or `--keep-bytes` was given.
    retention_given: bool,
}

/// Where the Redis URL came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RedisFrom {
    CommandLine,
    File,
    Environment,
}

/// The environment variable that names Redis when no flag does.
const REDIS_URL_VARIABLE: &str = "CHAT_REDIS_URL";

enum Parsed {
    Run(Box<Args>),
    Exit(&'static str),
}

fn parse_args() -> Result<Parsed, lexopt::Error> {
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
fn read_redis_url(file: &std::path::Path) -> Result<String, String> {
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
fn redis_password_warnings(url: &str, from: RedisFrom) -> Vec<String> {
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
    if scheme.eq_ignore_ascii_case("redis") && !tls::is_loopback(host) {
        warnings.push(format!(
            "the Redis password goes to {host} over plain redis://, readable by anyone \
             on the path: use rediss:// (TLS; --redis-ca for a private CA)"
        ));
    }
    warnings
}

/// Seconds, with a fraction if wanted: `5`, `0.5`.
fn parse_seconds(text: &str) -> Result<Duration, String> {
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
fn parse_bytes(text: &str) -> Result<usize, String> {
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

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Parsed::Run(args)) => *args,
        Ok(Parsed::Exit(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("chat-server: {err}\nTry 'chat-server --help'.");
            return ExitCode::FAILURE;
        }
    };
    logging::init(args.level);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chat-server: {}", report(&*err));
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: Args) -> Result<(), Box<dyn std::error::Error>> {
    raise_open_files_limit();
    // Threads, files and memory maps bound how many clients can connect;
    // past them the process could abort, so asking for more is refused.
    let capacity = Capacity::of_this_machine(args.limits.writers);
    let allowed = capacity.connections().unwrap_or(usize::MAX);
    args.limits.max_clients = match args.max_clients {
        Some(asked) if asked > allowed => {
            return Err(Error::Capacity {
                asked,
                capacity: capacity.to_string(),
            }
            .into())
        }
        Some(asked) => asked,
        None => server::MAX_CLIENTS.min(allowed),
    };
    // Each load, at start and on SIGHUP, also logs the key's fingerprint,
    // for users to check or pin (`chat-client --pin`): what a client
    // that does not trust the CA is shown before it trusts this server.
    let operators_file = args.operators.clone();
    if operators_file.is_some() && args.client_ca.is_none() {
        log::warn!(
            "--operators without --client-ca: no client presents a certificate, \
             so nobody can be a server operator"
        );
    }
    let load_operators = move || operators_file.as_deref().map(operators::load);
    let initial_operators = load_operators().transpose()?;
    let load = move || {
        let clients = match (&args.client_ca, args.guests) {
            (None, _) => tls::ClientCertificates::NotAsked,
            (Some(ca), false) => tls::ClientCertificates::Required(ca),
            (Some(ca), true) => tls::ClientCertificates::Optional(ca),
        };
        let config = tls::server_config_for(&args.cert, &args.key, clients)?;
        match tls::Fingerprint::of_certificate_file(&args.cert) {
            Ok(key) => log::info!("certificate fingerprint {key} (for chat-client --pin)"),
            Err(err) => log::warn!("no certificate fingerprint: {}", report(&err)),
        }
        Ok::<_, Error>(config)
    };
    // Handlers first: a signal that arrives once we are listening must
    // find them in place, not the default action that kills the process.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let mut server = Server::bind(&args.addr, load()?, args.limits)?;
    let metrics = args.metrics.as_deref().map(|addr| (addr, Registry::new()));
    if let Some((_, registry)) = &metrics {
        server.report_to(Arc::clone(registry));
    }
    // Before anyone can connect: the rooms are back before the first
    // client sees them. A damaged file or a directory in use stops the
    // start here, with what to do; a directory that cannot be written only
    // warns (`open` says so), and the chat goes on in memory.
    if let Some(dir) = &args.data.dir {
        let retention = store::Retention {
            lines: args.limits.history,
            room_bytes: args.data.keep_bytes,
            days: args.data.keep_days,
        };
        if let Some(opened) = store::open(dir, retention)? {
            server.keep_in(opened);
        }
    }
    #[cfg(feature = "redis")]
    let server = match &args.redis {
        Some(url) => {
            for warning in redis_password_warnings(url, args.redis_from) {
                log::warn!("{warning}");
            }
            let redis = Redis {
                url,
                node_name: args.node_name.as_deref(),
                ca_file: args.redis_ca.clone(),
                history: args.limits.history,
                name_expiry: args.name_expiry,
                room_expiry: args.room_expiry,
            };
            link(
                redis,
                server,
                metrics.as_ref().map(|(_, registry)| &**registry),
            )?
        }
        None => server,
    };
    let stopper = server.stopper();
    let reloader = server.reloader();
    let operators = server.operators();
    if let Some(keys) = initial_operators {
        operators.replace(keys);
    }
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                match signal {
                    SIGHUP => {
                        match load() {
                            Ok(config) => {
                                reloader.replace(config);
                                log::info!("reloaded the certificate, key and client CA");
                            }
                            Err(err) => log::error!(
                                "reload failed, still using the previous files: {}",
                                report(&err)
                            ),
                        }
                        match load_operators() {
                            None => {}
                            Some(Ok(keys)) => {
                                let count = keys.len();
                                // Logged once the list is in the hub's
                                // queue, ahead of any line sent after.
                                operators.replace(keys);
                                log::info!("reloaded the operators file: {count} keys");
                            }
                            Some(Err(why)) => {
                                log::warn!("{why}; still using the previous operators")
                            }
                        }
                    }
                    _ if stopping => {
                        log::warn!("signal {signal} again: exiting at once");
                        std::process::exit(128 + signal);
                    }
                    _ => {
                        log::info!("signal {signal}: shutting down");
                        stopping = true;
                        // Stopping blocks on nothing but a local connect;
                        // a second signal meanwhile is for someone in a hurry.
                        let stopper = stopper.clone();
                        thread::spawn(move || stopper.stop());
                    }
                }
            }
        })?;
    // The endpoint's thread ends with the process.
    if let Some((addr, registry)) = metrics {
        serve_metrics(addr, registry)?;
    }
    log::info!("listening on {}", server.local_addr());
    server.run()?;
    log::info!("stopped");
    Ok(())
}

/// What `--redis` and the flags that go with it asked for.
#[cfg(feature = "redis")]
struct Redis<'a> {
    url: &'a str,
    node_name: Option<&'a str>,
    ca_file: Option<PathBuf>,
    history: usize,
    name_expiry: Option<Duration>,
    room_expiry: Option<Duration>,
}

/// Where `--metrics VALUE` serves: a bare port is on loopback, since the
/// figures are for this machine's monitoring unless said otherwise.
fn metrics_addr(value: &str) -> String {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{value}")
    } else {
        value.to_string()
    }
}

/// Serves `registry`'s figures at `addr` (`--metrics`), from a thread of its
/// own. Anywhere but loopback, the log says who can read them.
fn serve_metrics(addr: &str, registry: Arc<Registry>) -> Result<(), Error> {
    let endpoint = Endpoint::serve(addr, registry)?;
    let bound = endpoint.local_addr();
    log::info!("metrics on http://{bound}/metrics");
    if !bound.ip().is_loopback() {
        log::warn!(
            "the metrics on {bound} are served in plain HTTP without authentication: \
             anyone who can reach that address can read them"
        );
    }
    Ok(())
}

/// Makes `server` one of those sharing the Redis `redis` names; with
/// `--metrics`, the link's figures go into `metrics`.
#[cfg(feature = "redis")]
fn link(
    redis: Redis<'_>,
    mut server: Server,
    metrics: Option<&Registry>,
) -> Result<Server, Box<dyn std::error::Error>> {
    let node = match redis.node_name {
        Some(name) => name.to_owned(),
        None => default_node_name(server.local_addr().port()),
    };
    let settings = redis_link::LinkSettings {
        ca_file: redis.ca_file,
        // Room for the notices between the chat lines a newcomer sees.
        recent: redis.history.saturating_mul(4),
        name_ttl: redis
            .name_expiry
            .unwrap_or(redis_link::LinkSettings::default().name_ttl),
        room_ttl: redis
            .room_expiry
            .unwrap_or(redis_link::LinkSettings::default().room_ttl),
        ..redis_link::LinkSettings::default()
    };
    let url = redis.url;
    // Fails at once, in one line, if Redis cannot be reached or
    // refuses the login; never with the URL, which may hold a password.
    let (link, deliveries) = redis_link::RedisLink::start(url, &node, settings)?;
    log::info!("node {node}: linked to the other servers through Redis");
    let linked = Linked::new(link, deliveries);
    if let Some(registry) = metrics {
        registry.register(Arc::new(linked.gauges()));
    }
    server.share(Box::new(linked));
    Ok(server)
}

/// This machine's name and the port: unique among servers on one Redis
/// unless two machines share a name. Only what a node name may hold is kept.
#[cfg(feature = "redis")]
fn default_node_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(redis_link::NODE_NAME_MAX - 6)
        .collect();
    let host = if host.is_empty() { "chat" } else { &host };
    format!("{host}-{port}")
}

/// Each client costs a file descriptor: raise the soft limit on open files
/// to the hard limit, which the system allows without privileges.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("open files limit: {limit}"),
        Err(err) => log::warn!("cannot raise the open files limit: {err}"),
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
