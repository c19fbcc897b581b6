//! The outbox key of an occurrence: `customer/rule/recipient/nominal`, e.g.
//! `mueller-maschinenbau/birthday/contact:anna/2026-12-03`. Its parts never depend on policies
//! (lead time, calendar, window, jitter), so one occasion has one key whatever is configured,
//! on every restart and every instance. The recipient part is unambiguous ([`RecipientKey`]):
//! `contact:<id>`, `owner:<id>` (a task about a contact) or `owner` (about the customer as a
//! whole) — ids never contain `:` or `/`, so no contact id can pass for another form.

use super::{Nominal, Recipient};
use crate::hash::Fnv1a;
use crate::plan::{Contact, Customer, Rule, is_id};
use chrono::{Datelike, Timelike};

/// The recipient part of an outbox key (the `recipient` column of the outbox), over the id's
/// type: `&str` when read from a key or built from the plans, `String` when owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientKey<S = String> {
    /// `contact:<id>`: an email to that contact.
    Contact(S),
    /// `owner:<id>`: to the salesperson, about that contact.
    OwnerAbout(S),
    /// `owner`: to the salesperson, about the customer as a whole.
    Owner,
}

impl<'a> RecipientKey<&'a str> {
    /// The recipient part for `recipient`, about `about`.
    pub fn of(recipient: Recipient<'a>, about: Option<&'a Contact>) -> RecipientKey<&'a str> {
        match (recipient, about) {
            (Recipient::Contact(c), _) => RecipientKey::Contact(&c.id),
            (Recipient::Owner, Some(c)) => RecipientKey::OwnerAbout(&c.id),
            (Recipient::Owner, None) => RecipientKey::Owner,
        }
    }

    /// Reads the form [`std::fmt::Display`] writes; `None` for anything else.
    pub fn parse(s: &'a str) -> Option<RecipientKey<&'a str>> {
        match s.split_once(':') {
            None if s == "owner" => Some(RecipientKey::Owner),
            Some(("contact", id)) if is_id(id) => Some(RecipientKey::Contact(id)),
            Some(("owner", id)) if is_id(id) => Some(RecipientKey::OwnerAbout(id)),
            _ => None,
        }
    }

    /// The same recipient with an owned id.
    pub fn to_owned(self) -> RecipientKey<String> {
        match self {
            RecipientKey::Contact(id) => RecipientKey::Contact(id.to_string()),
            RecipientKey::OwnerAbout(id) => RecipientKey::OwnerAbout(id.to_string()),
            RecipientKey::Owner => RecipientKey::Owner,
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

impl RecipientKey<String> {
    /// The same recipient, borrowed.
    pub fn as_ref(&self) -> RecipientKey<&str> {
        match self {
            RecipientKey::Contact(id) => RecipientKey::Contact(id),
            RecipientKey::OwnerAbout(id) => RecipientKey::OwnerAbout(id),
            RecipientKey::Owner => RecipientKey::Owner,
        }
    }

    /// The contact the row is for or about, if any.
    pub fn contact(&self) -> Option<&str> {
        match self {
            RecipientKey::Contact(id) | RecipientKey::OwnerAbout(id) => Some(id),
            RecipientKey::Owner => None,
        }
    }
}

impl<S: std::fmt::Display> std::fmt::Display for RecipientKey<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecipientKey::Contact(id) => write!(f, "contact:{id}"),
            RecipientKey::OwnerAbout(id) => write!(f, "owner:{id}"),
            RecipientKey::Owner => f.write_str("owner"),
        }
    }
}

/// What happened to make an event-keyed row (its key's last part is `<kind>:<id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An order count milestone; the id is the threshold (`orders:100`).
    Orders,
    /// A revenue milestone; the id is the threshold in the customer's currency (`revenue:100000`).
    Revenue,
    /// The customer's primary contact changed; the id names the handover.
    Handover,
    /// The customer's salesperson changed; the id names the change.
    OwnerChange,
    /// The relationship entered a phase; the id names the change.
    Phase,
    /// No order for a while; the id names the quiet spell.
    Inactivity,
    /// A custom event (a complaint, …); the id names it.
    Custom,
    /// The relationship ended; the id is its date.
    End,
    /// A contact's address was refused as unknown; the id is the contact and a hash of the
    /// address (`anna.1f2e3d4c`).
    Departure,
}

impl serde::Serialize for EventKind {
    /// As its [`code`](EventKind::code).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
        let s = String::deserialize(d)?;
        EventKind::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown event kind `{s}`")))
    }
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 9] = [
        EventKind::Orders,
        EventKind::Revenue,
        EventKind::Handover,
        EventKind::OwnerChange,
        EventKind::Phase,
        EventKind::Inactivity,
        EventKind::Custom,
        EventKind::End,
        EventKind::Departure,
    ];

    /// The word in keys.
    pub fn code(self) -> &'static str {
        match self {
            EventKind::Orders => "orders",
            EventKind::Revenue => "revenue",
            EventKind::Handover => "handover",
            EventKind::OwnerChange => "owner-change",
            EventKind::Phase => "phase",
            EventKind::Inactivity => "inactivity",
            EventKind::Custom => "event",
            EventKind::End => "end",
            EventKind::Departure => "departure",
        }
    }

    /// The kind a key names, if any.
    pub fn parse(s: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.code() == s)
    }
}

/// The last part of an outbox key: what the row stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NominalKey {
    /// A calendar occasion: its nominal date (`2026-12-03`) or crontab wall time
    /// (`2026-12-03T09:00`).
    Calendar(Nominal),
    /// An event: `<kind>:<id>` (`orders:100`, `handover:2026-12-03-anna`).
    Event {
        /// What happened.
        kind: EventKind,
        /// Which one (a threshold, a date, an event id): an id as plans allow them.
        id: String,
    },
}

impl std::fmt::Display for NominalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NominalKey::Calendar(n) => n.fmt(f),
            NominalKey::Event { kind, id } => write!(f, "{}:{id}", kind.code()),
        }
    }
}

impl NominalKey {
    /// Reads the form `Display` writes.
    fn parse(s: &str) -> Option<NominalKey> {
        if let Some((kind, id)) = s.split_once(':')
            && let Some(kind) = EventKind::parse(kind)
        {
            return is_id(id).then(|| NominalKey::Event { kind, id: id.to_string() });
        }
        let date = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok().filter(|_| d.len() == 10);
        match s.len() {
            10 => date(s).map(|d| NominalKey::Calendar(Nominal::Date(d))),
            16 if s.as_bytes()[10] == b'T' => {
                let time = chrono::NaiveTime::parse_from_str(&s[11..], "%H:%M").ok()?;
                date(&s[..10]).map(|d| NominalKey::Calendar(Nominal::Wall(d.and_time(time))))
            }
            _ => None,
        }
    }
}

/// An outbox key, owned: `customer/rule/recipient/nominal`, e.g.
/// `mueller-maschinenbau/birthday/contact:anna/2026-12-03` or `acme/hundredth/owner/orders:100`.
/// One occasion or event has one key, whatever policies apply and whoever computes it; the
/// outbox's unique column holds its text. Parses what it writes and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutboxKey {
    /// The customer id.
    pub customer: String,
    /// The rule name.
    pub rule: String,
    /// Whom the row is for (and about).
    pub recipient: RecipientKey<String>,
    /// What it stands for: a calendar occasion or an event.
    pub nominal: NominalKey,
}

impl std::fmt::Display for OutboxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}/{}", self.customer, self.rule, self.recipient, self.nominal)
    }
}

impl std::str::FromStr for OutboxKey {
    type Err = String;

    /// # Errors
    /// Not four `/`-separated parts of the forms above; the message names the text.
    fn from_str(s: &str) -> Result<OutboxKey, String> {
        let bad = || format!("`{s}` is not an outbox key (customer/rule/recipient/nominal)");
        let mut parts = s.split('/');
        let (Some(customer), Some(rule), Some(recipient), Some(nominal), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if !is_id(customer) || !is_id(rule) {
            return Err(bad());
        }
        Ok(OutboxKey {
            customer: customer.to_string(),
            rule: rule.to_string(),
            recipient: RecipientKey::parse(recipient).ok_or_else(bad)?.to_owned(),
            nominal: NominalKey::parse(nominal).ok_or_else(bad)?,
        })
    }
}

impl serde::Serialize for OutboxKey {
    /// As its text.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for OutboxKey {
    /// From its text.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OutboxKey, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
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

impl Key<'_> {
    /// The owned key.
    pub fn owned(&self) -> OutboxKey {
        OutboxKey {
            customer: self.customer.id.to_string(),
            rule: self.rule.name.to_string(),
            recipient: RecipientKey::of(self.recipient, self.about).to_owned(),
            nominal: NominalKey::Calendar(self.nominal),
        }
    }
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
    fn outbox_keys_read_back_exactly_what_they_write() {
        for text in [
            "mueller-maschinenbau/birthday/contact:anna/2026-12-03",
            "acme/checkin/owner/2026-12-01T09:00",
            "acme/call/owner:customer/2027-03-14",
            "acme/hundredth/owner/orders:100",
            "acme.de/welcome/contact:new_1/handover:2026-12-03-anna",
        ] {
            let key: OutboxKey = text.parse().unwrap();
            assert_eq!(key.to_string(), text);
        }
        let k: OutboxKey = "acme/hundredth/owner/orders:100".parse().unwrap();
        assert_eq!(k.nominal, NominalKey::Event { kind: EventKind::Orders, id: "100".into() });
        for bad in [
            "",
            "a/b/c",
            "a/b/contact:x/2026-12-03/extra",
            "a b/r/owner/2026-12-03",
            "a/r/someone/2026-12-03",
            "a/r/owner/2026-13-03",
            "a/r/owner/2026-12-03T25:00",
            "a/r/owner/2026-12-3",
            "a/r/owner/orders:",
            "a/r/owner/lunch:1",
        ] {
            assert!(bad.parse::<OutboxKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn recipient_keys_read_back_and_never_collide() {
        for k in [RecipientKey::Contact("anna"), RecipientKey::OwnerAbout("customer"), RecipientKey::<&str>::Owner] {
            assert_eq!(RecipientKey::parse(&k.to_string()), Some(k));
        }
        // A contact whose id is `customer` (or `owner`) keeps a key of its own.
        assert_ne!(RecipientKey::OwnerAbout("customer").to_string(), RecipientKey::<&str>::Owner.to_string());
        assert_ne!(RecipientKey::Contact("owner").to_string(), RecipientKey::<&str>::Owner.to_string());
        for bad in ["", "contact:", "owner:", "contact", "lead:x", "contact:a/b", "owner:a:b"] {
            assert_eq!(RecipientKey::parse(bad), None, "{bad}");
        }
    }
}
