//! A master killed by its process id in the middle of a burst: its
//! replica takes over, the chat goes on, the users are told while the
//! link is down, and every line that arrives arrives once and in order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use secure_chat::linked::{LINK_DOWN, LINK_UP};
use secure_chat_test_support::{wait_until, TestClient};

use crate::{enter, notice, person, shard_of_room, wait_subscribed, Two};

/// Replication is asynchronous: lines the killed master numbered and sent
/// out shortly before its death, but had not yet passed to its replica,
/// are gone with it. This bounds "shortly": a line said earlier than this
/// before the kill must arrive. (Redis passes writes on within
/// milliseconds; the rest is a loaded test machine's slack.)
const REPLICATION_LAG: Duration = Duration::from_secs(1);

/// The pace of each room's sender: fast enough to be a burst, slow
/// enough that the burst can last through the failover (some seconds)
/// without piling up tens of thousands of lines.
const PACE: Duration = Duration::from_millis(2);

/// Lines each sender says once the link is back everywhere: all of them
/// must arrive.
const AFTER: usize = 50;

/// Sets its flag when dropped, however the scope it is in ends.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Says "0", "1", ... in its room until `stop`; returns the client and
/// when each line was said.
fn burst(mut client: TestClient, stop: &AtomicBool) -> (TestClient, Vec<Instant>) {
    let mut said_at = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        said_at.push(Instant::now());
        client.send(&(said_at.len() - 1).to_string());
        thread::sleep(PACE);
    }
    (client, said_at)
}

/// The longest a user may wait for what [`read_until`] waits for: a
/// failover takes about two seconds here, and lines keep arriving
/// meanwhile, so a timeout per line alone would not end a wait for a
/// notice that never comes.
const WAIT: Duration = Duration::from_secs(30);

/// Reads `client`'s lines into `seen` until one satisfies `done`
/// (included). Fails the test, saying `what` it waited for and the last
/// lines seen, when nothing arrives for 10 s (the support crate's
/// `TIMEOUT`) or the whole wait takes longer than [`WAIT`].
fn read_until(
    client: &TestClient,
    seen: &mut Vec<String>,
    what: &str,
    mut done: impl FnMut(&str) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let waited = Instant::now() < deadline && wait_until(|| !client.nothing_pending());
        assert!(
            waited,
            "{}: waited for {what} in vain; the last lines: {:?}",
            client.nick,
            &seen[seen.len().saturating_sub(5)..]
        );
        let line = client.recv();
        let last = done(&line);
        seen.push(line);
        if last {
            return;
        }
    }
}

/// What one user saw of a room whose only speaker is `speaker`.
#[derive(Debug, Default)]
struct View {
    /// The burst's numbers, in the order they arrived.
    burst: Vec<usize>,
    /// The numbers of the lines said after the link was back.
    after: Vec<usize>,
    /// Where in `burst` the link-down and link-up notices came.
    down: Vec<usize>,
    up: Vec<usize>,
}

impl View {
    fn of(lines: &[String], speaker: &str) -> View {
        let mut view = View::default();
        let chat = format!("chat {speaker} ");
        let (down, up) = (notice(LINK_DOWN), notice(LINK_UP));
        for line in lines {
            if let Some(text) = line.strip_prefix(&chat) {
                match text.strip_prefix("after ") {
                    Some(j) => view.after.push(j.parse().expect("an after-line's number")),
                    None => {
                        assert!(view.after.is_empty(), "burst line {text} after the burst");
                        view.burst
                            .push(text.parse().expect("a burst line's number"));
                    }
                }
            } else if line.starts_with(&down) {
                view.down.push(view.burst.len());
            } else if line.starts_with(&up) {
                view.up.push(view.burst.len());
            }
        }
        view
    }
}

/// Checks what the listener on the other server saw of a room: the
/// burst's lines once each and in the order said; the only ones missing
/// said no earlier than [`REPLICATION_LAG`] before the kill; every line
/// said after the link came back, in order. Returns how many burst lines
/// are missing.
fn check_listener(who: &str, view: &View, said_at: &[Instant], killed_at: Instant) -> usize {
    assert!(
        view.burst.windows(2).all(|pair| pair[0] < pair[1]),
        "{who}: burst lines twice or out of order: {:?}",
        view.burst
    );
    assert_eq!(
        view.after,
        (0..AFTER).collect::<Vec<_>>(),
        "{who}: lines said after the failover"
    );
    check_losses(who, view, said_at, killed_at)
}

/// Checks what the speaker saw of their own room, on their own server:
/// each line of the burst at most once; those the other server saw too
/// (the lines that went through Redis) in the same order as there; the
/// only ones missing said no earlier than [`REPLICATION_LAG`] before the
/// kill; every line said after the link came back, in order. Lines said
/// while the link was down are shown here at once, and lines that were
/// on their way to Redis at the kill only once the link is back, so the
/// burst as a whole need not be in order here.
fn check_speaker(
    who: &str,
    view: &View,
    listener: &View,
    said_at: &[Instant],
    killed_at: Instant,
) -> usize {
    let mut once = view.burst.clone();
    once.sort_unstable();
    once.dedup();
    assert_eq!(
        once.len(),
        view.burst.len(),
        "{who}: a burst line twice: {:?}",
        view.burst
    );
    let crossed: HashSet<usize> = listener.burst.iter().copied().collect();
    let in_common: Vec<usize> = view
        .burst
        .iter()
        .copied()
        .filter(|n| crossed.contains(n))
        .collect();
    assert_eq!(
        in_common, listener.burst,
        "{who}: the lines that crossed came in another order than on the other server"
    );
    let sorted = View {
        burst: once,
        ..View::default()
    };
    assert_eq!(
        view.after,
        (0..AFTER).collect::<Vec<_>>(),
        "{who}: lines said after the failover"
    );
    check_losses(who, &sorted, said_at, killed_at)
}

/// The lines of the burst missing from `view.burst` (in increasing
/// order) were all said no earlier than [`REPLICATION_LAG`] before the
/// kill; returns how many.
fn check_losses(who: &str, view: &View, said_at: &[Instant], killed_at: Instant) -> usize {
    let mut heard = view.burst.iter().peekable();
    let mut missing = 0;
    for (n, &at) in said_at.iter().enumerate() {
        if heard.peek() == Some(&&n) {
            heard.next();
            continue;
        }
        assert!(
            at + REPLICATION_LAG >= killed_at,
            "{who}: line {n}, said {:?} before the kill, never arrived",
            killed_at - at
        );
        missing += 1;
    }
    assert_eq!(heard.next(), None, "{who}: a line nobody said");
    missing
}

/// Three rooms, one on each shard, a speaker on server a and a listener
/// on server b in each, saying a line every 2 ms; shard 1's master is
/// killed once its room's listener has heard 100 lines. Its replica is
/// promoted (about two seconds here); meanwhile that room's users are
/// told the link is down, and then that it is back.
///
/// What may be lost, and nothing more: lines said while a server's link
/// was down (they stay on that server, as its users are told), and lines
/// the dead master took with it (numbered and sent out, not yet passed to
/// its replica), said within [`REPLICATION_LAG`] before the kill. Nothing
/// arrives twice; on the other server the lines come in the order said,
/// and on the speaker's own the lines that crossed come in that order
/// too; every line said once the link is back arrives everywhere.
#[test]
fn a_master_killed_mid_burst_its_replica_takes_over_and_the_chat_goes_on() {
    let mut two = Two::start();
    let rooms = ["#birch", "#fir", "#ash"];
    let victim = 1;
    for (shard, room) in rooms.iter().enumerate() {
        assert_eq!(shard_of_room(room), shard, "{room}");
    }
    let mut speakers = Vec::new();
    let mut listeners = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let mut speaker = person(&two.a, &two.pki, &format!("s{i}"));
        let mut listener = person(&two.b, &two.pki, &format!("l{i}"));
        enter(&mut speaker, room);
        enter(&mut listener, room);
        speakers.push(speaker);
        listeners.push(listener);
    }
    for room in rooms {
        wait_subscribed(&two.cluster, room, 2);
    }

    let stop = AtomicBool::new(false);
    let mut heard: Vec<Vec<String>> = vec![Vec::new(); rooms.len()];
    let mut spoken: Vec<Vec<String>> = vec![Vec::new(); rooms.len()];
    let (killed_at, took, burst_ends) = thread::scope(|scope| {
        // The scope waits for the speakers even when the test fails in
        // it: they must hear the stop then too.
        let _stop_anyway = StopOnDrop(&stop);
        let running: Vec<_> = speakers
            .drain(..)
            .map(|speaker| {
                let stop = &stop;
                scope.spawn(move || burst(speaker, stop))
            })
            .collect();
        let victim_speaker = format!("chat s{victim} ");
        let mut lines = 0;
        read_until(
            &listeners[victim],
            &mut heard[victim],
            "100 lines",
            |line| {
                lines += usize::from(line.starts_with(&victim_speaker));
                lines == 100
            },
        );
        let killed_at = Instant::now();
        let took = two.cluster.kill_master(victim);
        let up = notice(LINK_UP);
        read_until(
            &listeners[victim],
            &mut heard[victim],
            "the link back",
            |line| line.starts_with(&up),
        );
        stop.store(true, Ordering::Relaxed);
        let ends: Vec<Vec<Instant>> = running
            .into_iter()
            .map(|thread| {
                let (speaker, said_at) = thread.join().expect("a speaker");
                speakers.push(speaker);
                said_at
            })
            .collect();
        (killed_at, took, ends)
    });
    eprintln!("shard {victim}'s replica promoted {took:?} after the kill");
    let up = notice(LINK_UP);
    read_until(
        &speakers[victim],
        &mut spoken[victim],
        "the link back",
        |line| line.starts_with(&up),
    );
    let last_burst = burst_ends[victim].last().expect("the burst went on");
    assert!(
        *last_burst > killed_at + took,
        "the burst ended before the promotion"
    );

    for speaker in speakers.iter_mut() {
        for j in 0..AFTER {
            speaker.send(&format!("after {j}"));
        }
    }
    for (i, room) in rooms.iter().enumerate() {
        let last = format!("chat s{i} after {}", AFTER - 1);
        read_until(
            &speakers[i],
            &mut spoken[i],
            "the lines said after",
            |line| line == last,
        );
        read_until(
            &listeners[i],
            &mut heard[i],
            "the lines said after",
            |line| line == last,
        );
        let speaker = format!("s{i}");
        let listener = View::of(&heard[i], &speaker);
        let spoke = View::of(&spoken[i], &speaker);
        let said = &burst_ends[i];
        let on_b = format!("{room}'s listener on b");
        let on_a = format!("{room}'s speaker on a");
        let lost_b = check_listener(&on_b, &listener, said, killed_at);
        let lost_a = check_speaker(&on_a, &spoke, &listener, said, killed_at);
        eprintln!(
            "{room}: {} lines said in the burst; lost on b {lost_b}, on a {lost_a}",
            said.len()
        );
        if i == victim {
            // Told while the link was down: a down notice, then an up
            // notice after it.
            for (who, view) in [(&on_b, &listener), (&on_a, &spoke)] {
                let down = view
                    .down
                    .first()
                    .unwrap_or_else(|| panic!("{who}: never told the link was down"));
                assert!(
                    view.up.iter().any(|up| up >= down),
                    "{who}: told the link was down, never that it was back"
                );
            }
        }
    }
    drop((speakers, listeners));
    two.stop();
}
