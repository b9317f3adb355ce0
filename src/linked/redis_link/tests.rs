//! The link's pure parts: keys, payloads, node names, backoff.

use super::*;

#[test]
fn keys_share_the_room_as_hash_tag() {
    let keys = Keys::of("lobby");
    assert_eq!(keys.seq, "room:{lobby}:seq");
    assert_eq!(keys.history, "room:{lobby}:history");
    assert_eq!(keys.senders, "room:{lobby}:senders");
    assert_eq!(keys.channel, "room:{lobby}");
    assert_eq!(room_of(&keys.channel), Some("lobby"));
    assert_eq!(room_of("other:{lobby}"), None);
    assert_eq!(room_of("room:{lobby"), None);
}

#[test]
fn payload_round_trip() {
    let text = format!("{} {} {}", 42, "node-a", "chat alice hello there\n");
    assert_eq!(
        parse_payload(text.as_bytes()),
        Some((42, "node-a", "chat alice hello there\n"))
    );
    // An empty line is still a line.
    assert_eq!(parse_payload(b"7 b "), Some((7, "b", "")));
    assert_eq!(parse_payload(b"x b line"), None);
    assert_eq!(parse_payload(b"7 b"), None);
    assert_eq!(parse_payload(b"7 b \xff"), None);
}

#[test]
fn node_names() {
    assert!(valid_node_name("eu-1.chat_a"));
    assert!(valid_node_name(&"n".repeat(NODE_NAME_MAX)));
    assert!(!valid_node_name(""));
    assert!(!valid_node_name(&"n".repeat(NODE_NAME_MAX + 1)));
    assert!(!valid_node_name("two words"));
    assert!(!valid_node_name("ünï"));
}

#[test]
fn backoff_doubles_to_the_ceiling_with_jitter() {
    let mut backoff = Backoff::new();
    let mut base = BACKOFF_MIN;
    for round in 0..12u64 {
        let low = backoff.next_with(0);
        backoff.next = base;
        let high = backoff.next_with(1000);
        assert_eq!(low, base.mul_f64(0.75), "round {round}");
        assert_eq!(high, base.mul_f64(1.25), "round {round}");
        base = (base * 2).min(BACKOFF_MAX);
    }
    assert_eq!(backoff.next, BACKOFF_MAX);
    backoff.reset();
    assert!(backoff.next() <= BACKOFF_MIN.mul_f64(1.25));
}

#[test]
fn errors_are_one_line_without_the_password() {
    let settings = LinkSettings::default();
    assert!(matches!(
        Target::new("http://example", &settings),
        Err(LinkError::BadUrl)
    ));
    let target = Target::new("redis://:s3cret@127.0.0.1:1/0", &settings).expect("url");
    assert_eq!(target.addr, "127.0.0.1:1");
    assert!(!format!("{target:?}").contains("s3cret"));
    let error = RedisError::from(io::Error::other("told s3cret"));
    assert!(!target.describe(&error).contains("s3cret"));
    let message = LinkError::BadNodeName("a b".into()).to_string();
    assert!(!message.contains('\n'));
}
