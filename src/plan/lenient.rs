//! The general path for plans and playbooks: the `toml` crate parses the document, and then each
//! table is read key by key instead of by one serde pass, so that one unknown key, missing key
//! or wrong type no longer hides every other problem of the file (serde's
//! `deny_unknown_fields` stops at the first). Every such problem of a file is collected; a table
//! with a missing key or a value of the wrong type is left out (unknown keys are only reported),
//! and the rest is validated as usual.
//!
//! Each value is deserialised on its own by the `toml` crate (`ValueDeserializer`), with the same
//! spans as a whole-document serde pass; the fast reader's differential test also holds this
//! path to `toml::from_str` on every mutant the `toml` crate accepts.

use super::entries::{FromTable, Problem, field, unknown};
use super::raw::{RawContact, RawCustomer, RawPlan, RawPlaybook, RawRule};
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

fn wrong_type(value: &Spanned<DeValue<'_>>, what: &str, expected: &str) -> Problem {
    Problem {
        span: Some(value.span()),
        message: format!("{what} must be {expected}, not a {}", value.get_ref().type_str()),
        hint: "see README, \"Plan format\"".into(),
    }
}

/// `[[name]]`: every table of an array of tables, each read on its own (a broken one is left
/// out; `complete` turns false).
fn tables<T: FromTable>(
    value: &Spanned<DeValue<'_>>,
    what: &str,
    problems: &mut Vec<Problem>,
    complete: &mut bool,
) -> Vec<Spanned<T>> {
    let Some(items) = value.get_ref().as_array() else {
        problems.push(wrong_type(value, what, "an array of tables"));
        *complete = false;
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter() {
        match item.get_ref().as_table() {
            Some(t) => match T::from_table(t, &item.span(), what, problems) {
                Some(v) => out.push(Spanned::new(item.span(), v)),
                None => *complete = false,
            },
            None => {
                problems.push(wrong_type(item, what, "a table"));
                *complete = false;
            }
        }
    }
    out
}

/// A plan read key by key.
pub struct LenientPlan {
    /// The plan, when `[customer]` could be read (tables with problems left out).
    pub plan: Option<RawPlan>,
    /// Every problem of shape: unknown, missing or mistyped keys.
    pub problems: Vec<Problem>,
    /// Whether a `[[contact]]` or `[[occasion]]` table was left out (checks that need all of
    /// them, such as "exactly one primary contact", are then skipped).
    pub complete: bool,
}

/// Reads a plan: the syntax error, if the `toml` crate finds one; else the plan and every
/// problem of shape.
///
/// # Errors
/// The text is not TOML (the first syntax error, as before).
pub fn plan(text: &str) -> Result<LenientPlan, toml::de::Error> {
    let doc = DeTable::parse(text)?;
    let mut problems = Vec::new();
    let mut complete = true;
    let (mut customer, mut contacts, mut rules) = (None, Vec::new(), Vec::new());
    let mut seen_customer = false;
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "customer" => {
                seen_customer = true;
                match value.get_ref().as_table() {
                    Some(t) => {
                        customer = RawCustomer::from_table(t, &value.span(), "[customer]", &mut problems)
                            .map(|c| Spanned::new(value.span(), c));
                    }
                    None => problems.push(wrong_type(value, "[customer]", "a table")),
                }
            }
            "contact" => contacts = tables::<RawContact>(value, "[[contact]]", &mut problems, &mut complete),
            "occasion" => rules = tables::<RawRule>(value, "[[occasion]]", &mut problems, &mut complete),
            _ => problems.push(unknown(key, "the plan's top level", &["[customer]", "[[contact]]", "[[occasion]]"])),
        }
    }
    if !seen_customer {
        problems.push(Problem {
            span: None,
            message: "missing table [customer]".into(),
            hint: "a plan starts with [customer] (README, \"Plan format\")".into(),
        });
    }
    let plan = customer.map(|customer| RawPlan { customer, contacts, rules });
    Ok(LenientPlan { plan, problems, complete })
}

/// Reads a playbook like [`plan`] (tables with problems left out).
///
/// # Errors
/// The text is not TOML (the first syntax error).
pub fn playbook(text: &str) -> Result<(Option<RawPlaybook>, Vec<Problem>), toml::de::Error> {
    let doc = DeTable::parse(text)?;
    let mut problems = Vec::new();
    let mut complete = true; // a playbook with problems is not served; its other rules are still checked
    let (mut description, mut rules) = (None, Vec::new());
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "description" => match field::<String>(value) {
                Ok(d) => description = Some(d),
                Err(p) => problems.push(p),
            },
            "occasion" => rules = tables::<RawRule>(value, "[[occasion]]", &mut problems, &mut complete),
            _ => problems.push(unknown(key, "the playbook's top level", &["description", "[[occasion]]"])),
        }
    }
    Ok((Some(RawPlaybook { description, rules }), problems))
}
