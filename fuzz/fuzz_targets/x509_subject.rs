//! The hand-written DER reader on arbitrary bytes, as a peer's certificate.
//!
//! A client certificate reaches `secure_chat::x509` only after rustls has
//! verified it, but the reader must not rely on that: whatever the bytes,
//! it returns without panicking, and what it returns is fit for a terminal.

#![no_main]

use libfuzzer_sys::fuzz_target;
use secure_chat::line::strip_controls;
use secure_chat::x509;

fuzz_target!(|der: &[u8]| {
    let subject = x509::subject(der);
    let common_name = x509::common_name(der);
    if let Some(text) = &subject {
        // The rule of `secure_chat::line::strip_controls`: tab is the one
        // control character a line may keep.
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\t'),
            "control character in {text:?}"
        );
    }
    // Both walk the same subject: one reads it whole (for display, control
    // characters removed), the other picks its first CN as it is, so a
    // common name means a subject that names it.
    if let Some(name) = &common_name {
        let subject = subject.expect("a common name without a subject");
        let shown = strip_controls(format!("CN={name}"));
        assert!(subject.contains(&shown), "{subject:?}");
    }
});
