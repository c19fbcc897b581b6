//! The general path for plans and playbooks: the `toml` crate parses the document, and then each
//! table is read key by key instead of by one serde pass, so that one unknown key, missing key
//! or wrong type no longer hides every other problem of the file (serde's
//! `deny_unknown_fields` stops at the first). Every such problem of a file is collected. A key
//! that is missing (required) or has the wrong type is *unusable*: its table holds a stand-in
//! for it and is kept, so that the table's other keys are validated as usual (the checks of the
//! unusable key, and of what needs it, are skipped), but a file with such a problem is never
//! served. Syntax errors: every one the `toml` crate finds after recovering (see
//! `entries::parse_document`); the file's keys are not checked then.
//!
//! Each value is deserialised on its own by the `toml` crate (`ValueDeserializer`), with the same
//! spans as a whole-document serde pass; the fast reader's differential test also holds this
//! path to `toml::from_str` on every mutant the `toml` crate accepts.

use super::entries::{FromTable, Problem, Unusable, field, parse_document, type_with_article, unknown};
use super::raw::{RawContact, RawCustomer, RawPlan, RawPlaybook, RawRule};
use serde_spanned::Spanned;
use toml::de::DeValue;

fn wrong_type(value: &Spanned<DeValue<'_>>, what: &str, expected: &str) -> Problem {
    Problem {
        span: Some(value.span()),
        message: format!("{what} must be {expected}, not {}", type_with_article(value.get_ref())),
        hint: "see README, \"Plan format\"".into(),
    }
}

/// One table, read key by key; its unusable keys are recorded, and `complete` turns false when
/// there are any.
fn table<T: FromTable>(
    t: &toml::de::DeTable<'_>,
    span: std::ops::Range<usize>,
    what: &str,
    read: &mut Read,
) -> Spanned<T> {
    let (value, keys) = T::from_table(t, &span, what, &mut read.problems);
    read.complete &= keys.is_empty();
    read.unusable.add(&span, keys);
    Spanned::new(span, value)
}

/// `[[name]]`: every table of an array of tables, each read on its own. A table with an
/// unusable key is kept for checking (`complete` turns false); an item that is not a table is
/// left out. A single table written as `[name]` is read as the one item, after its problem.
fn tables<T: FromTable>(value: &Spanned<DeValue<'_>>, what: &str, read: &mut Read) -> Vec<Spanned<T>> {
    let items = match value.get_ref() {
        DeValue::Array(items) => items,
        DeValue::Table(t) => {
            read.problems.push(wrong_type(value, what, "an array of tables"));
            read.complete = false;
            return vec![table(t, value.span(), what, read)];
        }
        _ => {
            read.problems.push(wrong_type(value, what, "an array of tables"));
            read.complete = false;
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter() {
        match item.get_ref().as_table() {
            Some(t) => out.push(table(t, item.span(), what, read)),
            None => {
                read.problems.push(wrong_type(item, what, "a table"));
                read.complete = false;
            }
        }
    }
    out
}

/// What reading a file key by key found, besides the raw shape.
#[derive(Default)]
struct Read {
    problems: Vec<Problem>,
    unusable: Unusable,
    complete: bool,
}

/// A plan read key by key.
pub struct LenientPlan {
    /// The plan: every table as written, with stand-ins for unusable keys (and for a missing
    /// `[customer]`), so that every key can be checked; used only when `problems` is empty.
    pub plan: RawPlan,
    /// Every problem of shape: unknown, missing or mistyped keys.
    pub problems: Vec<Problem>,
    /// The keys, by table, that are missing or have the wrong type (their checks are skipped).
    pub unusable: Unusable,
    /// Whether every `[[contact]]` and `[[occasion]]` table could be read whole (checks that
    /// need all of them, such as "exactly one primary contact", are skipped when not).
    pub complete: bool,
}

/// Reads a plan: the syntax errors, if the `toml` crate finds any; else the plan and every
/// problem of shape.
///
/// # Errors
/// The text is not TOML (its syntax errors, see [`parse_document`]).
pub fn plan(text: &str) -> Result<LenientPlan, Vec<toml::de::Error>> {
    let doc = parse_document(text)?;
    let mut read = Read { complete: true, ..Read::default() };
    let (mut customer, mut contacts, mut rules) = (None, Vec::new(), Vec::new());
    let mut seen_customer = false;
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "customer" => {
                seen_customer = true;
                match value.get_ref().as_table() {
                    Some(t) => customer = Some(table::<RawCustomer>(t, value.span(), "[customer]", &mut read)),
                    None => read.problems.push(wrong_type(value, "[customer]", "a table")),
                }
            }
            "contact" => contacts = tables::<RawContact>(value, "[[contact]]", &mut read),
            "occasion" => rules = tables::<RawRule>(value, "[[occasion]]", &mut read),
            _ => read.problems.push(unknown(
                key,
                "the plan's top level",
                &["[customer]", "[[contact]]", "[[occasion]]"],
                "Plan format",
            )),
        }
    }
    // No `[customer]` table: a stand-in (the whole file's span, every required key unusable),
    // so that the contacts and rules are checked all the same.
    let customer = customer.unwrap_or_else(|| {
        if !seen_customer {
            read.problems.push(Problem {
                span: None,
                message: "missing table [customer]".into(),
                hint: "a plan starts with [customer] (README, \"Plan format\")".into(),
            });
        }
        let span = 0..text.len();
        let (stand_in, mut keys) = RawCustomer::stand_in(&span);
        // Nor is it known whether a playbook was meant: the rules' values only are checked.
        keys.push("playbook");
        read.unusable.add(&span, keys);
        Spanned::new(span, stand_in)
    });
    Ok(LenientPlan {
        plan: RawPlan { customer, contacts, rules },
        problems: read.problems,
        unusable: read.unusable,
        complete: read.complete,
    })
}

/// A playbook read key by key, like [`plan`].
pub struct LenientPlaybook {
    /// The playbook, with stand-ins for unusable keys; used only when `problems` is empty.
    pub playbook: RawPlaybook,
    /// Every problem of shape.
    pub problems: Vec<Problem>,
    /// The keys, by table, that are missing or have the wrong type.
    pub unusable: Unusable,
}

/// Reads a playbook like [`plan`].
///
/// # Errors
/// The text is not TOML (its syntax errors).
pub fn playbook(text: &str) -> Result<LenientPlaybook, Vec<toml::de::Error>> {
    let doc = parse_document(text)?;
    // A playbook with problems is not served; its other rules are still checked.
    let mut read = Read { complete: true, ..Read::default() };
    let (mut description, mut rules) = (None, Vec::new());
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "description" => match field::<String>(value) {
                Ok(d) => description = Some(d),
                Err(p) => read.problems.push(p),
            },
            "occasion" => rules = tables::<RawRule>(value, "[[occasion]]", &mut read),
            _ => read.problems.push(unknown(
                key,
                "the playbook's top level",
                &["description", "[[occasion]]"],
                "Plan format",
            )),
        }
    }
    Ok(LenientPlaybook {
        playbook: RawPlaybook { description, rules },
        problems: read.problems,
        unusable: read.unusable,
    })
}
