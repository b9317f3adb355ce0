//! Reaching Redis: where it is, how to connect (TLS or not) and to tell
//! its failures apart; what a room's numbering and this Redis's epoch are.

// The link's types, constants and helpers, which this part shares.
use super::*;

/// Where Redis is, and how to log in; the one thing that holds the
/// password. Its `Debug` says only `addr`.
pub(super) struct Target {
    pub(super) client: Client,
    /// What `client` was made from, for another node of a cluster: the
    /// same login and TLS, another host and port.
    info: redis::ConnectionInfo,
    /// The CA for TLS, if given.
    pem: Option<Vec<u8>>,
    /// `host:port`, for errors and logs.
    pub(super) addr: String,
    /// To blank out of any message that might carry it.
    pub(super) password: Option<String>,
    pub(super) settings: LinkSettings,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target").field("addr", &self.addr).finish()
    }
}

impl Target {
    pub(super) fn new(url: &str, settings: &LinkSettings) -> Result<Target, LinkError> {
        let info = url.into_connection_info().map_err(|_| LinkError::BadUrl)?;
        let addr = info.addr().to_string();
        let password = info.redis_settings().password().map(str::to_owned);
        // RESP2: a subscribed connection then answers only (un)subscribe
        // and PING, the behaviour the subscriber is written for, whatever
        // `?protocol=` the URL asks.
        let redis = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP2);
        let info = info.set_redis_settings(redis);
        let pem = match &settings.ca_file {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|source| LinkError::CaFile {
                path: path.clone(),
                source,
            })?),
        };
        let client = client_for(info.clone(), pem.as_ref()).map_err(|_| LinkError::BadUrl)?;
        Ok(Target {
            client,
            info,
            pem,
            addr,
            password,
            settings: settings.clone(),
        })
    }

    /// One connection, with every read and write bounded in time.
    pub(super) fn connect(&self) -> redis::RedisResult<Connection> {
        self.timed(&self.client)
    }

    /// A connection of `client`'s, with every read and write bounded in
    /// time.
    fn timed(&self, client: &Client) -> redis::RedisResult<Connection> {
        let settings = &self.settings;
        let connection = client.get_connection_with_timeout(settings.connect_timeout)?;
        connection.set_read_timeout(Some(settings.reply_timeout))?;
        connection.set_write_timeout(Some(settings.reply_timeout))?;
        Ok(connection)
    }

    /// The connection that listens to the classic channels (the node's
    /// own, questions, moderation): to the URL's node on one Redis, to the
    /// node every server picks alike on a cluster ([`Topology::classic`]).
    pub(super) fn listening(&self, topology: &Topology) -> redis::RedisResult<Connection> {
        if topology.is_cluster() {
            self.connect_to(topology.master(topology.classic()))
        } else {
            self.connect()
        }
    }

    /// One connection to another node of the same cluster, `host:port`
    /// (as `CLUSTER SLOTS` names it), logged in as the URL says; the
    /// URL's own node is [`Target::connect`].
    pub(super) fn connect_to(&self, node: &str) -> redis::RedisResult<Connection> {
        if node == self.addr {
            return self.connect();
        }
        self.connect_with(node, redis::ProtocolVersion::RESP2)
    }

    /// A connection to `node` that speaks RESP3, where what a subscribed
    /// connection hears comes as pushes, told apart from replies: the
    /// client library drops the next reply after a read that timed out
    /// (it takes that reply to be the late one), never a push.
    pub(super) fn listen_to(&self, node: &str) -> redis::RedisResult<Connection> {
        self.connect_with(node, redis::ProtocolVersion::RESP3)
    }

    fn connect_with(
        &self,
        node: &str,
        protocol: redis::ProtocolVersion,
    ) -> redis::RedisResult<Connection> {
        let invalid = || RedisError::from((ErrorKind::InvalidClientConfig, "a bad node address"));
        let (host, port) = node.rsplit_once(':').ok_or_else(invalid)?;
        let port: u16 = port.parse().map_err(|_| invalid())?;
        let mut addr = self.info.addr().clone();
        match &mut addr {
            redis::ConnectionAddr::Tcp(to_host, to_port)
            | redis::ConnectionAddr::TcpTls {
                host: to_host,
                port: to_port,
                ..
            } => {
                *to_host = host.to_owned();
                *to_port = port;
            }
            _ => return Err(invalid()),
        }
        let redis = self.info.redis_settings().clone().set_protocol(protocol);
        let info = self.info.clone().set_addr(addr).set_redis_settings(redis);
        self.timed(&client_for(info, self.pem.as_ref())?)
    }

    /// What an error says, with the password (should a message ever
    /// quote it) blanked out.
    pub(super) fn describe(&self, error: &RedisError) -> String {
        let text = error.to_string();
        match &self.password {
            Some(password) if !password.is_empty() => text.replace(password.as_str(), "***"),
            _ => text,
        }
    }

    /// An error of [`RedisLink::start`], by what the user has to fix.
    pub(super) fn start_error(&self, error: &RedisError) -> LinkError {
        let addr = self.addr.clone();
        let reason = self.describe(error);
        let login = error.kind() == ErrorKind::AuthenticationFailed
            || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"));
        let tls = is_tls_error(error);
        if login {
            LinkError::Login { addr, reason }
        } else if tls {
            LinkError::Tls { addr, reason }
        } else if error.is_io_error() || error.is_timeout() || error.is_connection_refusal() {
            LinkError::Unreachable { addr, reason }
        } else {
            LinkError::Denied { addr, reason }
        }
    }
}

/// A client for `info`, trusting `pem` as the CA when given.
fn client_for(info: redis::ConnectionInfo, pem: Option<&Vec<u8>>) -> redis::RedisResult<Client> {
    match pem {
        None => Client::open(info),
        Some(pem) => Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
    }
}

/// Whether rustls is behind `error`. The client library keeps the
/// `io::Error` it got (rustls' error inside) behind an `Arc`, and
/// `io::Error::source` skips the error it wraps, so the chain is walked
/// by hand.
pub(super) fn is_tls_error(error: &RedisError) -> bool {
    type Wrapped = Arc<dyn std::error::Error + Send + Sync>;
    use std::error::Error as _;
    let Some(cause) = error.source() else {
        return false;
    };
    let io = cause
        .downcast_ref::<Wrapped>()
        .and_then(|shared| shared.downcast_ref::<io::Error>())
        .or_else(|| cause.downcast_ref::<io::Error>());
    io.and_then(io::Error::get_ref)
        .is_some_and(|inner| inner.is::<rustls::Error>())
}

/// Reads the data set's epoch, making one if it has none.
pub(super) fn epoch(connection: &mut impl redis::ConnectionLike) -> redis::RedisResult<String> {
    let fresh = format!("{:016x}", random_u64());
    redis::cmd("SET")
        .arg(EPOCH_KEY)
        .arg(fresh)
        .arg("NX")
        .exec(connection)?;
    redis::cmd("GET").arg(EPOCH_KEY).query(connection)
}

/// The highest seq a room has had (0 for a room never spoken in).
pub(super) fn current_seq(
    connection: &mut impl redis::ConnectionLike,
    room: &str,
) -> redis::RedisResult<u64> {
    let seq: Option<u64> = redis::cmd("GET")
        .arg(Keys::of(room).seq)
        .query(connection)?;
    Ok(seq.unwrap_or(0))
}
