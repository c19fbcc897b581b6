//! Header values written by us, not by lettre's encoder: lettre 0.11.23 writes ESC, DEL and
//! the other C0 controls raw into a header, folds only at spaces (a long word without one
//! gives a line of any length), and its `Mailbox` panics on a CR or LF in a display name
//! (pitfalls.md). So every header that carries a value from a plan or a template is encoded
//! here with `email-encoding` (lettre's own RFC 2047 and folding library), and the result is
//! checked before it is handed to lettre as pre-encoded text:
//! - control characters are refused (the caller turns that into a failed row, never a panic);
//! - a word that is not plain printable ASCII, is longer than [`MAX_RAW_WORD`], or looks like
//!   an encoded word (`=?`) is written as RFC 2047 encoded words (`=?utf-8?b?…?=`, at most 75
//!   characters each), adjacent such words as one run so their spaces survive;
//! - lines are folded (CRLF + space) before they pass 76 characters wherever a fold is possible;
//! - [`verify`] then guarantees that the value is printable ASCII, that every fold is CRLF +
//!   whitespace followed by text, and that no line exceeds 998 octets (RFC 5322 §2.1.1).

use email_encoding::headers::rfc2047;
use email_encoding::headers::writer::EmailWriter;
use std::fmt::Write as _;

/// Longest word written as it is; longer ones become encoded words, which can be folded.
pub const MAX_RAW_WORD: usize = 60;
/// RFC 5322 §2.1.1: the hard limit of a line, without its CRLF.
pub const MAX_LINE: usize = 998;

/// Why a value cannot go into a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HeaderError(pub String);

/// Refuses control characters (C0, DEL, C1, U+2028/U+2029): no header value may hold one.
///
/// # Errors
/// The first control character in `value`, named with `what` ("the subject contains …").
pub fn no_controls(what: &str, value: &str) -> Result<(), HeaderError> {
    match value.chars().find(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
        Some(c) => Err(HeaderError(format!("the {what} contains the control character U+{:04X}", c as u32))),
        None => Ok(()),
    }
}

/// Whether `word` may be written as it is: printable ASCII, short, and not like an encoded word.
/// In a phrase (display names) only RFC 5322 `atext` qualifies.
fn raw_ok(word: &str, phrase: bool) -> bool {
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    word.len() <= MAX_RAW_WORD
        && !word.contains("=?")
        && word.bytes().all(|b| if phrase { atext(b) } else { b.is_ascii_graphic() })
}

/// Writes whitespace-separated `words` (runs of whitespace become one space) into `w`: raw where
/// allowed, else as encoded words, folding where needed.
fn words(w: &mut EmailWriter<'_>, text: &str, phrase: bool) -> std::fmt::Result {
    let mut run = String::new();
    let mut first = true;
    let flush = |w: &mut EmailWriter<'_>, run: &mut String, first: &mut bool| -> std::fmt::Result {
        if !run.is_empty() {
            if !*first {
                w.space();
            }
            rfc2047::encode(run, w)?;
            run.clear();
            *first = false;
        }
        Ok(())
    };
    for word in text.split_whitespace() {
        if raw_ok(word, phrase) {
            flush(w, &mut run, &mut first)?;
            if !first {
                w.space();
            }
            w.folding().write_str(word)?;
            first = false;
        } else {
            if !run.is_empty() {
                run.push(' ');
            }
            run.push_str(word);
        }
    }
    flush(w, &mut run, &mut first)
}

/// An unstructured header value such as `Subject:` (whitespace runs become one space).
///
/// # Errors
/// A control character in `text`, or (never expected) an encoding that fails [`verify`].
pub fn unstructured(header: &str, text: &str) -> Result<String, HeaderError> {
    no_controls(&header.to_lowercase(), text)?;
    let mut out = String::new();
    {
        let mut w = EmailWriter::new(&mut out, header.len() + 2, 0, false);
        words(&mut w, text, false).map_err(|_| HeaderError(format!("cannot encode the {header} header")))?;
    }
    verify(header, &out)?;
    Ok(out)
}

/// A mailbox: `display name <local@domain>`, or `local@domain` without a name. A name that is
/// printable ASCII and fits on the line is a quoted string (`"Dr. Anna Smith"`); otherwise its
/// words are atoms or encoded words. The address must be plain ASCII (checked by the caller's
/// address parser).
///
/// # Errors
/// A control character in the name, a non-ASCII address, or an encoding that fails [`verify`].
pub fn mailbox(header: &str, name: Option<&str>, address: &str) -> Result<String, HeaderError> {
    if !address.is_ascii() || address.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(HeaderError(format!("the {} address is not plain ASCII", header.to_lowercase())));
    }
    if let Some(n) = name {
        no_controls(&format!("{} name", header.to_lowercase()), n)?;
    }
    let name = name.map(|n| n.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|n| !n.is_empty());
    let mut out = String::new();
    {
        let mut w = EmailWriter::new(&mut out, header.len() + 2, 0, false);
        let fail = |_| HeaderError(format!("cannot encode the {header} header"));
        match &name {
            // No display name: the bare address, as lettre and most mailers write it.
            None => w.folding().write_str(address).map_err(fail)?,
            Some(name) => {
                let quoted = format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""));
                let fits = header.len() + 2 + quoted.len() + 1 + address.len() + 2 <= 76;
                if name.bytes().all(|b| b.is_ascii_graphic() || b == b' ') && !name.contains("=?") && fits {
                    w.write_str(&quoted).map_err(fail)?;
                } else {
                    words(&mut w, name, true).map_err(fail)?;
                }
                w.space();
                w.folding().write_str(&format!("<{address}>")).map_err(fail)?;
            }
        }
    }
    verify(header, &out)?;
    Ok(out)
}

/// The guarantees every header value leaves with: printable ASCII; folds are CRLF followed by
/// whitespace and then text; no line (with `Header: ` on the first) longer than 998 octets.
///
/// # Errors
/// A value that breaks one of them (a bug in the encoding, reported instead of sent).
pub fn verify(header: &str, value: &str) -> Result<(), HeaderError> {
    let bad = |why: &str| Err(HeaderError(format!("the {header} header would be malformed: {why}")));
    for (i, line) in value.split("\r\n").enumerate() {
        let len = if i == 0 { header.len() + 2 + line.len() } else { line.len() };
        if len > MAX_LINE {
            return bad("a line longer than 998 octets");
        }
        if line.bytes().any(|b| !(b.is_ascii_graphic() || b == b' ' || b == b'\t')) {
            return bad("a character that is not printable ASCII");
        }
        if i > 0 && (!line.starts_with([' ', '\t']) || line.trim().is_empty()) {
            return bad("a fold without text after it");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(header: &str, value: &str) -> Vec<usize> {
        value
            .split("\r\n")
            .enumerate()
            .map(|(i, l)| if i == 0 { header.len() + 2 + l.len() } else { l.len() })
            .collect()
    }

    #[test]
    fn plain_words_stay_readable_and_fold_at_spaces() {
        let v = unstructured("Subject", "Herzlichen Glückwunsch zum Geburtstag, Anna!").unwrap();
        assert!(v.starts_with("Herzlichen =?utf-8?b?"), "{v}");
        let long = "word ".repeat(40);
        let v = unstructured("Subject", &long).unwrap();
        assert!(lines("Subject", &v).iter().all(|&l| l <= 78), "{v}");
        assert_eq!(v.replace("\r\n", ""), long.trim_end());
    }

    #[test]
    fn long_words_and_lookalikes_are_encoded_and_folded() {
        for text in ["x".repeat(5000), "Ä".repeat(3000), "=?utf-8?q?evil?=".to_string(), "👩‍👩‍👧".repeat(200)]
        {
            let v = unstructured("Subject", &text).unwrap();
            assert!(lines("Subject", &v).iter().all(|&l| l <= 78), "{v}");
            let v = mailbox("To", Some(&text), "a@example.com").unwrap();
            assert!(lines("To", &v).iter().all(|&l| l <= 78), "{v}");
        }
    }

    #[test]
    fn controls_are_refused() {
        for c in ['\r', '\n', '\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{2028}'] {
            assert!(unstructured("Subject", &format!("a{c}b")).is_err());
            assert!(mailbox("To", Some(&format!("Eve{c}Example")), "a@example.com").is_err());
        }
        assert!(mailbox("To", None, "a b@example.com").is_err());
        assert!(mailbox("To", None, "ä@example.com").is_err());
    }

    #[test]
    fn names_with_specials_are_quoted_or_encoded() {
        assert_eq!(
            mailbox("To", Some("Dr. Anna \"Ann\" Smith"), "a@example.com").unwrap(),
            "\"Dr. Anna \\\"Ann\\\" Smith\" <a@example.com>"
        );
        assert_eq!(mailbox("To", Some("Anna Smith"), "a@example.com").unwrap(), "\"Anna Smith\" <a@example.com>");
        assert_eq!(mailbox("To", None, "a@example.com").unwrap(), "a@example.com");
        let v = mailbox("To", Some("Jörg Weiß"), "j@example.com").unwrap();
        assert!(v.starts_with("=?utf-8?b?") && v.ends_with(" <j@example.com>"), "{v}");
    }
}
