//! The link's pure parts: keys, payloads, node names, errors.

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
