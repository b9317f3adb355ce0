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
    let lines = ["chat alice hello there\n", "", "12:34", "a b c", "été"];
    let text = format!("{} {} {}", 42, "node-a", frame(lines));
    assert_eq!(
        parse_payload(text.as_bytes()),
        Some((42, "node-a", lines.to_vec()))
    );
    // An empty line is still a line; no line at all is no batch.
    assert_eq!(parse_payload(b"7 b 0:"), Some((7, "b", vec![""])));
    assert_eq!(parse_payload(b"7 b "), None);
    assert_eq!(parse_payload(b"x b 1:l"), None);
    assert_eq!(parse_payload(b"7 b"), None);
    assert_eq!(parse_payload(b"7 b 1:\xff"), None);
}

/// No line can break the framing: a newline, a colon, digits, a length
/// in its text, a character of several bytes.
#[test]
fn framing_holds_odd_lines() {
    let odd = [
        "",
        "\n",
        "3:abc",
        "10:",
        ":",
        "0",
        "line\nwith\r\nnewlines",
        "été ☃",
        " leading space",
    ];
    let framed = frame(odd);
    assert_eq!(unframe(&framed), Some(odd.to_vec()));
    for line in odd {
        assert_eq!(unframe(&frame([line])), Some(vec![line]));
    }
    assert_eq!(unframe(""), Some(vec![]));
    // A length that runs past the end, is no number, or cuts a character.
    assert_eq!(unframe("5:abc"), None);
    assert_eq!(unframe("x:abc"), None);
    assert_eq!(unframe("+1:a"), None);
    assert_eq!(unframe(":a"), None);
    assert_eq!(unframe("1:é"), None);
    assert_eq!(unframe("abc"), None);
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

#[test]
fn names_go_in_buckets_of_one_slot_each() {
    let key = name_key("alice");
    let bucket = slots::crc16(b"alice") % NAME_BUCKETS;
    assert_eq!(key, format!("name:{{b{bucket}}}:alice"));
    // Two names of one bucket share a slot; the bucket is the hash tag.
    let same = (0..)
        .map(|n| format!("user{n}"))
        .find(|name| slots::crc16(name.as_bytes()) % NAME_BUCKETS == bucket)
        .expect("a name in alice's bucket");
    assert_eq!(
        slots::slot(&name_key("alice")),
        slots::slot(&name_key(&same))
    );
    assert_eq!(slots::slot(&key), slots::slot(&format!("x{{b{bucket}}}")));
}

#[test]
fn renewals_group_names_by_bucket_each_call_within_a_chunk() {
    let names: Vec<String> = (0..3000).map(|n| format!("guest{n}")).collect();
    let groups = names::by_bucket(&names, true);
    // Every name once, each group of one bucket.
    assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), names.len());
    for group in &groups {
        let slot = slots::slot(&name_key(group[0]));
        assert!(group
            .iter()
            .all(|name| slots::slot(&name_key(name)) == slot));
        assert!(!group.is_empty() && group.len() <= 500);
    }
    // However many names, no more calls than buckets.
    assert!(
        groups.len() <= usize::from(NAME_BUCKETS),
        "{}",
        groups.len()
    );
    assert!(names::by_bucket(&[], true).is_empty());
    // One Redis: chunks of 500, whatever their buckets.
    let chunks = names::by_bucket(&names, false);
    assert_eq!(chunks.len(), 6);
    assert!(chunks.iter().all(|chunk| chunk.len() == 500));
    assert_eq!(chunks[1][0], &names[500]);
}
