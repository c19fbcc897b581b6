//! The outbox key of an occurrence: `customer/rule/recipient/nominal`, e.g.
//! `mueller-maschinenbau/birthday/contact:anna/2026-12-03`. Its parts never depend on policies
//! (lead time, calendar, window, jitter), so one occasion has one key whatever is configured,
//! on every restart and every instance. The recipient part is unambiguous ([`RecipientKey`]):
//! `contact:<id>`, `owner:<id>` (a task about a contact) or `owner` (about the customer as a
//! whole) — ids never contain `:` or `/`, so no contact id can pass for another form.

use super::{Nominal, Recipient};
use crate::hash::Fnv1a;
use crate::plan::{Contact, Customer, Rule};
use chrono::{Datelike, Timelike};

/// The recipient part of an outbox key (the `recipient` column of the outbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientKey<'a> {
    /// `contact:<id>`: an email to that contact.
    Contact(&'a str),
    /// `owner:<id>`: to the salesperson, about that contact.
    OwnerAbout(&'a str),
    /// `owner`: to the salesperson, about the customer as a whole.
    Owner,
}

impl<'a> RecipientKey<'a> {
    /// The recipient part for `recipient`, about `about`.
    pub fn of(recipient: Recipient<'a>, about: Option<&'a Contact>) -> RecipientKey<'a> {
        match (recipient, about) {
            (Recipient::Contact(c), _) => RecipientKey::Contact(&c.id),
            (Recipient::Owner, Some(c)) => RecipientKey::OwnerAbout(&c.id),
            (Recipient::Owner, None) => RecipientKey::Owner,
        }
    }

    /// Reads the form [`std::fmt::Display`] writes; `None` for anything else.
    pub fn parse(s: &'a str) -> Option<RecipientKey<'a>> {
        let id_ok = |id: &str| !id.is_empty() && !id.contains([':', '/']);
        match s.split_once(':') {
            None if s == "owner" => Some(RecipientKey::Owner),
            Some(("contact", id)) if id_ok(id) => Some(RecipientKey::Contact(id)),
            Some(("owner", id)) if id_ok(id) => Some(RecipientKey::OwnerAbout(id)),
            _ => None,
        }
    }

    /// Feeds the written form to `h` (the same bytes as `Display`).
    fn feed(&self, h: &mut Fnv1a) {
        match self {
            RecipientKey::Contact(id) => {
                h.feed(b"contact:");
                h.feed(id.as_bytes());
            }
            RecipientKey::OwnerAbout(id) => {
                h.feed(b"owner:");
                h.feed(id.as_bytes());
            }
            RecipientKey::Owner => h.feed(b"owner"),
        }
    }
}

impl std::fmt::Display for RecipientKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecipientKey::Contact(id) => write!(f, "contact:{id}"),
            RecipientKey::OwnerAbout(id) => write!(f, "owner:{id}"),
            RecipientKey::Owner => f.write_str("owner"),
        }
    }
}

/// The outbox key `customer/rule/recipient/nominal`, written without allocating (the jitter
/// hashes it).
pub(crate) struct Key<'a> {
    /// First part: the customer id.
    pub customer: &'a Customer,
    /// Second part: the rule name.
    pub rule: &'a Rule,
    /// Third part (with `about`): see [`RecipientKey`].
    pub recipient: Recipient<'a>,
    /// The contact an owner task is about.
    pub about: Option<&'a Contact>,
    /// Last part: the nominal date or wall time.
    pub nominal: Nominal,
}

impl std::fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.customer.id,
            self.rule.name,
            RecipientKey::of(self.recipient, self.about),
            self.nominal
        )
    }
}

impl Key<'_> {
    /// FNV-1a (64 bit) of the key text, fed from the parts (the same value as hashing
    /// `to_string()`, several times faster than going through `Display`).
    pub fn hash(&self) -> u64 {
        let mut h = Fnv1a::default();
        h.feed(self.customer.id.as_bytes());
        h.feed(b"/");
        h.feed(self.rule.name.as_bytes());
        h.feed(b"/");
        RecipientKey::of(self.recipient, self.about).feed(&mut h);
        h.feed(b"/");
        let (date, time) = match self.nominal {
            Nominal::Date(d) => (d, None),
            Nominal::Wall(t) => (t.date(), Some((t.hour(), t.minute()))),
        };
        if !(0..=9999).contains(&date.year()) {
            use std::fmt::Write;
            let _ = write!(h, "{}", self.nominal);
            return h.0;
        }
        let digits = |n: u32, width: usize, out: &mut [u8]| {
            let mut n = n;
            for i in (0..width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        let mut buf = *b"0000-00-00T00:00";
        digits(date.year() as u32, 4, &mut buf[0..4]);
        digits(date.month(), 2, &mut buf[5..7]);
        digits(date.day(), 2, &mut buf[8..10]);
        match time {
            None => h.feed(&buf[..10]),
            Some((hh, mm)) => {
                digits(hh, 2, &mut buf[11..13]);
                digits(mm, 2, &mut buf[14..16]);
                h.feed(&buf);
            }
        }
        h.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_keys_read_back_and_never_collide() {
        for k in [RecipientKey::Contact("anna"), RecipientKey::OwnerAbout("customer"), RecipientKey::Owner] {
            assert_eq!(RecipientKey::parse(&k.to_string()), Some(k));
        }
        // A contact whose id is `customer` (or `owner`) keeps a key of its own.
        assert_ne!(RecipientKey::OwnerAbout("customer").to_string(), RecipientKey::Owner.to_string());
        assert_ne!(RecipientKey::Contact("owner").to_string(), RecipientKey::Owner.to_string());
        for bad in ["", "contact:", "owner:", "contact", "lead:x", "contact:a/b", "owner:a:b"] {
            assert_eq!(RecipientKey::parse(bad), None, "{bad}");
        }
    }
}
