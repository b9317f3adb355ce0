//! Just enough DER to read a certificate's subject name, for display.
//!
//! Verification is rustls' job and never happens here: this reads the
//! subject of a certificate that rustls has already accepted, to show it.

use crate::line::strip_controls;

/// DER tags this reader meets.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const EXPLICIT_VERSION: u8 = 0xa0;

/// The subject of a DER certificate, as `CN=localhost, O=secure-chat`.
///
/// `None` if the certificate is not DER this reader understands. Control
/// characters are removed: the subject comes from the peer, and ends up on
/// a terminal and in logs.
pub fn subject(cert_der: &[u8]) -> Option<String> {
    let parts: Vec<String> = subject_attributes(cert_der)?
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    Some(strip_controls(parts.join(", ")))
}

/// The first common name (`CN`) in a DER certificate's subject, as the
/// certificate has it: control characters are kept, so that a name they
/// would change (`al\u{7}ice` is not `alice`) can be refused rather than
/// taken for another. Not fit for a terminal as it is: show it escaped.
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    subject_attributes(cert_der)?
        .into_iter()
        .find(|(name, _)| *name == "CN")
        .map(|(_, value)| value)
}

/// Walks `Certificate -> TBSCertificate -> subject` (RFC 5280, 4.1) and
/// returns its attributes in order, as (short name, value).
fn subject_attributes(cert_der: &[u8]) -> Option<Vec<(&'static str, String)>> {
    let (certificate, _) = expect(cert_der, SEQUENCE)?;
    let (mut tbs, _) = expect(certificate, SEQUENCE)?;
    if tbs.first() == Some(&EXPLICIT_VERSION) {
        tbs = tlv(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity: skipped.
    for _ in 0..4 {
        tbs = tlv(tbs)?.2;
    }
    let (mut rdns, _) = expect(tbs, SEQUENCE)?;
    let mut attributes = Vec::new();
    while !rdns.is_empty() {
        let (mut set, rest) = expect(rdns, SET)?;
        rdns = rest;
        while !set.is_empty() {
            let (pair, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = expect(pair, OID)?;
            let (tag, text, _) = tlv(value)?;
            attributes.push((attribute_name(oid), decode_string(tag, text)));
        }
    }
    Some(attributes)
}

/// Splits one tag-length-value off the front: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form: the low bits say how many length bytes follow.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, rest) = input.split_at(count);
        input = rest;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if input.len() < len {
        return None;
    }
    let (contents, rest) = input.split_at(len);
    Some((tag, contents, rest))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (found, contents, rest) if found == tag => Some((contents, rest)),
        _ => None,
    }
}

/// Short names of the attributes `openssl` and `rcgen` put in subjects
/// (OIDs 2.5.4.x, in DER: 55 04 x).
fn attribute_name(oid: &[u8]) -> &'static str {
    match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        _ => "?",
    }
}

/// Decodes the string types subjects use; others are shown as `?`.
fn decode_string(tag: u8, bytes: &[u8]) -> String {
    const UTF8_STRING: u8 = 0x0c;
    const PRINTABLE_STRING: u8 = 0x13;
    const TELETEX_STRING: u8 = 0x14;
    const IA5_STRING: u8 = 0x16;
    const BMP_STRING: u8 = 0x1e;
    match tag {
        UTF8_STRING | PRINTABLE_STRING | IA5_STRING => String::from_utf8_lossy(bytes).into_owned(),
        // Teletex is Latin-1 in practice.
        TELETEX_STRING => bytes.iter().map(|&b| char::from(b)).collect(),
        BMP_STRING => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => "?".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths() {
        assert_eq!(
            tlv(&[0x04, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        assert_eq!(tlv(&long).map(|(_, c, _)| c.len()), Some(0x80));
    }

    #[test]
    fn truncated_input_is_none() {
        assert_eq!(tlv(&[0x04, 0x05, 1, 2]), None);
        assert_eq!(tlv(&[0x04, 0x82, 0x01]), None);
        assert_eq!(tlv(&[]), None);
        assert_eq!(subject(&[0x30, 0x03, 0x30, 0x01]), None);
    }

    #[test]
    fn bmp_and_teletex_strings() {
        assert_eq!(decode_string(0x1e, &[0x00, 0x41, 0x4e, 0x16]), "A世");
        assert_eq!(decode_string(0x14, &[0x63, 0xe9]), "cé");
        assert_eq!(decode_string(0x02, &[1]), "?");
    }
}
