//! Turns an occasion into subject, text and HTML with minijinja templates, in the recipient's
//! language and tone. Pure once templates are loaded: no I/O at render time.

mod call_instead;
mod catalog;
pub mod locale;
mod report;
pub mod salutation;
mod sample;

pub use call_instead::{CALL_INSTEAD_TEMPLATE, CallRow, deadline_text, digest_language, plain_call_instead};
pub use catalog::{DEFAULT_VARIANT, PARTS, TemplateCatalog};
pub use report::{REPORT_TEMPLATE, ReportRow, plain_report};
pub use sample::{
    sample_call_rows, sample_departure, sample_handover, sample_milestone, sample_moment, trial_call_instead,
    trial_report, trial_run,
};

use crate::diagnostics::Diagnostic;
use crate::events::MomentFacts;
use crate::handover::HandoverFacts;
use crate::occasion::{Occurrence, Recipient};
use crate::orders::milestone::MilestoneFacts;
use crate::plan::{Action, Contact, Customer, Rule};
use chrono::NaiveDate;
use minijinja::{Environment, Value, context};
use std::path::{Path, PathBuf};

/// What a message is about: enough to render it, and nothing about how it is stored.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The customer the rule belongs to.
    pub customer: &'a Customer,
    /// The rule: its template, action and kind.
    pub rule: &'a Rule,
    /// The contact the occasion concerns.
    pub about: Option<&'a Contact>,
    /// Where the message goes (a contact, or the salesperson for tasks).
    pub recipient: Recipient<'a>,
    /// The civil date of the occasion itself (`occasion.date` in templates).
    pub occasion_date: NaiveDate,
    /// Years of the relationship (anniversaries only; `occasion.years`).
    pub years: Option<u32>,
    /// What an order milestone's templates are told (`milestone.*`); `None` for other kinds.
    pub milestone: Option<&'a MilestoneFacts>,
    /// What a handover, owner change or phase change's templates are told (`brief.*`); `None`
    /// for other kinds.
    pub handover: Option<&'a HandoverFacts>,
    /// What a custom event's, a quiet spell's or a departure's templates are told
    /// (`event.*`, `inactivity.*`, `departure.*`); `None` for other kinds.
    pub moment: Option<&'a MomentFacts>,
}

impl<'a> From<&Occurrence<'a>> for Input<'a> {
    fn from(o: &Occurrence<'a>) -> Self {
        Input {
            customer: o.customer,
            rule: o.rule,
            about: o.about,
            recipient: o.recipient,
            occasion_date: o.occasion_date,
            years: o.years,
            milestone: None,
            handover: None,
            moment: None,
        }
    }
}

/// Who signs: the daemon's sender identity, as templates see it (`sender.{name,email}`).
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// Display name, e.g. "Beispiel GmbH".
    pub name: &'a str,
    /// The From: address.
    pub email: &'a str,
}

/// A rendered message body, before MIME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject, on one line (whitespace runs collapsed to one space).
    pub subject: String,
    /// The plain-text body (`body.txt.j2`).
    pub text: String,
    /// The HTML body (`body.html.j2`, auto-escaped).
    pub html: String,
    /// `<template>/<variant>` used (`@<customer>/<template>/<variant>` for an override), for
    /// the audit trail.
    pub variant: String,
    /// The most fuel one of the three parts used (see [`FUEL`]).
    pub fuel: u64,
}

/// Why a message could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The template has no variant for the recipient's language (and tone).
    #[error("template `{template}` has no variant for {wanted}")]
    NoVariant {
        /// The template folder name.
        template: String,
        /// The variant that was looked for first (`de-formal`, or `de` for tasks).
        wanted: String,
    },
    /// A part grew past [`MAX_OUTPUT_BYTES`].
    #[error("template {name} produced more than {MAX_OUTPUT_BYTES} bytes")]
    TooLarge {
        /// `<template>/<variant>/<part>`.
        name: String,
    },
    /// A template failed while rendering (an undefined variable, a runtime error, or more work
    /// than [`FUEL`] allows: minijinja's "engine ran out of fuel").
    #[error("template {name} failed: {source}")]
    Template {
        /// `<template>/<variant>/<part>`.
        name: String,
        /// minijinja's error.
        source: minijinja::Error,
    },
}

/// The most work one part of a message may take: minijinja counts every instruction it runs
/// against this budget and stops with an error when it is spent, so no template (a loop over
/// `range(100000)` nested three deep, say) can keep a worker busy. Every shipped template uses
/// less than 5,000 per part (asserted by `tests/it/templates.rs`).
pub const FUEL: u64 = 200_000;

/// The largest part (subject, text or HTML) a template may produce; rendering stops with an
/// error past it, so a template cannot fill the memory or the recipient's mailbox.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// Collects output up to [`MAX_OUTPUT_BYTES`]; a write past it fails, which ends the render.
struct Capped {
    out: Vec<u8>,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.over = true;
            return Err(std::io::Error::other("output limit reached"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The one environment set-up, for `load` and every test: auto-escaping by file name, strict
/// undefined variables (a misspelt `{{ contact.nmae }}` is an error, not an empty string), and
/// the fuel budget.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html.j2") { minijinja::AutoEscape::Html } else { minijinja::AutoEscape::None }
    });
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    // Numbers in the message's language (`language` in the context): `{{ occasion.years|ordinal }}`
    // gives "10." or "10th", `{{ 1234.5|number(2) }}` "1.234,50", `{{ 99|money("EUR") }}` "99,00 €".
    fn language(state: &minijinja::State) -> crate::plan::Language {
        let code = state.lookup("language");
        code.as_ref()
            .and_then(|v| v.as_str())
            .and_then(crate::plan::Language::parse)
            .unwrap_or(crate::plan::Language::En)
    }
    let not_finite = || minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, "not a finite number");
    env.add_filter("ordinal", |state: &minijinja::State, n: u64| locale::ordinal(n, language(state)));
    env.add_filter("number", move |state: &minijinja::State, x: f64, decimals: Option<u8>| {
        locale::number(x, decimals.unwrap_or(0).min(6), language(state)).ok_or_else(not_finite)
    });
    env.add_filter("money", move |state: &minijinja::State, x: f64, currency: Option<String>| {
        locale::money(x, currency.as_deref().unwrap_or("EUR"), language(state)).ok_or_else(not_finite)
    });
    env
}

/// Renders the three parts of `variant` (`subject.txt.j2`, whitespace folded to single spaces;
/// `body.txt.j2`; `body.html.j2`) with `ctx`, each within the bounds of [`render_bounded`];
/// `fuel` is the most one part used.
///
/// # Errors
/// The first part that fails.
fn render_parts(env: &Environment<'static>, variant: String, ctx: &Value) -> Result<Rendered, RenderError> {
    let mut fuel = 0;
    let mut part = |p: &str| -> Result<String, RenderError> {
        let (text, used) = render_bounded(env, &format!("{variant}/{p}"), ctx)?;
        fuel = fuel.max(used);
        Ok(text)
    };
    let subject = part("subject.txt.j2")?.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = part("body.txt.j2")?;
    let html = part("body.html.j2")?;
    Ok(Rendered { subject, text, html, variant, fuel })
}

/// Renders one compiled template within [`FUEL`] and [`MAX_OUTPUT_BYTES`].
///
/// # Errors
/// The template fails (undefined variable, out of fuel, …) or its output is too large.
fn render_bounded(env: &Environment<'static>, name: &str, ctx: &Value) -> Result<(String, u64), RenderError> {
    let tmpl = env.get_template(name).map_err(|source| RenderError::Template { name: name.to_string(), source })?;
    let mut w = Capped { out: Vec::new(), over: false };
    let result = tmpl.render_captured_to(ctx.clone(), &mut w).map(|c| c.state().fuel_levels().map_or(0, |f| f.0));
    match result {
        Ok(fuel) => match String::from_utf8(w.out) {
            Ok(text) => Ok((text, fuel)),
            Err(_) => Err(RenderError::TooLarge { name: name.to_string() }),
        },
        Err(_) if w.over => Err(RenderError::TooLarge { name: name.to_string() }),
        Err(source) => Err(RenderError::Template { name: name.to_string(), source }),
    }
}

/// Reads and compiles one template file; the problem, if any, as a diagnostic.
fn compile(env: &mut Environment<'static>, file: &Path, key: String) -> Option<Diagnostic> {
    let text = match crate::files::read_text(file, crate::files::MAX_TEMPLATE_BYTES) {
        Ok(t) => t,
        Err(e) => return Some(Diagnostic::whole_file(file, format!("cannot read template: {e}")).hint(e.hint())),
    };
    let e = env.add_template_owned(key, text.clone()).err()?;
    let message = format!("template syntax error: {}", e.detail().unwrap_or("invalid template"));
    let span = e.line().map(|line| {
        let start: usize = text.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum();
        let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        start..end
    });
    Some(
        Diagnostic::at(file, &text, span, message)
            .hint("see the minijinja/Jinja2 syntax; variables are listed in README, \"Templates\""),
    )
}

/// The language and tone a message is written in: the contact's for an email to a contact,
/// the customer's language without a tone for tasks and emails to the salesperson.
fn language_and_tone(input: &Input) -> (crate::plan::Language, Option<crate::plan::Tone>) {
    match input.recipient {
        Recipient::Contact(c) if input.rule.action == Action::Email => {
            (input.customer.language_of(Some(c)), Some(c.tone))
        }
        _ => (input.customer.language, None),
    }
}

/// Loaded, compiled templates.
pub struct Renderer {
    env: Environment<'static>,
    catalog: TemplateCatalog,
}

impl Renderer {
    /// Reads and compiles every template; syntax errors come back as diagnostics and the
    /// broken variant is left out.
    pub fn load(dir: &Path) -> (Renderer, Vec<Diagnostic>) {
        let (renderer, diags, _) = Self::load_with_last_good(dir, None);
        (renderer, diags)
    }

    /// [`Renderer::load`] for a reload: a variant with a file that does not compile keeps its
    /// last good version from `previous` (all three parts, so a message never mixes versions;
    /// the error is still reported). Also returns the broken files whose last good version is
    /// served.
    pub fn load_with_last_good(dir: &Path, previous: Option<&Renderer>) -> (Renderer, Vec<Diagnostic>, Vec<PathBuf>) {
        Self::load_with_overrides(dir, None, previous)
    }

    /// [`Renderer::load_with_last_good`] with the customers' overrides from the plans
    /// directory (`plans/<customer id>/<template>/<variant>/`, see `catalog.rs`).
    pub fn load_with_overrides(
        dir: &Path,
        plans_dir: Option<&Path>,
        previous: Option<&Renderer>,
    ) -> (Renderer, Vec<Diagnostic>, Vec<PathBuf>) {
        let (mut catalog, mut diags) = TemplateCatalog::scan_with_overrides(dir, plans_dir);
        let mut env = environment();
        let mut broken = Vec::new();
        for key in catalog.all() {
            let folder = catalog.folder(&key);
            for part in PARTS {
                if let Some(d) = compile(&mut env, &folder.join(part), format!("{key}/{part}")) {
                    diags.push(d);
                    broken.push(key.clone());
                }
            }
        }
        // A variant with a broken part is not offered (`check` then names the plans that need
        // it), unless its last good version can be served.
        let mut kept = Vec::new();
        broken.dedup();
        for key in broken {
            let last_good: Option<Vec<(String, String)>> = previous.and_then(|p| {
                PARTS
                    .iter()
                    .map(|part| {
                        let name = format!("{key}/{part}");
                        p.env.get_template(&name).ok().map(|t| (name, t.source().to_string()))
                    })
                    .collect()
            });
            let folder = catalog.folder(&key);
            match last_good {
                Some(parts)
                    if parts.iter().all(|(name, text)| env.add_template_owned(name.clone(), text.clone()).is_ok()) =>
                {
                    kept.extend(diags.iter().map(|d| d.file.clone()).filter(|f| f.starts_with(&folder)));
                }
                _ => catalog.remove(&key),
            }
        }
        kept.sort();
        kept.dedup();
        (Renderer { env, catalog }, diags, kept)
    }

    /// Which templates and variants are served.
    pub fn catalog(&self) -> &TemplateCatalog {
        &self.catalog
    }

    /// The variant key [`Renderer::render`] would use for `input` (see
    /// [`TemplateCatalog::resolve`]).
    pub fn variant_for(&self, input: &Input) -> Option<String> {
        let (language, tone) = language_and_tone(input);
        self.catalog.resolve(&input.customer.id, &input.rule.template, language, tone)
    }

    /// A render error as a diagnostic at the template file and line, with `context` (which
    /// customer, occasion and contact it failed for).
    pub fn diagnostic(&self, e: &RenderError, context: &str) -> Diagnostic {
        let hint = match e {
            RenderError::TooLarge { .. } => "a message part may be at most 256 KiB: shorten what the template writes",
            RenderError::Template { source, .. } if source.kind() == minijinja::ErrorKind::OutOfFuel => {
                "the template does too much work (long or nested loops): each part may run at most 200,000 template instructions"
            }
            _ => "fix the template; the variables are listed in README, \"Templates\"",
        };
        let name = match e {
            RenderError::NoVariant { .. } => {
                return Diagnostic::whole_file(self.catalog.dir(), e.to_string()).hint(hint);
            }
            RenderError::TooLarge { name } | RenderError::Template { name, .. } => name,
        };
        let (key, part) = name.rsplit_once('/').unwrap_or((name.as_str(), ""));
        let file = self.catalog.folder(key).join(part);
        let message = match e {
            RenderError::Template { source, .. } => {
                format!("template fails {context}: {}", source.detail().unwrap_or(&source.to_string()))
            }
            _ => format!("{e} {context}"),
        };
        let source_text = self.env.get_template(name).map(|t| t.source().to_string()).unwrap_or_default();
        let line = match e {
            RenderError::Template { source, .. } => source.line(),
            _ => None,
        };
        let span = line.map(|line| {
            let start: usize = source_text.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum();
            let end = source_text[start.min(source_text.len())..].find('\n').map_or(source_text.len(), |i| start + i);
            start..end
        });
        Diagnostic::at(&file, &source_text, span, message).hint(hint)
    }

    /// Renders one message.
    /// The variant is `<lang>-<tone>` (else `<lang>`) for an email to a contact, `<lang>` of the
    /// customer for tasks and emails to the salesperson.
    ///
    /// # Errors
    /// [`RenderError::NoVariant`] when the template has no variant for that language (and tone);
    /// [`RenderError::Template`] when a template fails at render time (such as an undefined filter
    /// or a runtime error in an expression).
    pub fn render(&self, input: &Input, sender: Sender) -> Result<Rendered, RenderError> {
        let customer = input.customer;
        let (language, tone) = language_and_tone(input);
        let salutation = match (input.recipient, tone) {
            (Recipient::Contact(c), Some(_)) => salutation::for_contact(c, language),
            _ => salutation::for_owner(language).to_string(),
        };
        let template = &*input.rule.template;
        let variant =
            self.catalog.resolve(&customer.id, template, language, tone).ok_or_else(|| RenderError::NoVariant {
                template: template.to_string(),
                wanted: match tone {
                    Some(t) => format!("{}-{}", language.code(), t.code()),
                    None => language.code().to_string(),
                },
            })?;
        let contact_value = |c: &Contact| {
            context! {
                id => &*c.id,
                name => &*c.name,
                first_name => salutation::first_name(c),
                last_name => salutation::last_name(c),
                title => c.title.as_deref().unwrap_or(""),
                email => c.email.as_str(),
            }
        };
        let primary = customer.primary_contact();
        let ctx = context! {
            language => language.code(),
            salutation => salutation,
            contact => input.about.map(contact_value).unwrap_or(Value::from(())),
            primary => contact_value(primary),
            customer => context! {
                id => &*customer.id,
                name => &*customer.name,
                since => locale::date(customer.since, language),
            },
            occasion => context! {
                name => &*input.rule.name,
                kind => match input.moment {
                    Some(MomentFacts::Departure { .. }) => crate::plan::TriggerKind::Departure.code(),
                    _ => input.rule.trigger.kind().code(),
                },
                date => locale::date(input.occasion_date, language),
                years => input.years,
            },
            milestone => input.milestone.map(|m| milestone_value(m, language)).unwrap_or(Value::from(())),
            brief => input.handover.map(|h| brief_value(h, customer, language)).unwrap_or(Value::from(())),
            event => match input.moment {
                Some(MomentFacts::Event { id, kind, note, date }) => context! {
                    id => id,
                    kind => kind,
                    note => note,
                    date => locale::date(*date, language),
                },
                _ => Value::from(()),
            },
            inactivity => match input.moment {
                Some(MomentFacts::Inactivity { last_order, usual_days, threshold_days }) => context! {
                    last_order => locale::date(*last_order, language),
                    usual_days => usual_days,
                    days => threshold_days,
                },
                _ => Value::from(()),
            },
            departure => match input.moment {
                Some(MomentFacts::Departure { contact, reason }) => context! {
                    contact => context! { id => &contact.id, name => &contact.name, email => &contact.email },
                    reason => reason,
                },
                _ => Value::from(()),
            },
            sender => context! { name => sender.name, email => sender.email },
            owner => context! { email => customer.owner.as_str() },
        };
        render_parts(&self.env, variant, &ctx)
    }
}

/// `milestone.*`: the facts, with the amounts written out in `language` (exact decimals, never
/// through a float):
/// - `measure`: `orders` or `revenue`; `threshold`: the number reached (an integer);
/// - `reached`: the threshold written out: `100.` / `100th` for orders, `100.000 €` / `€100,000`
///   for revenue;
/// - `order_count`: orders after the change; `revenue`: the total, written out; `currency`;
/// - `revenue_by_year`: `[{year, revenue}]`, ascending (revenue written out).
fn milestone_value(m: &MilestoneFacts, language: crate::plan::Language) -> Value {
    let currency = m.currency.as_str();
    let reached = match m.measure {
        crate::occasion::EventKind::Revenue => {
            locale::money_exact(rust_decimal::Decimal::from(m.threshold), 0, currency, language)
        }
        _ => locale::ordinal(m.threshold, language),
    };
    let by_year: Vec<Value> = m
        .revenue_by_year
        .iter()
        .map(|y| context! { year => y.year, revenue => locale::money_exact(y.amount, 2, currency, language) })
        .collect();
    context! {
        measure => m.measure.code(),
        threshold => m.threshold,
        reached => reached,
        order_count => m.order_count,
        revenue => locale::money_exact(m.revenue, 2, currency, language),
        currency => currency,
        revenue_by_year => by_year,
    }
}

/// `brief.*`: what a handover, owner change or phase change's templates are told.
/// - `change`: `handover`, `owner` or `phase`; `from`, `to`: contact ids, owner addresses or
///   phases;
/// - `departed`, `new`: the previous and the new primary contact (`{id, name, email, phone,
///   tel, role}`; `tel` a `tel:` URI, `phone`/`role`/`tel` `none` when not given), `none` when
///   not a handover (`new` also when the contact left the plan since);
/// - `previous_owner` (owner changes), `previous_phase` (phase changes), `phase` (now);
/// - `since`: the relationship's start, written out; `orders`, `revenue`, `revenue_by_year`
///   (`[{year, revenue}]`), `recent` (`[{rule, kind, action, date}]`, newest first) from the
///   store when the message is built (`orders`/`revenue` `none` without it);
/// - `notes`, `goals`: the plan's lists (possibly empty).
fn brief_value(h: &HandoverFacts, customer: &Customer, language: crate::plan::Language) -> Value {
    use crate::handover::{ChangeKind, ContactCard, tel_uri};
    let card = |c: &ContactCard| {
        context! {
            id => &c.id,
            name => &c.name,
            email => &c.email,
            phone => c.phone.as_deref(),
            tel => c.phone.as_deref().map(tel_uri),
            role => c.role.as_deref(),
        }
    };
    let departed = (h.change == ChangeKind::Handover).then_some(h.departed.as_ref()).flatten().map(|c| {
        // The departed contact's current phone and role when still in the plan.
        match customer.contact(&c.id) {
            Some(now) => card(&ContactCard { name: c.name.clone(), email: c.email.clone(), ..ContactCard::of(now) }),
            None => card(c),
        }
    });
    let new = (h.change == ChangeKind::Handover)
        .then(|| customer.contact(&h.to))
        .flatten()
        .map(|c| card(&ContactCard::of(c)));
    let currency = customer.currency.as_str();
    let figures = h.brief.as_ref();
    let revenue = figures.map(|f| {
        let total: rust_decimal::Decimal = f.revenue_by_year.iter().map(|y| y.amount).sum();
        locale::money_exact(total, 2, currency, language)
    });
    let by_year: Vec<Value> = figures
        .map(|f| {
            f.revenue_by_year
                .iter()
                .map(|y| context! { year => y.year, revenue => locale::money_exact(y.amount, 2, currency, language) })
                .collect()
        })
        .unwrap_or_default();
    let recent: Vec<Value> = figures
        .map(|f| {
            f.recent
                .iter()
                .map(|r| context! { rule => &r.rule, kind => &r.kind, action => &r.action, date => locale::date(r.date, language) })
                .collect()
        })
        .unwrap_or_default();
    let lines = |v: &[Box<str>]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    context! {
        change => h.change.code(),
        from => &h.from,
        to => &h.to,
        departed => departed,
        new => new,
        previous_owner => (h.change == ChangeKind::Owner).then_some(h.from.as_str()),
        previous_phase => (h.change == ChangeKind::Phase).then_some(h.from.as_str()),
        phase => customer.phase.code(),
        since => locale::date(customer.since, language),
        orders => figures.map(|f| f.order_count),
        revenue => revenue,
        currency => currency,
        revenue_by_year => by_year,
        recent => recent,
        notes => lines(&customer.notes),
        goals => lines(&customer.goals),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Nested loops of random depth and size, each level writing a random amount: whatever
    /// the shape, rendering ends quickly with the output within the cap, or with an error
    /// (out of fuel, too large) — never a hang, never more output than the cap.
    #[test]
    fn any_loop_nest_ends_within_fuel_and_cap() {
        let config = ProptestConfig {
            cases: 96,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x14_7e57),
            ..ProptestConfig::default()
        };
        // Loop sizes small or up to minijinja's range limit, a little text per level, and a
        // string repetition that is nothing, small, or around the cap.
        let size = prop_oneof![1usize..=10, 1usize..=100_000];
        let levels = prop::collection::vec((size, 0usize..=20), 1..=5);
        let repeat = prop_oneof![Just(0usize), 0usize..=1_000, 0usize..=400_000];
        let outcomes = std::cell::RefCell::new([0u32; 3]); // fits, too large, out of fuel
        proptest!(config, |(levels in levels, repeat in repeat)| {
            let mut source = String::new();
            for (i, (n, _)) in levels.iter().enumerate() {
                source.push_str(&format!("{{% for i{i} in range({n}) %}}"));
            }
            for (_, width) in &levels {
                source.push_str(&"x".repeat(*width));
            }
            source.push_str(&format!("{{{{ \"y\" * {repeat} }}}}"));
            for _ in &levels {
                source.push_str("{% endfor %}");
            }
            let mut env = environment();
            env.add_template_owned("t/en/body.txt.j2", source.clone()).unwrap();
            let started = std::time::Instant::now();
            let result = render_bounded(&env, "t/en/body.txt.j2", &Value::from(()));
            let took = started.elapsed();
            prop_assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
            match result {
                Ok((text, fuel)) => {
                    prop_assert!(text.len() <= MAX_OUTPUT_BYTES);
                    prop_assert!(fuel <= FUEL);
                    outcomes.borrow_mut()[0] += 1;
                }
                Err(RenderError::TooLarge { .. }) => outcomes.borrow_mut()[1] += 1,
                Err(RenderError::Template { source, .. }) => {
                    prop_assert_eq!(source.kind(), minijinja::ErrorKind::OutOfFuel, "{}", source);
                    outcomes.borrow_mut()[2] += 1;
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        });
        // The cases are not all of one kind (with this seed: all three kinds of ending).
        let o = outcomes.into_inner();
        assert!(o.iter().filter(|&&n| n > 0).count() >= 2, "fits / too large / out of fuel: {o:?}");
        // And each kind of ending, for certain.
        for (source, want) in [
            ("{% for a in range(10) %}x{% endfor %}", 0),
            ("{% for a in range(1000) %}{{ 'y' * 1000 }}{% endfor %}", 1),
            ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", 2),
        ] {
            let mut env = environment();
            env.add_template_owned("t", source.to_string()).unwrap();
            let got = match render_bounded(&env, "t", &Value::from(())) {
                Ok(_) => 0,
                Err(RenderError::TooLarge { .. }) => 1,
                Err(RenderError::Template { source, .. }) if source.kind() == minijinja::ErrorKind::OutOfFuel => 2,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(got, want, "{source}");
        }
    }

    #[test]
    fn undefined_variables_are_errors() {
        let mut env = environment();
        env.add_template_owned("t", "Hallo {{ contact.nmae }}".to_string()).unwrap();
        let ctx = context! { contact => context! { name => "Anna" } };
        let err = render_bounded(&env, "t", &ctx).unwrap_err().to_string();
        assert!(err.contains("undefined"), "{err}");
    }
}
