//! `make cluster-demo` (scripts/cluster-demo.sh): Redis and two servers
//! that share one chat, and haproxy in front of them when it is
//! installed; everything gone again after Ctrl-C.

// Linked servers only: built with the `redis` feature (on by default).
#![cfg(feature = "redis")]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use secure_chat_test_support::{
    finish, free_port, kill, lines_of, Pki, TestClient, SERVER, TIMEOUT,
};

fn person(addr: SocketAddr, pki: &Pki, nick: &str) -> TestClient {
    let mut client = TestClient::connect(addr, &pki.ca);
    client.send(&format!("/nick {nick}"));
    client.recv_until(|line| line == format!("notice you are now {nick}"));
    client.nick = nick.to_owned();
    client
}

/// Stops the demo (Ctrl-C, as a user would) if the test fails before it
/// does so itself: a failed test leaves no Redis or server running.
struct StopOnFailure(Option<u32>);

impl Drop for StopOnFailure {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // Best effort on the way out of a failing test: the assertion
            // that failed is what the test reports, not this.
            kill(pid, "-INT");
        }
    }
}

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

#[test]
fn cluster_demo_runs_two_servers_that_share_one_chat() {
    let pki = Pki::new();
    let certs = pki.cert.parent().expect("the certificates' directory");
    let [port, a, b, redis_port] = [(); 4].map(|()| free_port());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster-demo.sh");
    let mut child = Command::new(script)
        .env("CERTS_DIR", certs)
        .env("SERVER", SERVER.path())
        .env("DEMO_PORT", port.to_string())
        .env("DEMO_A_PORT", a.to_string())
        .env("DEMO_B_PORT", b.to_string())
        .env("DEMO_REDIS_PORT", redis_port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scripts/cluster-demo.sh");
    let mut guard = StopOnFailure(Some(child.id()));
    let out = lines_of(child.stdout.take().expect("stdout"));
    let errors = lines_of(child.stderr.take().expect("stderr"));
    let mut said = Vec::new();
    loop {
        // Redis and two servers, each given up to ten seconds.
        match out.recv_timeout(3 * TIMEOUT) {
            Ok(line) if line.contains("Ctrl-C stops everything") => break,
            Ok(line) => said.push(line),
            Err(_) => {
                kill(child.id(), "-INT");
                let errors: Vec<String> = errors.try_iter().collect();
                panic!("the demo did not start; it said: {said:?} {errors:?}");
            }
        }
    }
    let text = said.join("\n");
    assert!(
        text.contains(&format!("--addr localhost:{a} --nick alice")),
        "{text}"
    );
    assert!(
        text.contains(&format!("--addr localhost:{b} --nick bob")),
        "{text}"
    );

    let mut alice = person(SocketAddr::from(([127, 0, 0, 1], a)), &pki, "alice");
    let bob = person(SocketAddr::from(([127, 0, 0, 1], b)), &pki, "bob");
    alice.send("/who");
    alice.recv_until(|line| line == "notice in #lobby (2): alice, bob");
    alice.send("hello, b");
    bob.recv_until(|line| line == "chat alice hello, b");
    let haproxy = Command::new("haproxy").arg("-v").output().is_ok();
    if haproxy {
        // Through the balancer, on either server: one chat all the same.
        // The script starts haproxy last and does not wait for it.
        assert!(
            secure_chat_test_support::wait_until(|| listening(port)),
            "haproxy never listened on {port}"
        );
        let carol = person(SocketAddr::from(([127, 0, 0, 1], port)), &pki, "carol");
        alice
            .recv_until(|line| line.starts_with("notice guest") && line.ends_with(" is now carol"));
        drop(carol);
    } else {
        assert!(text.contains("With haproxy installed"), "{text}");
    }
    drop((alice, bob));

    guard.0 = None;
    assert!(kill(child.id(), "-INT"));
    let output = finish(child);
    assert!(output.status.success(), "{:?}", output.status);
    for port in [a, b, redis_port, port] {
        assert!(
            !listening(port),
            "port {port} still open after the demo stopped"
        );
    }
}
