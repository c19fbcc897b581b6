//! Reads the playbook and plan directories (in parallel), validates everything and returns the
//! valid customers plus every problem found. A broken file never hides the good ones.

use super::model::{Customer, Plans, Templates};
use super::validate::{self, Context, Playbook, Src};
use super::{fast_parse, lenient};
use crate::calendar::CrontabCache;
use crate::diagnostics::Diagnostic;
use chrono_tz::Tz;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where plans come from, and what they are checked against.
pub struct Sources<'a> {
    /// Directory with one `*.toml` plan per customer.
    pub plans_dir: &'a Path,
    /// Directory with shared rule sets, named by file stem (may be missing when no plan uses one).
    pub playbooks_dir: &'a Path,
    /// Which templates and variants exist, for `template = "…"` checks.
    pub templates: &'a dyn Templates,
    /// Zone for customers that name none (the daemon's `timezone`).
    pub default_timezone: Tz,
    /// The daemon's `[calendar]` defaults (`Settings::default()`: nothing closed, no window).
    pub default_calendar: &'a crate::calendar::Settings,
}

/// The outcome of loading: the valid plans and every problem found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The valid customers (invalid files are left out and reported).
    pub plans: Plans,
    /// Problems in files, sorted by file then line.
    pub diagnostics: Vec<Diagnostic>,
    /// Plan files read (valid or not).
    pub plan_files: usize,
    /// Playbook files read (valid or not).
    pub playbook_files: usize,
    /// The playbooks plans were validated against (valid ones, plus kept last good versions).
    pub playbooks: HashMap<String, Playbook>,
    /// Broken playbook files whose last good version was used instead.
    pub kept_playbooks: Vec<PathBuf>,
    /// The plans directory could not be listed (so `plans` is empty for that reason, not
    /// because there are no plans).
    pub plans_dir_unreadable: bool,
    /// Broken playbooks without a last good version (plans that use them are reported).
    pub broken_playbooks: Vec<String>,
    /// Valid customers left out because a file whose path sorts first defines the same id
    /// (each is reported); one of them takes the id over when that file stops defining it.
    pub duplicates: Vec<Arc<Customer>>,
}

impl Loaded {
    /// How many diagnostics are errors (the rest are warnings).
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

/// `*.toml` files of a directory in directory order (callers order results by customer id or
/// file, which is cheaper than sorting 100,000 paths); hidden and editor temp files are skipped.
///
/// # Errors
/// The directory cannot be read (missing, not a directory, no permission). Entries that fail
/// to read are skipped.
pub fn toml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)?;
    let files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    Ok(files)
}

fn dir_error(dir: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::whole_file(dir, format!("cannot read directory: {e}"))
        .hint("check `plans`/`playbooks` in the config file")
}

/// Loads playbooks: valid ones by name (file stem), and the names of broken ones.
pub fn playbooks(
    dir: &Path,
    templates: &dyn Templates,
    crontabs: &CrontabCache,
    diags: &mut Vec<Diagnostic>,
) -> (HashMap<String, Playbook>, Vec<String>, usize) {
    let (good, broken, count, _) = playbooks_with_last_good(dir, templates, crontabs, None, diags);
    (good, broken, count)
}

/// [`playbooks`], where a broken file whose name is in `previous` keeps that last good
/// version (its errors are still reported); also returns those files.
pub fn playbooks_with_last_good(
    dir: &Path,
    templates: &dyn Templates,
    crontabs: &CrontabCache,
    previous: Option<&HashMap<String, Playbook>>,
    diags: &mut Vec<Diagnostic>,
) -> (HashMap<String, Playbook>, Vec<String>, usize, Vec<PathBuf>) {
    let mut kept = Vec::new();
    let mut good = HashMap::new();
    let mut broken = Vec::new();
    let files = match toml_files(dir) {
        Ok(f) => f,
        // On a reload, a directory that cannot be read (swapped away by a deploy, permissions)
        // is a failed reload of the playbooks: every last good playbook stays in force.
        Err(e) if previous.is_some_and(|p| !p.is_empty()) => {
            diags.push(
                Diagnostic::whole_file(
                    dir,
                    format!("cannot read directory: {e}; the last good playbooks stay in force"),
                )
                .hint("check `playbooks` in the config file; the next reload reads it again"),
            );
            kept.push(dir.to_path_buf());
            return (previous.cloned().unwrap_or_default(), broken, 0, kept);
        }
        Err(e) => {
            // A missing playbooks directory is fine when no plan uses playbooks.
            if dir.exists() {
                diags.push(dir_error(dir, &e));
            }
            return (good, broken, 0, kept);
        }
    };
    let count = files.len();
    let empty = HashMap::new();
    let none = crate::calendar::Settings::default();
    let ctx = Context {
        playbooks: &empty,
        broken: &[],
        templates,
        default_tz: chrono_tz::UTC,
        default_calendar: &none,
        crontabs,
        rules: &super::validate::RuleCache::default(),
    };
    for file in files {
        let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let text = match crate::files::read_text(&file, crate::files::MAX_PLAN_BYTES) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::whole_file(&file, format!("cannot read playbook: {e}")).hint(e.hint()));
                fall_back(name, &file, previous, &mut good, &mut kept, &mut broken);
                continue;
            }
        };
        let (playbook, mut found) = playbook_text(&file, &text, &ctx);
        match playbook {
            Some(p) => {
                good.insert(name, p);
            }
            None => fall_back(name, &file, previous, &mut good, &mut kept, &mut broken),
        }
        diags.append(&mut found);
    }
    (good, broken, count, kept)
}

/// Parses and validates one playbook's text (the file need not exist; used by fuzzing too).
/// `None` when it has an error.
pub fn playbook_text(file: &Path, text: &str, ctx: &Context) -> (Option<Playbook>, Vec<Diagnostic>) {
    let mut src = Src::new(file, text);
    let playbook = match lenient::playbook(text) {
        Err(errors) => {
            src.diags.extend(validate::toml_errors(file, text, &errors));
            None
        }
        Ok(read) => {
            src.problems(read.problems);
            src.unusable = read.unusable;
            let rules = validate::playbook(&mut src, &read.playbook, ctx);
            src.diags.iter().all(|d| !d.is_error()).then(|| Playbook { rules: rules.into() })
        }
    };
    (playbook, src.diags)
}

/// A broken playbook: serve its last good version when there is one, else mark it broken.
fn fall_back(
    name: String,
    file: &Path,
    previous: Option<&HashMap<String, Playbook>>,
    good: &mut HashMap<String, Playbook>,
    kept: &mut Vec<PathBuf>,
    broken: &mut Vec<String>,
) {
    match previous.and_then(|p| p.get(&name)) {
        Some(last_good) => {
            good.insert(name, last_good.clone());
            kept.push(file.to_path_buf());
        }
        None => broken.push(name),
    }
}

/// Parses and validates one plan file.
pub fn plan_file(file: &Path, ctx: &Context) -> (Option<Customer>, Vec<Diagnostic>) {
    match crate::files::read_text(file, crate::files::MAX_PLAN_BYTES) {
        Ok(text) => plan_text(file, &text, ctx),
        Err(e) => (None, vec![Diagnostic::whole_file(file, format!("cannot read plan: {e}")).hint(e.hint())]),
    }
}

/// Validates plan text (the file need not exist; used by fuzzing and tests too).
pub fn plan_text(file: &Path, text: &str, ctx: &Context) -> (Option<Customer>, Vec<Diagnostic>) {
    let mut src = Src::new(file, text);
    // The usual layout is read without the general TOML machinery; anything else (and every
    // syntax error) goes through the toml crate, key by key, so that every unknown, missing or
    // mistyped key of the file is reported together with the problems in the values.
    if let Some(raw) = fast_parse::plan(text) {
        let customer = validate::plan(&mut src, &raw, ctx);
        return (customer, src.diags);
    }
    let customer = match lenient::plan(text) {
        Err(errors) => {
            src.diags.extend(validate::toml_errors(file, text, &errors));
            None
        }
        Ok(read) => {
            src.problems(read.problems);
            src.complete = read.complete;
            src.unusable = read.unusable;
            validate::plan(&mut src, &read.plan, ctx)
        }
    };
    (customer, src.diags)
}

/// Loads everything. `progress` is called once per plan file (from worker threads).
pub fn load(sources: &Sources, progress: &(dyn Fn() + Sync)) -> Loaded {
    load_with_last_good(sources, None, None, progress)
}

/// [`load`] for a reload: a broken playbook keeps its version from `previous_playbooks`.
/// (Plans keep their last good version one level up, where the served plans are known.)
/// A customer that comes out of validation equal to the one `previous_plans` holds for the
/// same id and file is taken from there (shared), and the new copy is dropped at once: a full
/// reload that changes little holds the served plans once, not twice.
pub fn load_with_last_good(
    sources: &Sources,
    previous_playbooks: Option<&HashMap<String, Playbook>>,
    previous_plans: Option<&Plans>,
    progress: &(dyn Fn() + Sync),
) -> Loaded {
    let mut diagnostics = Vec::new();
    let crontabs = CrontabCache::default();
    let (playbooks, broken, playbook_files, kept_playbooks) = playbooks_with_last_good(
        sources.playbooks_dir,
        sources.templates,
        &crontabs,
        previous_playbooks,
        &mut diagnostics,
    );
    let files = match toml_files(sources.plans_dir) {
        Ok(f) => f,
        Err(e) => {
            diagnostics.push(dir_error(sources.plans_dir, &e));
            return Loaded {
                diagnostics,
                playbook_files,
                playbooks,
                kept_playbooks,
                plans_dir_unreadable: true,
                broken_playbooks: broken,
                ..Default::default()
            };
        }
    };
    let ctx = Context {
        playbooks: &playbooks,
        broken: &broken,
        templates: sources.templates,
        default_tz: sources.default_timezone,
        default_calendar: sources.default_calendar,
        crontabs: &crontabs,
        rules: &super::validate::RuleCache::default(),
    };
    let results: Vec<(Option<Arc<Customer>>, Vec<Diagnostic>)> = files
        .par_iter()
        .map(|f| {
            let (customer, diags) = plan_file(f, &ctx);
            progress();
            (customer.map(|c| share_unchanged(c, previous_plans)), diags)
        })
        .collect();

    let (winners, duplicates) = resolve_duplicates(results.into_iter().filter_map(|(customer, mut diags)| {
        diagnostics.append(&mut diags);
        customer
    }));
    let plans = Plans::shared(winners);
    diagnostics.extend(duplicate_diagnostics(&plans, &duplicates));
    diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    Loaded {
        plans,
        diagnostics,
        plan_files: files.len(),
        playbook_files,
        playbooks,
        kept_playbooks,
        plans_dir_unreadable: false,
        broken_playbooks: broken,
        duplicates,
    }
}

/// `fresh`, or the customer `previous` holds for its id when that came from the same file
/// and is equal (validated against the same playbooks and templates, it usually is). Else
/// each part that is equal is taken from there: the profile (a playbook edit changes only the
/// rules), or at least the contacts; and the rule list (an edit of the customer's own keys).
pub fn share_unchanged(mut fresh: Customer, previous: Option<&Plans>) -> Arc<Customer> {
    let Some(old) = previous.and_then(|p| p.get_shared(&fresh.id)) else { return Arc::new(fresh) };
    if old.source == fresh.source && **old == fresh {
        return old.clone();
    }
    if old.profile == fresh.profile {
        fresh.profile = old.profile.clone();
    } else if old.contacts == fresh.contacts
        && let Some(profile) = Arc::get_mut(&mut fresh.profile)
    {
        profile.contacts = old.contacts.clone();
    }
    if old.rules == fresh.rules {
        fresh.rules = old.rules.clone();
    }
    Arc::new(fresh)
}

/// A customer id defined by several files: the file whose path sorts first keeps it (the
/// same whatever order the directory lists them in). Returns the winners (sorted by id) and
/// the others. Sorting finds the duplicates without a map of 100,000 ids beside the plans.
pub fn resolve_duplicates(customers: impl Iterator<Item = Arc<Customer>>) -> (Vec<Arc<Customer>>, Vec<Arc<Customer>>) {
    let mut all: Vec<Arc<Customer>> = customers.collect();
    all.sort_unstable_by(|a, b| a.id.cmp(&b.id).then_with(|| a.source.cmp(&b.source)));
    let mut duplicates = Vec::new();
    let mut winners: Vec<Arc<Customer>> = Vec::with_capacity(all.len());
    for c in all {
        match winners.last() {
            Some(w) if w.id == c.id => duplicates.push(c),
            _ => winners.push(c),
        }
    }
    (winners, duplicates)
}

/// One diagnostic per customer left out for a duplicate id, naming the file that keeps it.
pub fn duplicate_diagnostics(plans: &Plans, duplicates: &[Arc<Customer>]) -> Vec<Diagnostic> {
    duplicates
        .iter()
        .map(|d| {
            let kept = plans.get(&d.id).map(|c| c.source.display().to_string()).unwrap_or_default();
            Diagnostic::whole_file(&d.source, format!("customer id `{}` is also used by {kept}", d.id))
                .hint("customer ids must be unique across plan files; this file is ignored until fixed")
        })
        .collect()
}
