//! Raw TOML → model, collecting every problem with its span instead of stopping at the first.
//! - `scalars.rs`: single values (zones, addresses, ids, dates, times, lead times, durations)
//!   and the business-calendar keys every level shares;
//! - `rule.rs`: one `[[occasion]]` entry into a [`Rule`], playbooks;
//! - `customer.rs`: a whole plan into a [`Customer`] (contacts, primary, playbook merge,
//!   template coverage);
//! - `intern.rs`: one value per distinct rule and rule list within a load.

mod customer;
mod intern;
mod rule;
mod scalars;

pub use customer::plan;
pub use intern::RuleCache;
pub use rule::{Playbook, playbook};
pub use scalars::calendar_table;

use super::model::Templates;
use crate::calendar::CrontabCache;
use crate::diagnostics::Diagnostic;
use chrono_tz::Tz;
use serde_spanned::Spanned;
use std::collections::HashMap;
use std::path::Path;

/// Everything a plan is validated against; shared (read-only) by the parallel workers.
pub struct Context<'a> {
    /// Valid playbooks by name.
    pub playbooks: &'a HashMap<String, Playbook>,
    /// Playbooks that exist but have errors (plans using them are held back).
    pub broken: &'a [String],
    /// Which templates and variants exist, for `template = "…"` and variant checks.
    pub templates: &'a dyn Templates,
    /// Zone for customers and contacts that name none.
    pub default_tz: Tz,
    /// The daemon's `[calendar]` defaults, under every customer's own calendar keys.
    pub default_calendar: &'a crate::calendar::Settings,
    /// One parsed schedule per distinct expression: 100,000 plans with the same `cron`
    /// share one `Crontab` instead of holding 100,000 copies.
    pub crontabs: &'a CrontabCache,
    /// One value per distinct own rule and per distinct list of effective rules: 100,000 plans
    /// with the same playbook and the same own rules share one list.
    pub rules: &'a RuleCache,
}

/// One source file being validated: where problems are reported.
pub struct Src<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub diags: Vec<Diagnostic>,
    /// Whether every `[[contact]]` and `[[occasion]]` table could be read whole (see
    /// `lenient::LenientPlan::complete`); checks across all of them are skipped when not.
    pub complete: bool,
    /// Keys, by table, that are missing or have the wrong type (reported already): they hold
    /// stand-ins, so their checks, and the checks that need them, are skipped.
    pub unusable: crate::plan::entries::Unusable,
}

impl<'a> Src<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Src { path, text, diags: Vec::new(), complete: true, unusable: Default::default() }
    }

    /// Whether `key` of the table `table` is unusable (missing or of the wrong type; reported
    /// already), so that its checks are skipped.
    pub fn unusable<T>(&self, table: &Spanned<T>, key: &str) -> bool {
        self.unusable.has(&table.span(), key)
    }

    /// Reports problems of shape (unknown, missing or mistyped keys) as errors.
    pub fn problems(&mut self, problems: Vec<crate::plan::entries::Problem>) {
        for p in problems {
            let d = Diagnostic::at(self.path, self.text, p.span, p.message).hint(p.hint);
            self.diags.push(d);
        }
    }

    pub fn error<T>(&mut self, at: &Spanned<T>, msg: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::at(self.path, self.text, Some(at.span()), msg).hint(hint);
        self.diags.push(d);
    }

    pub fn error_span(&mut self, span: std::ops::Range<usize>, msg: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::at(self.path, self.text, Some(span), msg).hint(hint);
        self.diags.push(d);
    }

    pub(super) fn ok(&self) -> bool {
        !self.diags.iter().any(Diagnostic::is_error)
    }
}

/// Every syntax error of a file (see `entries::parse_document`) as diagnostics.
pub fn toml_errors(path: &Path, text: &str, errors: &[toml::de::Error]) -> Vec<Diagnostic> {
    errors.iter().map(|e| toml_error(path, text, e)).collect()
}

/// Turns a TOML parse/shape error into a diagnostic with a hint.
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> Diagnostic {
    let msg = e.message().trim().to_string();
    let (msg, hint) = if msg.contains("unknown field") {
        (msg, "remove the key or fix its spelling; the allowed keys are listed above (README, \"Plan format\")")
    } else if msg.contains("missing field") {
        (msg, "add the required key")
    } else if let Some(plain) = crate::plan::entries::type_problem(&msg) {
        plain
    } else if msg.contains("invalid type") {
        (msg, "check the value's type: strings need quotes; numbers, booleans and dates (2016-03-01) do not")
    } else {
        (msg, "fix the TOML syntax at this position")
    };
    Diagnostic::at(path, text, e.span(), msg).hint(hint)
}

/// An optional key: `Some(None)` when absent, `Some(Some(v))` when valid, `None` when invalid.
pub(super) fn present_and_valid<T>(v: Option<Option<T>>) -> Option<Option<T>> {
    match v {
        None => Some(None),
        Some(Some(x)) => Some(Some(x)),
        Some(None) => None,
    }
}
