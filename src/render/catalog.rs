//! Which templates exist: `templates/<name>/<variant>/` with the three files of a message, and
//! per-customer overrides in the plans directory, `plans/<customer id>/<name>/<variant>/`.
//!
//! The lookup for one message is a fallback chain, most specific first:
//! 1. the customer's override: `<lang>-<tone>`, then `<lang>`, then `default`;
//! 2. the shared templates: `<lang>-<tone>`, then `<lang>`, then `default`.
//!
//! Emails to contacts look for `<lang>-<tone>` first; tasks and emails to the salesperson have
//! no tone and start at `<lang>`. A variant that lacks one of its three files is reported and
//! not offered.

use crate::diagnostics::Diagnostic;
use crate::plan::{Language, Tone};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The three files every variant must have.
pub const PARTS: [&str; 3] = ["subject.txt.j2", "body.txt.j2", "body.html.j2"];

/// The last link of every chain: a variant for any language and tone.
pub const DEFAULT_VARIANT: &str = "default";

/// `<lang>-<tone>` without allocating.
pub fn variant_name(language: Language, tone: Tone) -> &'static str {
    match (language, tone) {
        (Language::De, Tone::Formal) => "de-formal",
        (Language::De, Tone::Informal) => "de-informal",
        (Language::En, Tone::Formal) => "en-formal",
        (Language::En, Tone::Informal) => "en-informal",
    }
}

/// Template name → complete variants, of one directory tree.
type Tree = BTreeMap<String, BTreeSet<String>>;

/// The templates directory and the customers' overrides, as scanned.
#[derive(Debug, Clone, Default)]
pub struct TemplateCatalog {
    /// Where the shared templates live, for messages.
    dir: PathBuf,
    /// Shared templates: name → variants that have all three parts.
    templates: Tree,
    /// The plans directory, where overrides live (`None`: no overrides scanned).
    overrides_dir: Option<PathBuf>,
    /// Customer id → its own templates.
    overrides: BTreeMap<String, Tree>,
}

/// Scans one tree (`<name>/<variant>/<part>`); an incomplete variant is reported and left out.
fn scan_tree(dir: &Path, diags: &mut Vec<Diagnostic>) -> Tree {
    let mut templates = Tree::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return templates };
    for entry in entries.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let mut variants = BTreeSet::new();
        for v in
            std::fs::read_dir(entry.path()).into_iter().flatten().filter_map(Result::ok).filter(|e| e.path().is_dir())
        {
            let variant = v.file_name().to_string_lossy().into_owned();
            let missing: Vec<&str> = PARTS.iter().copied().filter(|p| !v.path().join(p).is_file()).collect();
            if missing.is_empty() {
                variants.insert(variant);
            } else {
                diags.push(
                    Diagnostic::whole_file(&v.path(), format!("template variant is missing {}", missing.join(", ")))
                        .hint("each variant folder needs subject.txt.j2, body.txt.j2 and body.html.j2"),
                );
            }
        }
        templates.insert(name, variants);
    }
    templates
}

impl TemplateCatalog {
    /// Scans `dir` (no overrides); an incomplete variant is reported and left out.
    pub fn scan(dir: &Path) -> (TemplateCatalog, Vec<Diagnostic>) {
        Self::scan_with_overrides(dir, None)
    }

    /// Scans `dir` and, with `plans_dir`, the customers' overrides in it (each directory there
    /// is named by a customer id and laid out like `dir`).
    pub fn scan_with_overrides(dir: &Path, plans_dir: Option<&Path>) -> (TemplateCatalog, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        if let Err(e) = std::fs::read_dir(dir) {
            diags.push(
                Diagnostic::whole_file(dir, format!("cannot read templates directory: {e}"))
                    .hint("check `templates` in the config file"),
            );
        }
        let templates = scan_tree(dir, &mut diags);
        let mut overrides = BTreeMap::new();
        if let Some(plans) = plans_dir
            && let Ok(entries) = std::fs::read_dir(plans)
        {
            for entry in entries.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
                let customer = entry.file_name().to_string_lossy().into_owned();
                if !customer.starts_with('.') {
                    overrides.insert(customer, scan_tree(&entry.path(), &mut diags));
                }
            }
        }
        let catalog = TemplateCatalog {
            dir: dir.to_path_buf(),
            templates,
            overrides_dir: plans_dir.map(Path::to_path_buf),
            overrides,
        };
        (catalog, diags)
    }

    /// The templates directory that was scanned.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a shared template folder of that name exists.
    pub fn has_template(&self, name: &str) -> bool {
        self.templates.contains_key(name)
    }

    /// Every shared template name, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.templates.keys().map(String::as_str).collect()
    }

    /// The variant to use for `customer`, as its key (`birthday/de-formal`, or
    /// `@acme/birthday/de` for an override): the first of the fallback chain that exists.
    pub fn resolve(&self, customer: &str, name: &str, language: Language, tone: Option<Tone>) -> Option<String> {
        let chain = || tone.map(|t| variant_name(language, t)).into_iter().chain([language.code(), DEFAULT_VARIANT]);
        let own = self.overrides.get(customer).and_then(|t| t.get(name));
        if let Some(variants) = own
            && let Some(v) = chain().find(|v| variants.contains(*v))
        {
            return Some(format!("@{customer}/{name}/{v}"));
        }
        let variants = self.templates.get(name)?;
        chain().find(|v| variants.contains(*v)).map(|v| format!("{name}/{v}"))
    }

    /// The folder of a variant key (see [`TemplateCatalog::resolve`]).
    pub fn folder(&self, key: &str) -> PathBuf {
        match key.strip_prefix('@').and_then(|k| k.split_once('/')) {
            Some((customer, rest)) => self.overrides_dir.as_deref().unwrap_or(Path::new(".")).join(customer).join(rest),
            None => self.dir.join(key),
        }
    }

    /// Withdraws a variant by key (one of its files does not compile).
    pub fn remove(&mut self, key: &str) {
        let (tree, rest) = match key.strip_prefix('@').and_then(|k| k.split_once('/')) {
            Some((customer, rest)) => (self.overrides.get_mut(customer), rest),
            None => (Some(&mut self.templates), key),
        };
        if let (Some(tree), Some((name, variant))) = (tree, rest.split_once('/'))
            && let Some(v) = tree.get_mut(name)
        {
            v.remove(variant);
        }
    }

    /// Every variant key (shared ones first, then each customer's), sorted.
    pub fn all(&self) -> Vec<String> {
        let keys = |tree: &Tree, prefix: &str| -> Vec<String> {
            tree.iter().flat_map(|(n, vs)| vs.iter().map(move |v| format!("{prefix}{n}/{v}"))).collect()
        };
        let mut out = keys(&self.templates, "");
        for (customer, tree) in &self.overrides {
            out.extend(keys(tree, &format!("@{customer}/")));
        }
        out
    }

    /// Customers that have overrides, for `check` (an override for an id no plan has).
    pub fn override_customers(&self) -> impl Iterator<Item = &str> {
        self.overrides.keys().map(String::as_str)
    }
}

impl crate::plan::Templates for TemplateCatalog {
    fn dir(&self) -> &Path {
        TemplateCatalog::dir(self)
    }
    fn has_template(&self, name: &str) -> bool {
        TemplateCatalog::has_template(self, name)
    }
    fn names(&self) -> Vec<&str> {
        TemplateCatalog::names(self)
    }
    fn has_variant(&self, customer: &str, name: &str, language: Language, tone: Option<Tone>) -> bool {
        self.resolve(customer, name, language, tone).is_some()
    }
}
