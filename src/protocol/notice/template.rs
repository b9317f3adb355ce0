//! Templates with named slots (`{nick} joined {room}`): filled to write a
//! line, matched to read one back. What a slot may hold is the caller's to
//! say; this module knows nothing of nicks or rooms.

use std::fmt::{self, Display, Write};

/// Says whether the slot named by the first argument may hold the second.
pub(super) type Holds<'h> = &'h dyn Fn(&str, &str) -> bool;

/// Writes `template` with each `{slot}` replaced by its value.
pub(super) fn fill(
    out: &mut impl Write,
    template: &str,
    values: &[(&str, &dyn Display)],
) -> fmt::Result {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.write_str(&rest[..open])?;
        rest = &rest[open..];
        // A brace never closed is text, written as it stands.
        let Some(close) = rest.find('}') else {
            break;
        };
        let name = &rest[1..close];
        if let Some((_, value)) = values.iter().find(|(slot, _)| *slot == name) {
            write!(out, "{value}")?;
        }
        rest = &rest[close + 1..];
    }
    out.write_str(rest)
}

/// The slots of one template, as read from one text.
pub(super) struct Caught<'a>(Vec<(String, &'a str)>);

impl<'a> Caught<'a> {
    /// What the slot `slot` held.
    pub(super) fn text(&self, slot: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(name, _)| name == slot)
            .map(|(_, value)| *value)
    }

    /// What the slot `slot` held, as a number.
    pub(super) fn number(&self, slot: &str) -> Option<usize> {
        self.text(slot)?.parse().ok()
    }
}

/// Reads `text` as `template`, every slot holding what `holds` allows;
/// `None` if it does not read so.
pub(super) fn capture<'a>(template: &str, text: &'a str, holds: Holds<'_>) -> Option<Caught<'a>> {
    let mut caught = Caught(Vec::new());
    matches(template, text, holds, &mut caught).then_some(caught)
}

/// The matching itself: the text before the first slot must be there as
/// written; then each place where the text after the slot appears is
/// tried, in order, until the rest matches too. A slot holding what it may
/// not is no match; a slot named twice must hold the same both times.
fn matches<'a>(template: &str, text: &'a str, holds: Holds<'_>, caught: &mut Caught<'a>) -> bool {
    let open = template.find('{').unwrap_or(template.len());
    let Some(text) = text.strip_prefix(&template[..open]) else {
        return false;
    };
    let template = &template[open..];
    if template.is_empty() {
        return text.is_empty();
    }
    let Some(close) = template.find('}') else {
        return false;
    };
    let name = &template[1..close];
    let after = &template[close + 1..];
    let literal = &after[..after.find('{').unwrap_or(after.len())];
    let ends: Vec<usize> = if after.is_empty() {
        vec![text.len()]
    } else if literal.is_empty() {
        // Two slots side by side: nothing tells where the first ends.
        return false;
    } else {
        text.match_indices(literal).map(|(at, _)| at).collect()
    };
    for end in ends {
        let value = &text[..end];
        let same = caught.text(name).is_none_or(|before| before == value);
        if !same || !holds(name, value) {
            continue;
        }
        caught.0.push((name.to_string(), value));
        if matches(after, &text[end..], holds, caught) {
            return true;
        }
        caught.0.pop();
    }
    false
}

/// The ways `text` may end with `template`, whose one slot is `slot`: each
/// with what comes before and the slot's value; and last the text whole,
/// with no such ending.
pub(super) fn suffixes<'a>(
    template: &str,
    slot: &str,
    text: &'a str,
    holds: Holds<'_>,
) -> Vec<(&'a str, Option<&'a str>)> {
    let lead = &template[..template.find('{').unwrap_or(template.len())];
    let mut found = Vec::new();
    if !lead.is_empty() {
        for (at, _) in text.match_indices(lead) {
            if let Some(caught) = capture(template, &text[at..], holds) {
                found.push((&text[..at], caught.text(slot)));
            }
        }
    }
    found.push((text, None));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &str, _: &str) -> bool {
        true
    }

    fn no_spaces(_: &str, value: &str) -> bool {
        !value.is_empty() && !value.contains(' ')
    }

    #[test]
    fn fill_puts_each_value_in_its_slot() {
        let mut out = String::new();
        fill(&mut out, "{a} and {b}, {a}!", &[("a", &1), ("b", &"two")]).unwrap();
        assert_eq!(out, "1 and two, 1!");
        // Text after an unclosed brace is written once, as it stands.
        out.clear();
        fill(&mut out, "{a} is {b", &[("a", &1), ("b", &2)]).unwrap();
        assert_eq!(out, "1 is {b");
    }

    #[test]
    fn a_slot_ends_where_the_rest_can_still_match() {
        let caught = capture("{x} is {y}.", "a is b is c.", &no_spaces);
        assert!(caught.is_none(), "no reading keeps both slots single words");
        let caught = capture("{x} is {y}.", "a is b is c.", &any).unwrap();
        assert_eq!(
            (caught.text("x"), caught.text("y")),
            (Some("a"), Some("b is c"))
        );
        let caught = capture("<{x}>", "<a>b>", &any).unwrap();
        assert_eq!(caught.text("x"), Some("a>b"));
        assert!(capture("{x} is {x}", "a is b", &any).is_none());
        assert!(capture("{x}{y}", "ab", &any).is_none());
        assert!(capture("hi {x}", "ho there", &any).is_none());
    }

    #[test]
    fn suffixes_offer_every_ending_and_none() {
        let found = suffixes(" ({r})", "r", "a (b) (c)", &any);
        assert_eq!(
            found,
            [
                ("a", Some("b) (c")),
                ("a (b)", Some("c")),
                ("a (b) (c)", None)
            ]
        );
    }
}
