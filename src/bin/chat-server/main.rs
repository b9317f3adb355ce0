//! `chat-server`: parse the command line, start the server, stop on a signal.

use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use secure_chat::capacity::Capacity;
use secure_chat::error::{report, Error};
#[cfg(feature = "redis")]
use secure_chat::linked::{redis_link, Linked};
use secure_chat::metrics::{Endpoint, Registry};
use secure_chat::operators;
use secure_chat::server::{self, Server};
use secure_chat::{logging, store, tls};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

mod args;

use args::*;

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
    ca_file: Option<std::path::PathBuf>,
    history: usize,
    name_expiry: Option<std::time::Duration>,
    room_expiry: Option<std::time::Duration>,
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
    let link = redis_link::RedisLink::open(url, &node, settings)?;
    log::info!("node {node}: linked to the other servers through Redis");
    let linked = Linked::new(link);
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
