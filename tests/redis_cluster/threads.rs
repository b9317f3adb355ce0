//! The link's listening threads on a cluster: one per master and one for
//! the classic channels while the link is up, as many again (not twice
//! as many) once a failover is over, and none once the link stopped.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use secure_chat::linked::redis_link::{Delivery, RedisLink};
use secure_chat_test_support::{quick_link, thread_names, wait_until, RedisCluster, TempDir};

/// Set in the child process that runs the test alone.
const ALONE: &str = "SECURE_CHAT_TEST_THREADS_ALONE";

/// The listening threads' names as /proc shows them (cut to 15 bytes).
const LISTENING: &str = "redis-hear";

/// A master of each of the three shards, and the classic channels.
const EXPECTED: usize = 4;

/// How many threads of this process listen.
fn listening_threads() -> usize {
    thread_names()
        .iter()
        .filter(|name| name.starts_with(LISTENING))
        .count()
}

/// Waits for the delivery `wanted` picks, passing over others.
fn wait_for(
    deliveries: &crossbeam_channel::Receiver<Delivery>,
    what: &str,
    wanted: fn(&Delivery) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match deliveries.recv_timeout(left) {
            Ok(delivery) if wanted(&delivery) => return,
            Ok(_) => {}
            Err(error) => panic!("waited for {what} in vain: {error}"),
        }
    }
}

/// Threads are counted per process, and the other tests of this binary
/// run beside this one with links of their own: the test runs itself
/// again, alone in a process of its own, and checks that run.
#[test]
fn listening_threads_end_with_their_session_and_with_the_link() {
    if std::env::var_os(ALONE).is_some() {
        alone();
        return;
    }
    let output = TempDir::new();
    let me = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(me)
        .args([
            "threads::listening_threads_end_with_their_session_and_with_the_link",
            "--exact",
            "--test-threads=1",
        ])
        .env(ALONE, "1")
        // A group of its own: on a timeout it is killed with the
        // redis-servers it started, which its drop would have stopped.
        .process_group(0)
        // What the test alone says (a failure's message) is kept, to be
        // shown if it fails.
        .stdout(Stdio::from(
            std::fs::File::create(output.path().join("out")).expect("its output file"),
        ))
        .spawn()
        .expect("the test, alone");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child's status") {
            break status;
        }
        if Instant::now() >= deadline {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            panic!("the test, alone, did not end in two minutes");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let said = std::fs::read_to_string(output.path().join("out")).unwrap_or_default();
    assert!(status.success(), "the test, alone: {status}\n{said}");
}

/// The test proper: a link to a cluster of its own, in a room; one of
/// its masters killed; the link stopped.
fn alone() {
    let mut cluster = RedisCluster::start();
    assert_eq!(listening_threads(), 0, "listening before any link");
    let (link, deliveries) =
        RedisLink::start(&cluster.url(), "t", quick_link()).expect("the link starts");
    link.join_room("#birch");
    let mut seen = 0;
    assert!(
        wait_until(|| {
            seen = listening_threads();
            seen == EXPECTED
        }),
        "{seen} listening threads, not {EXPECTED}"
    );

    cluster.kill_master(1);
    wait_for(&deliveries, "the link down", |delivery| {
        matches!(delivery, Delivery::LinkDown { .. })
    });
    wait_for(&deliveries, "the link back", |delivery| {
        matches!(delivery, Delivery::LinkUp { .. })
    });
    // The session that ended waited for its threads before the next one
    // began: exactly the new session's are left.
    assert_eq!(listening_threads(), EXPECTED, "after the failover");

    drop(link);
    assert_eq!(listening_threads(), 0, "after the link stopped");
}
