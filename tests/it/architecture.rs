//! The architecture as a test: no import cycles between the crate's modules (top level) or
//! between sibling files of a module directory, and the pure core never imports an edge
//! module nor does I/O. Reads the source files as text (no parser needed: `crate::`, `super::`
//! and `use` groups are all it looks at), so a new arrow fails here before it knots anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The pure core, each with the core modules it may use (the layering: no arrow goes up).
const CORE: [(&str, &[&str]); 12] = [
    ("hash", &[]),
    ("money", &[]),
    ("files", &[]),
    ("clock", &[]),
    ("diagnostics", &[]),
    ("calendar", &[]),
    ("plan", &["calendar", "diagnostics", "files", "money"]),
    ("occasion", &["plan", "calendar", "hash"]),
    ("orders", &["plan", "occasion", "money", "diagnostics"]),
    ("events", &["plan", "hash", "calendar"]),
    ("handover", &["plan", "occasion", "orders", "money", "events"]),
    ("render", &["plan", "occasion", "orders", "handover", "events", "money", "calendar", "diagnostics", "files"]),
];

/// Core files that may do I/O: reading plan and template files (bounded, through `files.rs`),
/// and the wall clock.
const CORE_IO_ALLOWED: [&str; 5] =
    ["src/files.rs", "src/plan/load.rs", "src/render/catalog.rs", "src/render/mod.rs", "src/clock.rs"];

/// What core code must not touch (outside `CORE_IO_ALLOWED` and `#[cfg(test)]` modules).
const IO_MARKERS: [&str; 8] =
    ["std::fs", "tokio::", "sqlx::", "lettre::", "Utc::now", "std::env", "std::net", "std::process::Command"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/a.rs` → [a], `src/a/mod.rs` → [a], `src/a/b.rs` → [a, b].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a file without comments, string literals and `#[cfg(test)]` modules.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '\'' => {
                // A char literal ('"', '\'', 'x') is skipped; a lifetime ('a) is kept.
                let ahead: Vec<char> = chars.clone().take(3).collect();
                match ahead.as_slice() {
                    ['\\', ..] => {
                        chars.next();
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                    }
                    [_, '\'', ..] => {
                        chars.next();
                        chars.next();
                    }
                    _ => out.push(c),
                }
            }
            'r' if chars.peek() == Some(&'#') => {
                // A raw string r#"…"#.
                chars.next();
                if chars.peek() == Some(&'"') {
                    chars.next();
                    let mut last = ' ';
                    for c in chars.by_ref() {
                        if last == '"' && c == '#' {
                            break;
                        }
                        last = c;
                    }
                    out.push_str("\"\"");
                } else {
                    out.push_str("r#");
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    // A test module is the rest of the file (`#[cfg(test)]`, maybe more attributes, `mod`).
    let mut from = 0;
    while let Some(i) = out[from..].find("#[cfg(test)]") {
        let at = from + i;
        let after = out[at + "#[cfg(test)]".len()..].trim_start();
        let after = after.lines().skip_while(|l| l.trim_start().starts_with("#[")).collect::<Vec<_>>();
        if after.first().is_some_and(|l| l.trim_start().starts_with("mod ")) {
            return out[..at].to_string();
        }
        from = at + 1;
    }
    out
}

/// Every module path a file refers to, resolved to absolute paths (`crate::a::b` → [a, b];
/// `super::x` from module [p, q] → [p, x]; groups `use crate::{a, b::c}` expand).
fn references(module: &[String], is_mod_rs: bool, code: &str) -> Vec<Vec<String>> {
    // The module `super` refers to: the parent of the file's module (for mod.rs, the parent
    // of the directory's module).
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    let _ = is_mod_rs;
    let mut refs = Vec::new();
    let bytes = code.as_bytes();
    for (root, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
        let mut from = 0;
        while let Some(i) = code[from..].find(root) {
            let at = from + i;
            from = at + root.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                continue;
            }
            for path in expand(&code[from..]) {
                let mut full = base.clone();
                full.extend(path);
                refs.push(full);
            }
        }
    }
    refs
}

/// The paths at the start of `rest` (after `crate::`): `a::b::C` → [[a, b, C]];
/// `{a, b::{c, d}}` → [[a], [b, c], [b, d]].
fn expand(rest: &str) -> Vec<Vec<String>> {
    let rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut end = inner.len();
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        return split_top(&inner[..end]).into_iter().flat_map(expand).collect();
    }
    let ident: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    if ident.is_empty() || ident == "self" {
        return vec![vec![]];
    }
    let after = &rest[ident.len()..];
    match after.strip_prefix("::") {
        Some(more) => expand(more)
            .into_iter()
            .map(|mut p| {
                p.insert(0, ident.clone());
                p
            })
            .collect(),
        None => vec![vec![ident]],
    }
}

fn split_top(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

/// A cycle in `graph`, if any (as the list of nodes around it).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| s == m).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

struct Crate {
    /// File → (module path, code).
    files: Vec<(PathBuf, Vec<String>, String)>,
}

fn load() -> Crate {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths.sort();
    let files = paths
        .into_iter()
        .map(|p| {
            let module = module_of(&src, &p);
            let code = code_only(&std::fs::read_to_string(&p).unwrap());
            (p.strip_prefix(root).unwrap().to_path_buf(), module, code)
        })
        .collect();
    Crate { files }
}

impl Crate {
    /// Every (file, its module, a module path it refers to).
    fn arrows(&self) -> Vec<(&Path, &[String], Vec<String>)> {
        let mut out = Vec::new();
        for (file, module, code) in &self.files {
            let is_mod = file.file_name().is_some_and(|n| n == "mod.rs");
            for r in references(module, is_mod, code) {
                out.push((file.as_path(), module.as_slice(), r));
            }
        }
        out
    }

    fn top_modules(&self) -> BTreeSet<String> {
        self.files.iter().filter_map(|(_, m, _)| m.first().cloned()).collect()
    }
}

#[test]
fn no_import_cycles_between_top_level_modules() {
    let krate = load();
    let tops = krate.top_modules();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, module, target) in krate.arrows() {
        let (Some(from), Some(to)) = (module.first(), target.first()) else { continue };
        if from != to && tops.contains(to) {
            graph.entry(from.clone()).or_default().insert(to.clone());
        }
    }
    assert!(graph.len() > 10, "the scan found the modules: {graph:?}");
    assert_eq!(find_cycle(&graph), None, "an import cycle between top-level modules");
}

#[test]
fn no_import_cycles_between_sibling_files() {
    let krate = load();
    // Directory module → its child modules (files or directories).
    let mut children: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for (_, module, _) in &krate.files {
        if module.len() >= 2 {
            children.entry(module[..module.len() - 1].to_vec()).or_default().insert(module[module.len() - 1].clone());
        }
    }
    let mut checked = 0;
    for (dir, kids) in &children {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, module, target) in krate.arrows() {
            if module.len() <= dir.len() || module[..dir.len()] != dir[..] || target.len() <= dir.len() {
                continue;
            }
            if target[..dir.len()] != dir[..] {
                continue;
            }
            let (from, to) = (&module[dir.len()], &target[dir.len()]);
            if from != to && kids.contains(to) {
                graph.entry(from.clone()).or_default().insert(to.clone());
            }
        }
        checked += 1;
        assert_eq!(find_cycle(&graph), None, "an import cycle between the files of `{}`", dir.join("::"));
    }
    assert!(checked >= 6, "directory modules checked: {checked}");
}

#[test]
fn the_core_never_imports_an_edge_module_and_does_no_io() {
    let krate = load();
    let tops = krate.top_modules();
    let core: BTreeMap<&str, &[&str]> = CORE.iter().copied().collect();
    let mut wrong = Vec::new();
    for (file, module, target) in krate.arrows() {
        let (Some(from), Some(to)) = (module.first(), target.first()) else { continue };
        let Some(allowed) = core.get(from.as_str()) else { continue };
        if from != to && tops.contains(to) && !allowed.contains(&to.as_str()) {
            wrong.push(format!("{}: {from} → {to}", file.display()));
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "core modules import modules above them or edge modules:\n{}", wrong.join("\n"));

    let mut io = Vec::new();
    for (file, module, code) in &krate.files {
        let in_core = module.first().is_some_and(|m| core.contains_key(m.as_str()));
        if !in_core || CORE_IO_ALLOWED.iter().any(|f| file == Path::new(f)) {
            continue;
        }
        for marker in IO_MARKERS {
            if code.contains(marker) {
                io.push(format!("{}: {marker}", file.display()));
            }
        }
    }
    assert!(io.is_empty(), "I/O in the pure core:\n{}", io.join("\n"));
}

#[test]
fn the_scanner_sees_groups_nested_paths_and_super() {
    let refs = references(
        &["plan".into(), "load".into()],
        false,
        "use crate::{render::TemplateCatalog, calendar::{Settings, business::Window}};\nuse super::raw::RawPlan;\nlet x = crate::hash::Fnv1a::default();",
    );
    let flat: Vec<String> = refs.iter().map(|r| r.join("::")).collect();
    assert_eq!(
        flat,
        [
            "render::TemplateCatalog",
            "calendar::Settings",
            "calendar::business::Window",
            "hash::Fnv1a::default",
            "plan::raw::RawPlan"
        ]
    );
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(find_cycle(&graph).is_some(), "a cycle is found");
}
