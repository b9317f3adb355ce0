//! The feed's own tests: what it queues, drops and counts, what waits
//! beside the queue, and what reaches the file when the hub lets go.
//! The file's and the writer's tests are in their modules.

use super::*;
use crate::slow_readers::Policy;

fn feed(queue_len: usize, budget: &Arc<Budget>) -> (Feed, Receiver<Queued>) {
    let (writes, queue) = crossbeam_channel::bounded(queue_len);
    let feed = Feed {
        writes,
        pending: Arc::default(),
        counts: Arc::default(),
        budget: Arc::clone(budget),
        names: HashMap::new(),
        told_full: false,
        keeps_lines: true,
        writer: std::thread::current(),
        since_nudge: 0,
        last_at: SystemTime::UNIX_EPOCH,
    };
    (feed, queue)
}

#[test]
fn a_full_queue_drops_and_counts_and_the_budget_counts_what_waits() {
    let budget = Budget::new(&Policy::default());
    let (mut feed, queue) = feed(2, &budget);
    let counts = Arc::clone(&feed.counts);
    let mut asked = 0;
    let mut name = || {
        asked += 1;
        Some("#Tea".to_string())
    };
    let text: Arc<str> = "chat a hi\n".into();
    feed.line(RoomId(7), &mut name, &text);
    feed.line(RoomId(7), &mut name, &text);
    feed.line(RoomId(7), &mut name, &text);
    assert_eq!(asked, 1, "the room's name is asked once");
    let cost = LINE_OVERHEAD + "#Tea".len() + text.len();
    assert_eq!(budget.store_used(), 2 * cost);
    assert_eq!(budget.used(), 0, "the store's share is apart");
    assert_eq!(counts.queued.load(Ordering::Relaxed), 2);
    assert_eq!(counts.dropped.load(Ordering::Relaxed), 1);
    match queue.try_recv() {
        Ok(Queued::Line(Change::Line { room, text, .. })) => {
            assert_eq!((&*room, &*text), ("#Tea", "chat a hi\n"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn past_the_stores_share_a_line_is_dropped_and_the_hub_never_pauses() {
    // A budget so small that the share is its floor.
    let budget = Budget::new(&Policy {
        memory_budget: 1000,
        ..Policy::default()
    });
    let (mut feed, _queue) = feed(QUEUE_WRITES, &budget);
    // The hub's own count at its limit: a line the feed counted there
    // instead of in the store's share would pause it.
    budget.charge(1000);
    assert!(!budget.is_over());
    let text: Arc<str> = format!("chat a {}\n", "x".repeat(4000)).into();
    for _ in 0..QUEUE_WRITES {
        feed.line(RoomId(1), || Some("#a".into()), &text);
    }
    let cost = LINE_OVERHEAD + "#a".len() + text.len();
    let fit = budget.store_share() / cost;
    assert!(fit < QUEUE_WRITES);
    assert_eq!(feed.counts.queued.load(Ordering::Relaxed), fit);
    let dropped = feed.counts.dropped.load(Ordering::Relaxed);
    assert_eq!(dropped, (QUEUE_WRITES - fit) as u64);
    assert!(budget.store_used() <= budget.store_share());
    assert_eq!(budget.used(), 1000, "the store's lines are its share's");
    assert!(!budget.is_over(), "a stalled disk must not pause the hub");
}

#[test]
fn with_no_history_kept_no_line_is_queued() {
    let budget = Budget::new(&Policy::default());
    let (mut feed, queue) = feed(4, &budget);
    feed.keeps_lines = false;
    feed.line(RoomId(1), || Some("#a".into()), &"chat a hi\n".into());
    assert!(queue.is_empty());
    feed.topic(RoomId(1), || Some("#a".into()), &"still kept".into());
    assert_eq!(feed.pending.take().len(), 1);
}

#[test]
fn topics_rules_and_bans_are_pending_never_dropped_the_latest_of_each() {
    let budget = Budget::new(&Policy::default());
    let (mut feed, queue) = feed(1, &budget);
    let counts = Arc::clone(&feed.counts);
    let text: Arc<str> = "chat a hi\n".into();
    // The queue is full of a line: the disk is behind.
    feed.line(RoomId(1), || Some("#Tea".into()), &text);
    let rules = |text: &str| Change::Rules {
        room: "#tea".into(),
        text: Some(text.into()),
    };
    feed.save(Change::ServerBans(Some("first".into())));
    feed.save(rules("old"));
    feed.save(rules("new"));
    feed.save(Change::ServerBans(None));
    assert_eq!(counts.dropped.load(Ordering::Relaxed), 0);
    let pending = [rules("new"), Change::ServerBans(None)];
    let cost: usize =
        pending.iter().map(Change::cost).sum::<usize>() + LINE_OVERHEAD + "#Tea".len() + text.len();
    assert_eq!(budget.store_used(), cost, "pending counts, once each");
    assert_eq!(counts.queued.load(Ordering::Relaxed), 3);
    assert!(matches!(queue.try_recv(), Ok(Queued::Line(_))));
    assert!(queue.is_empty(), "no wake fitted in the full queue");
    assert_eq!(feed.pending.take(), pending);
    // Once there is room, the first pending change wakes the writer.
    feed.save(rules("newer"));
    assert!(matches!(queue.try_recv(), Ok(Queued::LookAtPending)));
    feed.save(rules("newest"));
    assert!(queue.is_empty(), "one wake is enough");
    assert_eq!(feed.pending.take(), [rules("newest")]);
}

#[test]
fn what_is_pending_when_the_feed_goes_is_written() {
    let dir = std::env::temp_dir().join(format!("store-feed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let keep = Retention {
        lines: 50,
        room_bytes: KEEP_ROOM_BYTES,
        days: KEEP_DAYS,
    };
    let budget = Budget::new(&Policy::default());
    let opened = open(&dir, keep).unwrap().expect("a writable directory");
    let counts = opened.counts();
    let (Kept { mut feed, .. }, writing) = opened.start(&budget).unwrap();
    for n in 0..100 {
        feed.save(Change::Rules {
            room: format!("#room{n}"),
            text: Some(format!("ban {n}")),
        });
    }
    feed.save(Change::ServerBans(Some("ban everyone".into())));
    // The feed has nothing to hand over as it goes (no Drop): what
    // is pending is the writer's to take.
    drop(feed);
    assert!(writing.finish(Duration::from_secs(10)), "the writer ended");
    assert_eq!(counts.written.load(Ordering::Relaxed), 101);
    assert_eq!(budget.store_used(), 0);
    let loaded = open(&dir, keep).unwrap().unwrap().loaded;
    assert_eq!(loaded.rooms.len(), 100);
    assert_eq!(loaded.server_bans.as_deref(), Some("ban everyone"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stalled_disk_drops_lines_never_pauses_the_hub_and_writes_a_later_ban() {
    let dir = std::env::temp_dir().join(format!("store-stall-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let keep = Retention {
        lines: 50,
        room_bytes: KEEP_ROOM_BYTES,
        days: KEEP_DAYS,
    };
    // A budget the queue alone would fill many times over.
    let budget = Budget::new(&Policy {
        memory_budget: 64 * 1024,
        ..Policy::default()
    });
    let opened = open(&dir, keep).unwrap().expect("a writable directory");
    let counts = opened.counts();
    let (Kept { mut feed, .. }, writing) = opened.start(&budget).unwrap();
    // Another connection holds the file's write lock: the writer's
    // next commit waits on it, as on a disk that stalls.
    let stall = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    stall.execute_batch("BEGIN IMMEDIATE").unwrap();
    // The hub's own count at its limit, as in a burst to slow readers.
    budget.charge(64 * 1024);
    let text: Arc<str> = format!("chat a {}\n", "x".repeat(100)).into();
    for _ in 0..2 * QUEUE_WRITES {
        feed.line(RoomId(1), || Some("#Tea".into()), &text);
    }
    assert!(counts.dropped.load(Ordering::Relaxed) > 0);
    assert_eq!(
        budget.used(),
        64 * 1024,
        "the store's lines are its share's"
    );
    assert!(!budget.is_over(), "the hub would pause for the disk");
    // The op bans while the disk is behind, then the room goes quiet.
    feed.save(Change::Rules {
        room: "#tea".into(),
        text: Some("ban troll".into()),
    });
    stall.execute_batch("ROLLBACK").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let read = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    let banned = || {
        read.query_row("SELECT rules FROM rooms WHERE key = '#tea'", [], |row| {
            row.get::<_, Option<String>>(0)
        })
        .ok()
        .flatten()
    };
    // Nothing more is said: the writer alone must get the ban on disk.
    while banned().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(banned().as_deref(), Some("ban troll"));
    drop(feed);
    assert!(writing.finish(Duration::from_secs(10)), "the writer ended");
    drop((read, stall));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_line_is_never_said_before_the_one_before_it() {
    let budget = Budget::new(&Policy::default());
    let (mut feed, queue) = feed(4, &budget);
    // The clock stepped back an hour since the last line.
    let later = SystemTime::now() + Duration::from_secs(3600);
    feed.last_at = later;
    feed.line(RoomId(1), || Some("#a".into()), &"chat a hi\n".into());
    match queue.try_recv() {
        Ok(Queued::Line(Change::Line { at, .. })) => assert_eq!(at, later),
        other => panic!("{other:?}"),
    }
}
