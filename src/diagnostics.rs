//! Problems found in ops-edited files, reported like a compiler does: file, line, column,
//! the offending value and a hint. Pure: turning a byte span into a line needs only the text.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// How bad a finding is; only errors make `check` fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Makes `check` fail; what it is in (a plan, a playbook, a template variant) is not
    /// served, or its last good version is.
    Error,
    /// Reported only; the file is served as it is (e.g. a key that crontab rules ignore).
    Warning,
}

/// One problem in one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column (in characters); 0 when the problem concerns the whole file.
    pub column: usize,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The offending text as written, when there is one.
    pub value: Option<String>,
    /// How to fix it.
    pub hint: Option<String>,
    /// The source line the problem is on, for the caret display.
    #[serde(skip)]
    pub source_line: Option<String>,
    /// Width of the caret underline in characters.
    #[serde(skip)]
    pub width: usize,
}

impl Diagnostic {
    /// A problem located by a byte span into `source`.
    pub fn at(file: &Path, source: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let mut d = Self::whole_file(file, message);
        if let Some(span) = span {
            // A span that is not on character boundaries (or out of range) is narrowed onto them
            // rather than trusted: slicing must never panic.
            let start = floor_char_boundary(source, span.start.min(source.len()));
            let end = floor_char_boundary(source, span.end.clamp(start, source.len()));
            let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = source[start..].find('\n').map_or(source.len(), |i| start + i);
            d.line = source[..start].matches('\n').count() + 1;
            d.column = source[line_start..start].chars().count() + 1;
            let text = &source[start..end.min(line_end).max(start)];
            d.width = text.chars().count().max(1);
            d.source_line = Some(source[line_start..line_end].trim_end_matches('\r').to_string());
            let value = source[start..end].trim();
            if !value.is_empty() && value.len() <= 200 {
                d.value = Some(value.to_string());
            }
        }
        d
    }

    /// A problem with no position (unreadable file, missing directory).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
            value: None,
            hint: None,
            source_line: None,
            width: 0,
        }
    }

    /// Adds how to fix it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Makes it a warning.
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    /// Whether it is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col` as editors and terminals understand it.
    pub fn location(&self) -> String {
        if self.line == 0 {
            self.file.display().to_string()
        } else {
            format!("{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

/// The largest index ≤ `i` that is a character boundary of `s`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `s` with every control character but tab written as a visible escape (`\u{1b}`), so plan
/// data can never move a terminal's cursor, colour it or start a new line in a report.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| if c.is_control() && c != '\t' { c.escape_unicode().to_string() } else { c.to_string() })
            .collect(),
    )
}

/// A source line for the caret display: each control character (but tab) becomes one `�`, so
/// columns still line up with the caret.
fn visible_line(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(s.chars().map(|c| if c.is_control() && c != '\t' { '\u{fffd}' } else { c }).collect())
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{label}: {}", escape_controls(&self.message))?;
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        writeln!(f, "{pad}--> {}", escape_controls(&self.location()))?;
        if let Some(src) = &self.source_line {
            writeln!(f, "{pad} |")?;
            writeln!(f, "{num} | {}", visible_line(src))?;
            writeln!(f, "{pad} | {}{}", " ".repeat(self.column.saturating_sub(1)), "^".repeat(self.width.max(1)))?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "{pad} = hint: {}", escape_controls(hint))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_from_plan_data_are_shown_escaped() {
        let text = "name = \"Eve\u{1b}[31mRed\u{7}\"\n";
        let d =
            Diagnostic::at(Path::new("p\u{1b}.toml"), text, Some(7..21), "bad name `Eve\u{1b}[31m`").hint("x\u{0}y");
        let shown = d.to_string();
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown:?}");
        assert!(shown.contains("bad name `Eve\\u{1b}[31m`") && shown.contains("x\\u{0}y"), "{shown}");
        assert!(shown.contains("name = \"Eve\u{fffd}[31mRed\u{fffd}\""), "columns kept: {shown}");
    }

    #[test]
    fn a_span_off_character_boundaries_is_narrowed_not_a_panic() {
        let text = "name = \"Zoë\"\nx = 1\n";
        // Byte 11 is inside the two-byte "ë".
        let d = Diagnostic::at(Path::new("p.toml"), text, Some(11..40), "bad");
        assert_eq!((d.line, d.column), (1, 11));
        let _ = d.to_string();
        let d = Diagnostic::at(Path::new("p.toml"), text, Some(100..200), "past the end");
        let _ = d.to_string();
    }
}
