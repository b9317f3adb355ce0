//! The metrics endpoint: plain HTTP/1.1 on a std `TcpListener`, one thread,
//! one request per connection. `GET /metrics` is answered with the scrape;
//! anything else with 404. No TLS and no authentication: see the README.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::text::CONTENT_TYPE;
use super::Registry;
use crate::error::Error;

/// The most a request's head may take. A scraper's `GET /metrics` with its
/// headers is a few hundred bytes; this is room for a proxy's additions,
/// and all one connection can make the thread hold.
pub const MAX_REQUEST: usize = 8 * 1024;

/// How long one connection may take to send its request, in all (and, if
/// it was too large, to stop sending): the endpoint serves one connection
/// at a time, so a scraper that trickles bytes holds it for this long at
/// most, however it trickles.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The endpoint's thread, serving until [`Endpoint::stop`] (or the
/// process's end).
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Endpoint {
    /// Binds `addr` and starts answering scrapes of `registry`.
    pub fn serve(addr: &str, registry: Arc<Registry>) -> Result<Endpoint, Error> {
        let bind_error = |source| Error::Bind {
            addr: addr.to_string(),
            source,
        };
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(bind_error)?.collect();
        let listener = TcpListener::bind(&addrs[..]).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for socket in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    // A connection that failed is the scraper's loss, not
                    // the endpoint's: on to the next.
                    if let Ok(socket) = socket {
                        let _ = answer(socket, &registry);
                    }
                }
            })
            .map_err(Error::Thread)?;
        Ok(Endpoint { addr, stop, thread })
    }

    /// The address actually bound (after port 0, the port given).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and waits for the thread, which is at most one
    /// request's [`REQUEST_TIMEOUT`] away from seeing it.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        // `accept` cannot be interrupted: a connection of our own wakes it.
        // If it fails, the listener is already gone.
        let _ = TcpStream::connect_timeout(&self.addr, REQUEST_TIMEOUT);
        let _ = self.thread.join();
    }
}

/// What a request asked for, as far as the endpoint cares.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics,
    Other,
    TooLarge,
}

/// Reads one request and answers it, then closes the connection.
fn answer(mut socket: TcpStream, registry: &Registry) -> io::Result<()> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let request = read_request(&mut socket, deadline)?;
    let (status, body) = match request {
        Request::Metrics => ("200 OK", registry.render()),
        Request::Other => (
            "404 Not Found",
            "only /metrics is served here\n".to_string(),
        ),
        Request::TooLarge => (
            "431 Request Header Fields Too Large",
            "request too large\n".to_string(),
        ),
    };
    let content_type = match request {
        Request::Metrics => CONTENT_TYPE,
        _ => "text/plain; charset=utf-8",
    };
    socket.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes())?;
    socket.write_all(body.as_bytes())?;
    socket.shutdown(Shutdown::Write)?;
    // Closing with the rest of a request too large unread would reset the
    // connection, and the scraper could lose the answer: what it still
    // sends is read and dropped until it hangs up, within the same deadline.
    if request == Request::TooLarge {
        discard_until_closed(&mut socket, deadline)?;
    }
    Ok(())
}

/// Reads and drops what the peer still sends until it hangs up, until
/// `deadline` and for eight times [`MAX_REQUEST`] bytes at most.
fn discard_until_closed(socket: &mut TcpStream, deadline: Instant) -> io::Result<()> {
    let mut buf = [0u8; 1024];
    let mut left = 8 * MAX_REQUEST;
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(wait))?;
        match socket.read(&mut buf)? {
            0 => break,
            n => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

/// Reads the request's head (up to the empty line), before `deadline` and
/// within [`MAX_REQUEST`] bytes.
fn read_request(socket: &mut TcpStream, deadline: Instant) -> io::Result<Request> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            return Ok(Request::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        socket.set_read_timeout(Some(left))?;
        let room = (MAX_REQUEST - head.len()).min(buf.len());
        match socket.read(&mut buf[..room])? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    Ok(parse(&head))
}

/// `GET /metrics` (a query after it is allowed) over HTTP/1.x is the one
/// request answered with figures.
fn parse(head: &[u8]) -> Request {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Request::Other;
    };
    let path = target.split('?').next().unwrap_or_default();
    if method == "GET" && path == "/metrics" && version.starts_with("HTTP/1.") {
        Request::Metrics
    } else {
        Request::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_a_scrape() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0\n\n"), Request::Metrics);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Request::Other);
        assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n"), Request::Other);
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Request::Other);
        assert_eq!(parse(b"\xff\xfe\r\n\r\n"), Request::Other);
    }

    /// Sends `request` to a fresh endpoint; returns what came back.
    fn ask(request: &[u8]) -> String {
        let endpoint = Endpoint::serve("127.0.0.1:0", Registry::new()).unwrap();
        let mut socket = TcpStream::connect(endpoint.local_addr()).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The endpoint may answer and close before all of a large request
        // is written: what it said is what counts.
        let _ = socket.write_all(request);
        let _ = socket.shutdown(Shutdown::Write);
        let mut reply = String::new();
        let _ = socket.read_to_string(&mut reply);
        endpoint.stop();
        reply
    }

    #[test]
    fn a_scrape_gets_the_text_format_and_anything_else_404() {
        let reply = ask(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("version=0.0.4"), "{reply}");
        assert!(
            reply.contains("# TYPE chat_server_threads gauge"),
            "{reply}"
        );
        let reply = ask(b"GET /secret HTTP/1.1\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 404 Not Found\r\n"), "{reply}");
    }

    #[test]
    fn a_request_past_the_cap_is_refused_without_being_read_whole() {
        let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'a', 4 * MAX_REQUEST));
        let reply = ask(&request);
        assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    }

    #[test]
    fn a_silent_scraper_is_dropped_after_the_timeout() {
        let endpoint = Endpoint::serve("127.0.0.1:0", Registry::new()).unwrap();
        let silent = TcpStream::connect(endpoint.local_addr()).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut reply = Vec::new();
        // The endpoint closes without a word once its timeout passes.
        let read = (&silent).read_to_end(&mut reply);
        assert!(read.is_ok() && reply.is_empty(), "{read:?} {reply:?}");
        assert!(started.elapsed() >= REQUEST_TIMEOUT - Duration::from_millis(100));
        endpoint.stop();
    }
}
