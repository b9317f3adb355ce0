//! What the README tells a learner to read exists where it says: every
//! function its reading guide for one message names is in the file named
//! after it.

use std::fs;
use std::path::Path;

/// The README's section that starts with `heading`, up to the next one.
fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme.find(heading).expect("the section is in the README");
    let rest = &readme[start + heading.len()..];
    &rest[..rest.find("\n### ").unwrap_or(rest.len())]
}

#[test]
fn the_reading_guide_for_one_message_names_functions_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let guide = section(&readme, "### The path of one message");
    let guide = &guide[guide.find("read these functions").expect("the guide")..];
    // `Name`s are gathered until a `src/FILE.rs` they are in.
    let mut names: Vec<&str> = Vec::new();
    let mut checked = 0;
    for (i, quoted) in guide.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        if quoted.starts_with("src/") && quoted.ends_with(".rs") {
            let file = fs::read_to_string(root.join(quoted))
                .unwrap_or_else(|err| panic!("{quoted}: {err}"));
            for name in names.drain(..) {
                let (owner, function) = name.rsplit_once("::").unwrap_or(("", name));
                assert!(
                    file.contains(&format!("fn {function}("))
                        || file.contains(&format!("fn {function}<")),
                    "README: {name} is not a function of {quoted}"
                );
                if !owner.is_empty() {
                    assert!(file.contains(owner), "README: no {owner} in {quoted}");
                }
                checked += 1;
            }
        } else {
            names.push(quoted);
        }
    }
    assert!(names.is_empty(), "named with no file after them: {names:?}");
    assert!(checked >= 20, "only {checked} functions named");
}
