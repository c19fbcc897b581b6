//! Which templates exist: `templates/<name>/<variant>/` with the three files of a message.
//! Variants are `<lang>-<tone>` (emails to contacts) or `<lang>` (tone-neutral, tasks).

use crate::diagnostics::Diagnostic;
use crate::plan::{Language, Tone};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The three files every variant must have.
pub const PARTS: [&str; 3] = ["subject.txt.j2", "body.txt.j2", "body.html.j2"];

/// `<lang>-<tone>` without allocating.
pub fn variant_name(language: Language, tone: Tone) -> &'static str {
    match (language, tone) {
        (Language::De, Tone::Formal) => "de-formal",
        (Language::De, Tone::Informal) => "de-informal",
        (Language::En, Tone::Formal) => "en-formal",
        (Language::En, Tone::Informal) => "en-informal",
    }
}

/// The templates directory as scanned: template name → complete variants.
#[derive(Debug, Clone, Default)]
pub struct TemplateCatalog {
    /// Where the templates live, for messages.
    dir: PathBuf,
    /// name → variants that have all three parts.
    templates: BTreeMap<String, BTreeSet<String>>,
}

impl TemplateCatalog {
    /// Scans `dir`; an incomplete variant is reported and left out.
    pub fn scan(dir: &Path) -> (TemplateCatalog, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        let mut templates = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                diags.push(
                    Diagnostic::whole_file(dir, format!("cannot read templates directory: {e}"))
                        .hint("check `templates` in the config file"),
                );
                return (TemplateCatalog { dir: dir.to_path_buf(), templates }, diags);
            }
        };
        for entry in entries.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut variants = BTreeSet::new();
            for v in std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
            {
                let variant = v.file_name().to_string_lossy().into_owned();
                let missing: Vec<&str> = PARTS.iter().copied().filter(|p| !v.path().join(p).is_file()).collect();
                if missing.is_empty() {
                    variants.insert(variant);
                } else {
                    diags.push(
                        Diagnostic::whole_file(
                            &v.path(),
                            format!("template variant is missing {}", missing.join(", ")),
                        )
                        .hint("each variant folder needs subject.txt.j2, body.txt.j2 and body.html.j2"),
                    );
                }
            }
            templates.insert(name, variants);
        }
        (TemplateCatalog { dir: dir.to_path_buf(), templates }, diags)
    }

    /// The templates directory that was scanned.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a template folder of that name has at least one complete variant.
    pub fn has_template(&self, name: &str) -> bool {
        self.templates.contains_key(name)
    }

    /// Every template name with a complete variant, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.templates.keys().map(String::as_str).collect()
    }

    /// The variant to use: `<lang>-<tone>`, else `<lang>`.
    pub fn resolve(&self, name: &str, language: Language, tone: Option<Tone>) -> Option<String> {
        let variants = self.templates.get(name)?;
        let specific = tone.map(|t| variant_name(language, t));
        specific.into_iter().chain([language.code()]).find(|v| variants.contains(*v)).map(str::to_string)
    }

    /// Withdraws a variant (one of its files does not compile).
    pub fn remove(&mut self, name: &str, variant: &str) {
        if let Some(v) = self.templates.get_mut(name) {
            v.remove(variant);
        }
    }

    /// Every (name, variant) pair.
    pub fn all(&self) -> impl Iterator<Item = (&str, &str)> {
        self.templates.iter().flat_map(|(n, vs)| vs.iter().map(move |v| (n.as_str(), v.as_str())))
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
    fn has_variant(&self, _customer: &str, name: &str, language: Language, tone: Option<Tone>) -> bool {
        self.resolve(name, language, tone).is_some()
    }
}
