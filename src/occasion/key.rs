//! The outbox key of an occurrence: `customer/rule/recipient/nominal`, e.g.
//! `mueller-maschinenbau/birthday/contact:anna/2026-12-03`. Its parts never depend on policies
//! (lead time, calendar, window, jitter), so one occasion has one key whatever is configured,
//! on every restart and every instance.

use super::{Nominal, Recipient};
use crate::hash::Fnv1a;
use crate::plan::{Contact, Customer, Rule};
use chrono::{Datelike, Timelike};

/// The outbox key `customer/rule/recipient/nominal`, written without allocating (the jitter
/// hashes it).
pub(crate) struct Key<'a> {
    /// First part: the customer id.
    pub customer: &'a Customer,
    /// Second part: the rule name.
    pub rule: &'a Rule,
    /// Third part: `contact:<id>` or `owner:<about>`.
    pub recipient: Recipient<'a>,
    /// The contact an owner task is about.
    pub about: Option<&'a Contact>,
    /// Last part: the nominal date or wall time.
    pub nominal: Nominal,
}

impl std::fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/", self.customer.id, self.rule.name)?;
        match self.recipient {
            Recipient::Contact(c) => write!(f, "contact:{}", c.id)?,
            Recipient::Owner => write!(f, "owner:{}", self.about.map_or("customer", |c| &c.id))?,
        }
        write!(f, "/{}", self.nominal)
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
        match self.recipient {
            Recipient::Contact(c) => {
                h.feed(b"/contact:");
                h.feed(c.id.as_bytes());
            }
            Recipient::Owner => {
                h.feed(b"/owner:");
                h.feed(self.about.map_or("customer", |c| &c.id).as_bytes());
            }
        }
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
