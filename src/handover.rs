//! Handovers, owner changes and phase changes of a customer, as facts. Pure: what a plan says
//! about the relationship ([`State`]: the primary contact, the salesperson, the phase), the
//! changes between two such states ([`diff`]), and what the templates of the resulting event
//! rows are told ([`HandoverFacts`], carried in the outbox `facts` column as [`EventFacts`]).
//!
//! Detection (the store's `record_customers`) and evaluation (`dispatch::handover`) are
//! the edges around it.

use crate::events::MomentFacts;
use crate::orders::milestone::{MilestoneFacts, YearRevenue};
use crate::plan::{Contact, Customer};
use serde::{Deserialize, Serialize};

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The primary contact (`primary = true`) is another contact: a handover.
    Handover,
    /// The salesperson (`owner`) changed.
    Owner,
    /// The customer's `phase` changed.
    Phase,
}

impl ChangeKind {
    /// The word in the `customer_changes` table and in templates (`brief.change`).
    pub fn code(self) -> &'static str {
        match self {
            ChangeKind::Handover => "handover",
            ChangeKind::Owner => "owner",
            ChangeKind::Phase => "phase",
        }
    }

    /// The kind a word names.
    pub fn parse(s: &str) -> Option<ChangeKind> {
        [ChangeKind::Handover, ChangeKind::Owner, ChangeKind::Phase].into_iter().find(|k| k.code() == s)
    }
}

/// A contact as it was when a change was seen: enough to greet and brief without the plan
/// (the departed contact may be gone from it by the time the message is built).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContactCard {
    /// Contact id.
    pub id: String,
    /// Full name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Telephone number, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Role at the customer, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl ContactCard {
    /// The card of a contact of the plans.
    pub fn of(c: &Contact) -> ContactCard {
        ContactCard {
            id: c.id.to_string(),
            name: c.name.to_string(),
            email: c.email.as_str().to_string(),
            phone: c.phone.as_deref().map(str::to_string),
            role: c.role.as_deref().map(str::to_string),
        }
    }
}

/// What the plans say about a relationship: the state detection compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The customer id.
    pub customer: String,
    /// The primary contact.
    pub primary: ContactCard,
    /// The salesperson's address.
    pub owner: String,
    /// The phase (`growth`, …).
    pub phase: String,
}

impl State {
    /// The state of a customer of the plans.
    pub fn of<C: std::borrow::Borrow<Customer>>(c: &C) -> State {
        let c = c.borrow();
        State {
            customer: c.id.to_string(),
            primary: ContactCard::of(c.primary_contact()),
            owner: c.owner.as_str().to_string(),
            phase: c.phase.code().to_string(),
        }
    }
}

/// One change between two states of a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What changed.
    pub kind: ChangeKind,
    /// Before: a contact id, an owner address, a phase.
    pub from: String,
    /// After.
    pub to: String,
    /// The previous primary contact (handovers only).
    pub departed: Option<ContactCard>,
}

/// The changes from `old` to `new` (same customer): a handover when the primary contact's id
/// differs (a renamed contact is no handover), an owner change, a phase change — in that
/// order, each at most once.
pub fn diff(old: &State, new: &State) -> Vec<Change> {
    let mut out = Vec::new();
    if old.primary.id != new.primary.id {
        out.push(Change {
            kind: ChangeKind::Handover,
            from: old.primary.id.clone(),
            to: new.primary.id.clone(),
            departed: Some(old.primary.clone()),
        });
    }
    if old.owner != new.owner {
        out.push(Change { kind: ChangeKind::Owner, from: old.owner.clone(), to: new.owner.clone(), departed: None });
    }
    if old.phase != new.phase {
        out.push(Change { kind: ChangeKind::Phase, from: old.phase.clone(), to: new.phase.clone(), departed: None });
    }
    out
}

/// What a handover, owner-change or phase-change row's templates are told (`brief.*`), kept
/// with its outbox row so the message says what was true when the change was seen; `brief`
/// is looked up from the store when the message is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverFacts {
    /// What changed.
    pub change: ChangeKind,
    /// Before: the departed contact's id, the previous owner's address, the previous phase.
    pub from: String,
    /// After: the new primary contact's id, the new owner's address, the new phase.
    pub to: String,
    /// The departed primary contact as it was (handovers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departed: Option<ContactCard>,
    /// Figures and history looked up when the message is built; never stored.
    #[serde(skip)]
    pub brief: Option<BriefFigures>,
}

/// What the store knows about the relationship when a brief is built.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BriefFigures {
    /// Orders stored.
    pub order_count: u64,
    /// Revenue in the customer's currency per year of the order date, ascending.
    pub revenue_by_year: Vec<YearRevenue>,
    /// The last messages sent to or about this customer, newest first.
    pub recent: Vec<Recent>,
}

/// One message sent earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    /// The rule's name.
    pub rule: String,
    /// The rule's `on`.
    pub kind: String,
    /// `email` or `task`.
    pub action: String,
    /// The local day it was accepted (in the row's zone).
    pub date: chrono::NaiveDate,
}

/// The facts of an event row (the outbox `facts` column): an order milestone or a customer
/// change. A milestone is written exactly as before this type existed (plain
/// `MilestoneFacts` JSON), so rows written by earlier versions read unchanged; a change is
/// written as `{"handover": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFacts {
    /// An order milestone (`milestone.*`).
    Milestone(MilestoneFacts),
    /// A handover, owner change or phase change (`brief.*`).
    Handover(HandoverFacts),
    /// A custom event, a quiet spell or a departure (`event.*`, `inactivity.*`,
    /// `departure.*`), written as `{"moment": "event", …}`.
    Moment(MomentFacts),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Handover { handover: HandoverFacts },
    Moment(MomentFacts),
    Milestone(MilestoneFacts),
}

impl Serialize for EventFacts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EventFacts::Milestone(m) => m.serialize(s),
            EventFacts::Handover(h) => {
                #[derive(Serialize)]
                struct Tagged<'a> {
                    handover: &'a HandoverFacts,
                }
                Tagged { handover: h }.serialize(s)
            }
            EventFacts::Moment(m) => m.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for EventFacts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventFacts, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Handover { handover } => EventFacts::Handover(handover),
            Repr::Moment(m) => EventFacts::Moment(m),
            Repr::Milestone(m) => EventFacts::Milestone(m),
        })
    }
}

impl EventFacts {
    /// The milestone facts, if these are.
    pub fn milestone(&self) -> Option<&MilestoneFacts> {
        match self {
            EventFacts::Milestone(m) => Some(m),
            _ => None,
        }
    }

    /// The change facts, if these are.
    pub fn handover(&self) -> Option<&HandoverFacts> {
        match self {
            EventFacts::Handover(h) => Some(h),
            _ => None,
        }
    }

    /// The facts of a custom event, quiet spell or departure, if these are.
    pub fn moment(&self) -> Option<&MomentFacts> {
        match self {
            EventFacts::Moment(m) => Some(m),
            _ => None,
        }
    }
}

/// A `tel:` URI for a phone number as written: `+` and digits only (`+49 89 1234-567` →
/// `tel:+49891234567`).
pub fn tel_uri(phone: &str) -> String {
    let mut out = String::from("tel:");
    out.extend(phone.chars().filter(|c| c.is_ascii_digit() || *c == '+'));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::occasion::EventKind;

    fn card(id: &str) -> ContactCard {
        ContactCard { id: id.into(), name: id.to_uppercase(), email: format!("{id}@x.example"), ..Default::default() }
    }

    fn state(primary: &str, owner: &str, phase: &str) -> State {
        State { customer: "acme".into(), primary: card(primary), owner: owner.into(), phase: phase.into() }
    }

    #[test]
    fn diff_names_each_change_once() {
        let a = state("anna", "o@x.example", "growth");
        assert!(diff(&a, &a).is_empty());
        let mut renamed = a.clone();
        renamed.primary.name = "Anna B".into();
        assert!(diff(&a, &renamed).is_empty(), "a renamed contact is no handover");
        let b = state("bob", "p@x.example", "maturity");
        let d = diff(&a, &b);
        assert_eq!(
            d.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [ChangeKind::Handover, ChangeKind::Owner, ChangeKind::Phase]
        );
        assert_eq!(d[0].departed.as_ref().map(|c| c.name.as_str()), Some("ANNA"));
    }

    #[test]
    fn milestone_facts_keep_their_json_and_both_forms_read_back() {
        let m = MilestoneFacts {
            measure: EventKind::Orders,
            threshold: 100,
            order_count: 100,
            currency: crate::money::Currency::EUR,
            revenue: "10.5".parse().unwrap(),
            revenue_by_year: Vec::new(),
        };
        let plain = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::to_string(&EventFacts::Milestone(m.clone())).unwrap(), plain, "unchanged JSON");
        assert_eq!(serde_json::from_str::<EventFacts>(&plain).unwrap(), EventFacts::Milestone(m));
        let h = HandoverFacts {
            change: ChangeKind::Handover,
            from: "anna".into(),
            to: "bob".into(),
            departed: Some(card("anna")),
            brief: None,
        };
        let json = serde_json::to_string(&EventFacts::Handover(h.clone())).unwrap();
        assert!(json.starts_with("{\"handover\":"), "{json}");
        assert_eq!(serde_json::from_str::<EventFacts>(&json).unwrap(), EventFacts::Handover(h));
        assert!(serde_json::from_str::<EventFacts>("{\"x\":1}").is_err());
    }

    #[test]
    fn tel_uris_keep_plus_and_digits() {
        assert_eq!(tel_uri("+49 (89) 1234-567"), "tel:+49891234567");
    }
}
