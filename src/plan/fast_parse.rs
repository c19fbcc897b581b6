//! A fast reader for plan files in the usual layout: `[customer]`, `[[contact]]` and
//! `[[occasion]]` headers, one `key = value` per line, comments and blank lines.
//!
//! The `toml` crate builds a generic table with spans and then runs serde over it; at 100,000
//! plans that is most of the load time. This reader goes from bytes straight to the same
//! [`RawPlan`] (spans included) for the files ops actually write, and gives up (`None`) on
//! anything else: escapes, multi-line strings, inline tables, dotted or quoted keys, floats,
//! signed or underscored integers, date-times, duplicate, unknown or missing keys, wrong types,
//! and every syntax error. `load` then parses that file with the `toml` crate, which accepts all
//! of TOML and reports the problems. So this module never decides what is valid TOML; it only
//! ever agrees with the `toml` crate, which `tests::agrees_with_the_toml_crate` checks on
//! thousands of mutated plans.

use super::entries::{Entry, FromEntries, Val};
use super::raw::RawPlan;
use serde_spanned::Spanned;
use std::ops::Range;

/// Which table the following lines belong to.
#[derive(Clone, Copy, PartialEq)]
enum Table {
    Root,
    Customer,
    Contact,
    Occasion,
}

/// Reads a plan in the usual layout; `None` means "use the `toml` crate" (see the module docs).
pub fn plan(text: &str) -> Option<RawPlan> {
    let mut p = Parser { b: text.as_bytes(), text, pos: 0 };
    // (header span, entries) per table, in file order.
    let mut customer: Option<(Range<usize>, Vec<Entry>)> = None;
    let mut contacts: Vec<(Range<usize>, Vec<Entry>)> = Vec::new();
    let mut occasions: Vec<(Range<usize>, Vec<Entry>)> = Vec::new();
    let mut current = Table::Root;
    while p.pos < p.b.len() {
        p.skip_ws();
        match p.peek() {
            None => break,
            Some(b'\n') | Some(b'\r') | Some(b'#') => p.end_of_line()?,
            Some(b'[') => {
                let (span, name, array) = p.header()?;
                p.end_of_line()?;
                current = match (name, array) {
                    ("customer", false) if customer.is_none() => {
                        customer = Some((span, Vec::with_capacity(9)));
                        Table::Customer
                    }
                    ("contact", true) => {
                        contacts.push((span, Vec::with_capacity(8)));
                        Table::Contact
                    }
                    ("occasion", true) => {
                        occasions.push((span, Vec::with_capacity(4)));
                        Table::Occasion
                    }
                    _ => return None,
                };
            }
            Some(_) => {
                let entry = p.key_value()?;
                p.end_of_line()?;
                let table = match current {
                    Table::Root => return None,
                    Table::Customer => customer.as_mut().map(|c| &mut c.1)?,
                    Table::Contact => contacts.last_mut().map(|c| &mut c.1)?,
                    Table::Occasion => occasions.last_mut().map(|c| &mut c.1)?,
                };
                table.push(entry);
            }
        }
    }
    let (customer_span, customer) = customer?;
    fn build<T: FromEntries>(tables: Vec<(Range<usize>, Vec<Entry>)>) -> Option<Vec<Spanned<T>>> {
        tables.into_iter().map(|(span, e)| Some(Spanned::new(span, T::from_entries(&e)?))).collect()
    }
    Some(RawPlan {
        customer: Spanned::new(customer_span, FromEntries::from_entries(&customer)?),
        contacts: build(contacts)?,
        occasions: build(occasions)?,
    })
}

struct Parser<'a> {
    b: &'a [u8],
    text: &'a str,
    pos: usize,
}

/// TOML forbids control characters other than tab in strings and comments.
fn is_control(c: u8) -> bool {
    (c < 0x20 && c != b'\t') || c == 0x7f
}

fn is_bare_key(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Optional whitespace and comment, then a newline or the end of the text.
    fn end_of_line(&mut self) -> Option<()> {
        self.skip_ws();
        if self.peek() == Some(b'#') {
            while let Some(c) = self.peek() {
                if c == b'\n' || c == b'\r' {
                    break;
                }
                if is_control(c) {
                    return None;
                }
                self.pos += 1;
            }
        }
        match self.peek() {
            None => Some(()),
            Some(b'\n') => {
                self.pos += 1;
                Some(())
            }
            Some(b'\r') if self.b.get(self.pos + 1) == Some(&b'\n') => {
                self.pos += 2;
                Some(())
            }
            _ => None,
        }
    }

    fn bare_key(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_bare_key) {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.text[start..self.pos])
    }

    /// `[name]` or `[[name]]` with nothing inside the brackets but the bare name.
    fn header(&mut self) -> Option<(Range<usize>, &'a str, bool)> {
        let start = self.pos;
        let array = self.b.get(start + 1) == Some(&b'[');
        self.pos += if array { 2 } else { 1 };
        let name = self.bare_key()?;
        let close: &[u8] = if array { b"]]" } else { b"]" };
        if !self.b[self.pos..].starts_with(close) {
            return None;
        }
        self.pos += close.len();
        Some((start..self.pos, name, array))
    }

    fn key_value(&mut self) -> Option<Entry<'a>> {
        let key = self.bare_key()?;
        self.skip_ws();
        if self.peek() != Some(b'=') {
            return None;
        }
        self.pos += 1;
        self.skip_ws();
        let (span, val) = self.value(true)?;
        Some(Entry { key, span, val })
    }

    /// A value; arrays only at the top (`allow_array`), on one line, of scalars.
    fn value(&mut self, allow_array: bool) -> Option<(Range<usize>, Val<'a>)> {
        let start = self.pos;
        let val = match self.peek()? {
            b'"' => Val::Str(self.string(b'"')?),
            b'\'' => Val::Str(self.string(b'\'')?),
            b'[' if allow_array => Val::Array(self.array()?),
            b't' | b'f' => {
                let word = self.bare_key()?;
                match word {
                    "true" => Val::Bool(true),
                    "false" => Val::Bool(false),
                    _ => return None,
                }
            }
            b'0'..=b'9' => self.number_or_date()?,
            _ => return None,
        };
        Some((start..self.pos, val))
    }

    /// A one-line string without escapes (a backslash in a basic string gives up).
    fn string(&mut self, quote: u8) -> Option<&'a str> {
        if self.b[self.pos..].starts_with(&[quote, quote]) {
            return None; // empty string or the start of a multi-line string: leave to toml
        }
        let start = self.pos + 1;
        let mut i = start;
        loop {
            let c = *self.b.get(i)?;
            if c == quote {
                break;
            }
            if (c == b'\\' && quote == b'"') || is_control(c) {
                return None;
            }
            i += 1;
        }
        self.pos = i + 1;
        Some(&self.text[start..i])
    }

    fn array(&mut self) -> Option<Vec<(Range<usize>, Val<'a>)>> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek()? == b']' {
                self.pos += 1;
                return Some(items);
            }
            items.push(self.value(false)?);
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(items);
                }
                _ => return None,
            }
        }
    }

    /// A decimal integer without sign, underscores or leading zeros, a local date
    /// `YYYY-MM-DD`, or a local time `HH:MM[:SS]`; anything else gives up.
    fn number_or_date(&mut self) -> Option<Val<'a>> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'-' || c == b':') {
            self.pos += 1;
        }
        // The token must end at whitespace, a comment, a line end, or inside an array.
        if !matches!(self.peek(), None | Some(b' ' | b'\t' | b'#' | b'\n' | b'\r' | b',' | b']')) {
            return None;
        }
        let token = &self.text[start..self.pos];
        let shape: Vec<u8> = token.bytes().map(|c| if c.is_ascii_digit() { b'9' } else { c }).collect();
        match shape.as_slice() {
            b"9999-99-99" | b"99:99" | b"99:99:99" => token.parse().ok().map(Val::Datetime),
            s if s.iter().all(|c| *c == b'9') && s.len() <= 18 && (s.len() == 1 || !token.starts_with('0')) => {
                token.parse().ok().map(Val::Int)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `toml` crate's reading, or `None` when it rejects the text.
    fn by_toml(text: &str) -> Option<RawPlan> {
        toml::from_str(text).ok()
    }

    /// The property: whenever the fast reader returns a plan, the toml crate returns the
    /// very same one (values and spans, compared through `Debug`).
    fn check(text: &str) -> bool {
        match plan(text) {
            None => false,
            Some(fast) => {
                let slow = by_toml(text);
                assert!(slow.is_some(), "fast path accepted what toml rejects:\n{text}");
                assert_eq!(format!("{fast:?}"), format!("{:?}", slow.unwrap()), "in:\n{text}");
                true
            }
        }
    }

    const PLAN: &str = "# Example
[customer]
id = \"mueller\"   # a comment
name = 'Müller Maschinenbau GmbH'
since = 2016-03-01
owner = \"katrin@example.com\"
timezone = \"Europe/Berlin\"
language = \"de\"
phase = \"maturity\"
playbook = \"standard\"
region = \"DE-BY\"
weekend = [\"sat\", \"sun\"]
closed = [2026-12-24, \"--12-31\"]
blackout = [\"--12-20..--01-06\", '2026-08-01..2026-08-15']
window = \"08:00-18:00\"
jitter = \"15m\"

[[contact]]
id = \"anna\"
name = \"Anna Müller\"
title = \"Dr.\"
gender = \"female\"
email = \"anna@example.de\"
birthday = 1975-12-03
tone = \"formal\"
primary = true

[[contact]]
\tid = \"joerg\"
name = \"Jörg\"
email = \"joerg@example.de\"
birthday = \"--02-29\"
tone = \"informal\"
primary = false

[[occasion]]
name = \"anniversary\"
on = \"anniversary\"
years = [1, 5, 10, 25,]
every_years = 5
at = 09:30
before = \"3 business days\"
on_closed = \"before\"
blackout = []

[[occasion]]
name = \"orders\"
on = \"orders\"
counts = [ 10 , 100,1000 ]
at = \"09:00\"
enabled = false
";

    #[test]
    fn reads_the_usual_layout_exactly_like_the_toml_crate() {
        assert!(check(PLAN));
        assert!(check(&PLAN.replace('\n', "\r\n")));
        for file in ["config/plans/mueller-maschinenbau.toml", "config/plans/alpen-software.toml"] {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(check(&text), "{file}");
        }
    }

    #[test]
    fn gives_up_on_what_it_does_not_handle() {
        for (what, from, to) in [
            ("escape", "\"Dr.\"", "\"D\\u0072.\""),
            ("empty string", "\"Dr.\"", "\"\""),
            ("multi-line string", "\"Dr.\"", "\"\"\"Dr.\"\"\""),
            ("dotted key", "phase = ", "customer.phase = "),
            ("quoted key", "phase = ", "\"phase\" = "),
            ("inline table", "[customer]\nid = \"mueller\"", "customer = { id = \"mueller\" }\n[x]"),
            ("unknown key", "phase = ", "phaze = "),
            ("duplicate key", "phase = \"maturity\"", "phase = \"maturity\"\nphase = \"growth\""),
            ("duplicate table", "\n[[contact]]\n\tid", "\n[customer]\n[[contact]]\n\tid"),
            ("wrong type", "primary = true", "primary = 1"),
            ("date-time", "since = 2016-03-01", "since = 2016-03-01 10:00:00"),
            ("signed integer", "every_years = 5", "every_years = +5"),
            ("float", "every_years = 5", "every_years = 5.0"),
            ("spaces in header", "[customer]", "[ customer ]"),
            ("control char", "# Example", "# Ex\u{1}ample"),
            ("missing key", "id = \"mueller\"   # a comment\n", ""),
            ("root key", "# Example", "x = 1"),
        ] {
            let text = PLAN.replacen(from, to, 1);
            assert_ne!(text, PLAN, "{what}: pattern not found");
            assert!(plan(&text).is_none(), "{what} was read by the fast path");
        }
    }

    /// Deterministic xorshift, so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn agrees_with_the_toml_crate() {
        // Pieces that are interesting to TOML: quotes, brackets, separators, escapes, digits,
        // whitespace and line ends, comment and control characters, non-ASCII.
        #[rustfmt::skip]
        const PIECES: &[&str] = &[
            "\"", "'", "[", "]", "[[", "]]", "=", ",", ".", "#", "\\", "\\n", "\n", "\r\n", "\r", " ", "\t", "0",
            "00", "-", ":", "1_0", "+1", "true", "1979-05-27", "07:32", "07:32:00", "T", "Z", "\u{1}", "\u{7f}",
            "ü", "\u{feff}", "inf", "{", "}", "x", "primary", "years", "\"\"\"", "'''", "9999999999999999999",
        ];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut fast, mut total) = (0, 0);
        for _ in 0..20_000 {
            let mut text = PLAN.to_string();
            for _ in 0..1 + rng.below(3) {
                let mut at = rng.below(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                match rng.below(3) {
                    0 => text.insert_str(at, PIECES[rng.below(PIECES.len())]),
                    1 => {
                        let mut end = (at + 1 + rng.below(6)).min(text.len());
                        while !text.is_char_boundary(end) {
                            end += 1;
                        }
                        text.replace_range(at..end, "");
                    }
                    _ => {
                        let mut end = (at + 1 + rng.below(4)).min(text.len());
                        while !text.is_char_boundary(end) {
                            end += 1;
                        }
                        text.replace_range(at..end, PIECES[rng.below(PIECES.len())]);
                    }
                }
            }
            total += 1;
            if check(&text) {
                fast += 1;
            }
        }
        // Both paths are exercised: many mutants stay readable, many do not.
        assert!(fast > total / 10 && fast < total * 9 / 10, "fast path took {fast} of {total}");
    }
}
