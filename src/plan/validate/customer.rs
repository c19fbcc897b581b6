//! A whole plan into a [`Customer`]: the `[customer]` table, its contacts (exactly one
//! primary), the playbook's rules merged with the plan's own, and whether every rule has a
//! template variant for each recipient's language and tone.

use super::rule::{build_rule, check_keys};
use super::scalars::{calendar_settings, check_text, parse_date, parse_email, parse_id, parse_language, parse_tz};
use super::{Context, Src, present_and_valid};
use crate::diagnostics::Diagnostic;
use crate::plan::model::{
    Action, Contact, Customer, Gender, Language, MAX_COMPANY_CHARS, MAX_NAME_CHARS, MAX_NOTE_CHARS, MAX_NOTES,
    MAX_PHONE_CHARS, MAX_ROLE_CHARS, MAX_SALUTATION_CHARS, MAX_TITLE_CHARS, Phase, Profile, Rule, Target, Templates,
    Tone,
};
use crate::plan::names;
use crate::plan::raw::RawContact;
use crate::plan::raw::RawPlan;
use chrono::NaiveDate;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Validates one customer plan. `playbooks` holds the valid playbooks by name; `broken`
/// names playbooks that exist but have errors.
pub fn plan(src: &mut Src, raw: &RawPlan, ctx: &Context) -> Option<Customer> {
    let (playbooks, broken, templates, default_tz) = (ctx.playbooks, ctx.broken, ctx.templates, ctx.default_tz);
    let c = raw.customer.get_ref();
    // Keys that are missing or of the wrong type were reported while reading; they hold
    // stand-ins, so their checks (and what needs them) are skipped.
    let bad = |key: &str| src.unusable(&raw.customer, key);
    let (id_bad, name_bad, since_bad, owner_bad) = (bad("id"), bad("name"), bad("since"), bad("owner"));
    let (language_bad, phase_bad, playbook_bad) = (bad("language"), bad("phase"), bad("playbook"));
    let ended_bad = bad("ended");
    if !id_bad {
        parse_id(src, &c.id, "customer id");
    }
    if !name_bad {
        if c.name.get_ref().trim().is_empty() {
            src.error(&c.name, "customer name is empty", "write the company name as it should appear in emails");
        } else {
            check_text(src, &c.name, "customer name", MAX_COMPANY_CHARS);
        }
    }
    let since = (!since_bad)
        .then(|| parse_date(src, &c.since, "relationship start date `since`", false))
        .flatten()
        .and_then(|md| NaiveDate::from_ymd_opt(md.year?, md.month, md.day));
    let ended = match &c.ended {
        Some(v) if !ended_bad => {
            let day = parse_date(src, v, "end date `ended`", false)
                .and_then(|md| NaiveDate::from_ymd_opt(md.year?, md.month, md.day));
            if let (Some(end), Some(start)) = (day, since)
                && end < start
            {
                src.error(
                    v,
                    format!("the relationship cannot end ({end}) before it started (since = {start})"),
                    "write the last day of the relationship, on or after `since`",
                );
            }
            day.map(Some)
        }
        _ => Some(None),
    };
    let owner = (!owner_bad).then(|| parse_email(src, &c.owner)).flatten();
    let timezone = match &c.timezone {
        Some(tz) => parse_tz(src, tz),
        None => Some(default_tz),
    };
    let language = (!language_bad).then(|| parse_language(src, &c.language)).flatten();
    let currency = match &c.currency {
        None => crate::money::Currency::EUR,
        Some(v) => crate::money::Currency::parse(v.get_ref()).unwrap_or_else(|why| {
            src.error(v, why, "the currency of the customer's revenue thresholds, e.g. \"EUR\" or \"CHF\"");
            crate::money::Currency::EUR
        }),
    };
    let calendar = calendar_settings(src, c.calendar_keys()).over(ctx.default_calendar);
    let notes = note_list(src, c.notes.as_ref(), "notes");
    let goals = note_list(src, c.goals.as_ref(), "goals");
    let phase = Phase::parse(c.phase.get_ref());
    if phase.is_none() && !phase_bad {
        src.error(
            &c.phase,
            format!("unknown phase `{}`", c.phase.get_ref()),
            "use \"initiation\", \"growth\", \"maturity\" or \"degeneration\"",
        );
    }

    // Contacts.
    let mut contacts: Vec<Option<Contact>> = Vec::with_capacity(raw.contacts.len());
    let mut primaries = Vec::new();
    let mut contact_ids: HashSet<&str> = HashSet::with_capacity(raw.contacts.len());
    for rc in &raw.contacts {
        let rc_span = rc.span();
        let bad = |key: &str| src.unusable(rc, key);
        let (id_bad, name_bad, email_bad, tone_bad) = (bad("id"), bad("name"), bad("email"), bad("tone"));
        let rc = rc.get_ref();
        let id_ok = !id_bad && parse_id(src, &rc.id, "contact id");
        if id_ok && !contact_ids.insert(rc.id.get_ref().as_str()) {
            src.error(
                &rc.id,
                format!("contact id `{}` is used twice", rc.id.get_ref()),
                "give each contact a unique id",
            );
        }
        let email = (!email_bad).then(|| parse_email(src, &rc.email)).flatten();
        let gender = match rc.gender.as_ref().map(|g| g.get_ref().as_str()) {
            None | Some("other") | Some("diverse") => Some(Gender::None),
            Some("female") => Some(Gender::Female),
            Some("male") => Some(Gender::Male),
            Some(other) => {
                if let Some(g) = &rc.gender {
                    src.error(
                        g,
                        format!("unknown gender `{other}`"),
                        "use \"female\", \"male\" or \"other\" (or leave it out for a neutral salutation)",
                    );
                }
                None
            }
        };
        let birthday = rc.birthday.as_ref().and_then(|b| parse_date(src, b, "birthday", true));
        let tone = Tone::parse(rc.tone.get_ref());
        if tone.is_none() && !tone_bad {
            src.error(
                &rc.tone,
                format!("unknown tone `{}`", rc.tone.get_ref()),
                "use \"formal\" (Sie) or \"informal\" (du)",
            );
        }
        let language = rc.language.as_ref().map(|l| parse_language(src, l));
        let tz = rc.timezone.as_ref().map(|t| parse_tz(src, t));
        if let Some(flag) = rc.primary.as_ref().filter(|p| *p.get_ref()) {
            primaries.push((contacts.len(), rc_span.clone(), flag.span()));
        }
        let names = contact_names(src, rc, name_bad);
        let phone = contact_phone(src, rc.phone.as_ref());
        let role = match &rc.role {
            Some(r) if r.get_ref().trim().is_empty() => {
                src.error(r, "role is empty", "write the person's role, or leave the key out");
                None
            }
            Some(r) => check_text(src, r, "role", MAX_ROLE_CHARS).then(|| Some(r.get_ref().trim().into())),
            None => Some(None),
        };
        let built = (|| {
            let names = names?;
            Some(Contact {
                id: id_ok.then(|| rc.id.get_ref().as_str().into())?,
                name: rc.name.get_ref().trim().into(),
                given_name: names.given.map(Into::into),
                family_name: names.family.map(Into::into),
                plain_name: names.plain.into(),
                title: rc.title.as_ref().map(|t| t.get_ref().trim().into()),
                rank: names.rank,
                salutation: rc.salutation.as_ref().map(|s| s.get_ref().trim().into()),
                gender: gender?,
                email: email?,
                birthday,
                tone: tone?,
                language: present_and_valid(language)?,
                timezone: present_and_valid(tz)?,
                phone: phone?,
                role: role?,
            })
        })();
        // `None` entries keep indices aligned with the file; they always come with an error.
        contacts.push(built);
    }
    let primary = match primaries.as_slice() {
        [(i, _, _)] => Some(*i),
        // A contact left out for a problem of shape may be the primary one.
        [] if !src.complete => None,
        [] => {
            src.error(
                &raw.customer,
                "no contact is marked `primary = true`",
                "mark exactly one [[contact]] with primary = true",
            );
            None
        }
        [_, rest @ ..] => {
            for (_, _, flag) in rest {
                src.error_span(
                    flag.clone(),
                    "a second contact is marked `primary = true`",
                    "exactly one contact may be primary; remove primary = true from all but one",
                );
            }
            None
        }
    };

    // Rules: the playbook's, then the plan's own (overriding or disabling by name).
    let mut rules: Vec<Arc<Rule>> = Vec::new();
    let mut shared: Option<Arc<[Arc<Rule>]>> = None;
    if let Some(pb) = &c.playbook {
        match playbooks.get(pb.get_ref()) {
            Some(p) => {
                rules = p.rules.to_vec();
                shared = Some(p.rules.clone());
            }
            None if broken.contains(pb.get_ref()) => {
                src.error(
                    pb,
                    format!("playbook `{}` has errors", pb.get_ref()),
                    "fix the playbook (see its errors); this plan is not applied until then",
                );
            }
            None => {
                let mut names: Vec<&String> = playbooks.keys().collect();
                names.sort();
                src.error(
                    pb,
                    format!("unknown playbook `{}`", pb.get_ref()),
                    format!(
                        "playbooks are files in the playbooks directory; known: {}",
                        names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
    }
    // Plan rules override or disable playbook rules by name; lookups by hash and removals as
    // tombstones, so a plan with thousands of rules is validated in linear time.
    let playbook_rules: HashMap<&str, usize> = rules.iter().enumerate().map(|(i, r)| (&*r.name, i)).collect();
    let mut merged: Vec<Option<Arc<Rule>>> = rules.iter().cloned().map(Some).collect();
    let mut own: HashSet<&str> = HashSet::with_capacity(raw.rules.len());
    for r in &raw.rules {
        // An entry without a usable name, or with an unusable `enabled`, in a plan whose
        // playbook is unusable (or with no usable [customer]): which rule it overrides, and
        // whether it is used at all, cannot be told, so only its values are checked.
        if playbook_bad || src.unusable(r, "name") || src.unusable(r, "enabled") {
            check_keys(src, r, ctx);
            continue;
        }
        let name = r.get_ref().name.get_ref().as_str();
        if !own.insert(name) {
            src.error(
                &r.get_ref().name,
                format!("occasion `{name}` is defined twice in this plan"),
                "merge the two entries",
            );
            continue;
        }
        shared = None;
        let pos = playbook_rules.get(name).copied();
        let enabled = r.get_ref().enabled.as_ref().is_none_or(|e| *e.get_ref());
        if !enabled {
            check_keys(src, r, ctx);
            match pos {
                Some(i) => merged[i] = None,
                None => src.error(
                    &r.get_ref().name,
                    format!("`enabled = false` for `{name}`, which the playbook does not define"),
                    "name a rule of the customer's playbook, or remove the entry",
                ),
            }
            continue;
        }
        if let Some(rule) = build_rule(src, r, pos.map(|i| &*rules[i]), ctx) {
            match pos {
                Some(i) => merged[i] = Some(ctx.rules.rule(rule)),
                None => merged.push(Some(ctx.rules.rule(rule))),
            }
        }
    }
    let rules: Vec<Arc<Rule>> = merged.into_iter().flatten().collect();
    // Template coverage for the contacts and rules that are valid, whatever else is wrong.
    if let Some(language) = language.filter(|_| !id_bad) {
        check_template_variants(src, raw, c.id.get_ref(), language, &contacts, &rules, templates);
    }

    if !src.ok() {
        return None;
    }
    let (since, owner, timezone, language, phase, primary) = (since?, owner?, timezone?, language?, phase?, primary?);
    for (contact, rc) in contacts.iter().zip(&raw.contacts) {
        if let Some(contact) = contact {
            warn_unsure_greeting(src, contact, rc.get_ref());
        }
    }
    let profile = Profile {
        id: c.id.get_ref().as_str().into(),
        name: c.name.get_ref().trim().into(),
        since,
        ended: ended?,
        owner,
        timezone,
        language,
        currency,
        phase,
        notes: notes?,
        goals: goals?,
        contacts: contacts.into_iter().collect::<Option<Arc<[Contact]>>>()?,
        primary,
        source: Arc::from(src.path),
        calendar,
    };
    let rules = shared.unwrap_or_else(|| ctx.rules.list(rules));
    src.ok().then(|| Customer { profile: Arc::new(profile), rules })
}

/// A contact's `phone`: one line of at most [`MAX_PHONE_CHARS`] characters, digits and
/// `+ ( ) / - .` and spaces, with at least one digit. `None` when it is invalid (reported).
fn contact_phone(src: &mut Src, v: Option<&serde_spanned::Spanned<String>>) -> Option<Option<Box<str>>> {
    let Some(v) = v else { return Some(None) };
    if !check_text(src, v, "phone", MAX_PHONE_CHARS) {
        return None;
    }
    let p = v.get_ref().trim();
    let allowed = |c: char| c.is_ascii_digit() || " +()/-.".contains(c);
    if let Some(bad) = p.chars().find(|c| !allowed(*c)) {
        src.error(
            v,
            format!("phone `{p}` contains `{bad}`"),
            "write the number with digits, spaces and + ( ) / - . only, e.g. \"+49 89 1234-567\"",
        );
        return None;
    }
    if !p.chars().any(|c| c.is_ascii_digit()) {
        src.error(v, format!("phone `{p}` has no digits"), "write the number, e.g. \"+49 89 1234-567\"");
        return None;
    }
    Some(Some(p.into()))
}

/// A customer's `notes` or `goals`: a string or an array of strings, each one line of at most
/// [`MAX_NOTE_CHARS`] characters, at most [`MAX_NOTES`] entries. `None` when invalid (reported).
fn note_list(src: &mut Src, v: Option<&serde_spanned::Spanned<toml::Value>>, what: &str) -> Option<Box<[Box<str>]>> {
    let Some(v) = v else { return Some(Box::default()) };
    let items: Vec<&toml::Value> = match v.get_ref() {
        toml::Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    let hint = format!("write {what} = \"…\" or {what} = [\"…\", \"…\"] (at most {MAX_NOTES} entries)");
    if items.len() > MAX_NOTES {
        src.error(v, format!("{what} has {} entries (at most {MAX_NOTES})", items.len()), hint);
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(text) = item.as_str() else {
            src.error(v, format!("{what} must be a string or an array of strings"), hint);
            return None;
        };
        let text = text.trim();
        if let Some(why) = crate::plan::model::text_problem(text, MAX_NOTE_CHARS) {
            src.error(
                v,
                format!("an entry of {what} {why}"),
                "each entry reaches the salesperson's brief: write it on one line, without control characters, shorter",
            );
            return None;
        }
        if !text.is_empty() {
            out.push(text.into());
        }
    }
    Some(out.into())
}

/// A contact's name parts, as the greetings use them.
struct Names {
    given: Option<String>,
    family: Option<String>,
    plain: String,
    rank: Option<names::Rank>,
}

/// Checks `name`, `given_name`, `family_name`, `title` and `salutation` (each reaches headers or
/// greetings) and works out the parts of the name; `None` when any of them is invalid, or when
/// `name` is unusable (missing or of the wrong type: reported already, the other parts are
/// still checked).
fn contact_names(src: &mut Src, rc: &RawContact, name_bad: bool) -> Option<Names> {
    let mut ok = !name_bad;
    if !name_bad {
        if rc.name.get_ref().trim().is_empty() {
            src.error(&rc.name, "contact name is empty", "write the person's full name, e.g. \"Anna Müller\"");
            ok = false;
        } else {
            ok &= check_text(src, &rc.name, "contact name", MAX_NAME_CHARS);
        }
    }
    for (value, what, max) in [
        (&rc.given_name, "given_name", MAX_NAME_CHARS),
        (&rc.family_name, "family_name", MAX_NAME_CHARS),
        (&rc.title, "title", MAX_TITLE_CHARS),
        (&rc.salutation, "salutation", MAX_SALUTATION_CHARS),
    ] {
        let Some(v) = value else { continue };
        if v.get_ref().trim().is_empty() && what != "title" {
            src.error(v, format!("{what} is empty"), format!("write the {what}, or leave the key out"));
            ok = false;
        } else {
            ok &= check_text(src, v, what, max);
        }
    }
    if !ok {
        return None;
    }
    let parsed = names::parse(rc.name.get_ref());
    let given_key = rc.given_name.as_ref().map(|g| g.get_ref().trim().to_string());
    let family_key = rc.family_name.as_ref().map(|f| f.get_ref().trim().to_string());
    // One part given: the other is the rest of the name, when the name reads that way.
    let given = given_key.clone().or_else(|| match &family_key {
        Some(f) => parsed.core.strip_suffix(f.as_str()).map(str::trim_end).filter(|g| !g.is_empty()).map(Into::into),
        None => parsed.given.clone(),
    });
    let family = family_key.clone().or_else(|| match &given_key {
        Some(g) => parsed.core.strip_prefix(g.as_str()).map(str::trim_start).filter(|f| !f.is_empty()).map(Into::into),
        None => parsed.family.clone(),
    });
    let plain = match (&given_key, &family_key) {
        (Some(g), Some(f)) => format!("{g} {f}"),
        _ => parsed.display.clone(),
    };
    let title_rank = rc.title.as_ref().and_then(|t| names::rank_of_title(t.get_ref()));
    Some(Names { given, family, plain, rank: title_rank.max(parsed.rank) })
}

/// A warning when the greeting of `contact` needs a part of the name that cannot be told for
/// certain (it then falls back to the neutral form).
fn warn_unsure_greeting(src: &mut Src, contact: &Contact, rc: &RawContact) {
    if contact.salutation.is_some() {
        return;
    }
    let missing = match contact.tone {
        Tone::Formal if contact.gender != Gender::None && contact.family_name.is_none() => "family name",
        Tone::Informal if contact.given_name.is_none() => "given name",
        _ => return,
    };
    let why = names::parse(rc.name.get_ref()).unsure.unwrap_or("it cannot be split");
    let d = Diagnostic::at(
        src.path,
        src.text,
        Some(rc.name.span()),
        format!("cannot tell the {missing} in `{}` for certain: {why}", contact.name),
    )
    .hint(format!(
        "the greeting falls back to the neutral form (\"{}\"); add given_name = \"…\" and family_name = \"…\" to the contact, or write the whole greeting line as salutation = \"…\"",
        contact.plain_name
    ))
    .warning();
    src.diags.push(d);
}

/// Every rule must have a template variant for the language and tone of each recipient (the
/// valid contacts and rules; `contacts` is aligned with the file's `[[contact]]` tables).
fn check_template_variants(
    src: &mut Src,
    raw: &RawPlan,
    customer_id: &str,
    language: Language,
    contacts: &[Option<Contact>],
    rules: &[Arc<Rule>],
    templates: &dyn Templates,
) {
    // The distinct (language, tone) of the contacts, each with the first contact that has it
    // (where a missing variant is reported): at most four, so rules × contacts is never walked.
    let mut recipients: Vec<(Language, Tone, usize)> = Vec::new();
    for (i, contact) in contacts.iter().enumerate() {
        let Some(contact) = contact else { continue };
        let combo = (contact.language.unwrap_or(language), contact.tone);
        if !recipients.iter().any(|(l, t, _)| (*l, *t) == combo) {
            recipients.push((combo.0, combo.1, i));
        }
    }
    let mut checked: HashSet<(&str, Language, Option<Tone>)> = HashSet::new();
    for rule in rules.iter() {
        let needs: Vec<(Language, Option<Tone>, usize)> = match rule.action {
            // Tasks and emails to the salesperson: the customer's language, no tone (reported at
            // the first contact, as before).
            Action::Task => vec![(language, None, 0)],
            Action::Email if rule.target == Target::Owner => vec![(language, None, 0)],
            Action::Email => recipients.iter().map(|&(l, t, i)| (l, Some(t), i)).collect(),
        };
        for (lang, tone, i) in needs {
            if !checked.insert((&*rule.template, lang, tone))
                || templates.has_variant(customer_id, &rule.template, lang, tone)
            {
                continue;
            }
            let contact_id = match contacts.get(i) {
                Some(Some(c)) => &*c.id,
                _ => raw.contacts.get(i).map_or("", |c| c.get_ref().id.get_ref().as_str()),
            };
            let wanted = match tone {
                Some(t) => format!("{}-{}", lang.code(), t.code()),
                None => lang.code().to_string(),
            };
            let span = raw.contacts.get(i).map_or(raw.customer.span(), |c| c.get_ref().tone.span());
            src.error_span(
                span,
                format!(
                    "template `{}` has no variant `{wanted}` (needed by occasion `{}` for contact `{}`)",
                    rule.template, rule.name, contact_id
                ),
                format!(
                    "add {}/{}/{wanted}/ (or /{}/) with subject.txt.j2, body.txt.j2 and body.html.j2",
                    templates.dir().display(),
                    rule.template,
                    lang.code()
                ),
            );
        }
    }
}
