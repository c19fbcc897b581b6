//! The vocabulary shared by the raw shapes (`raw.rs`) and the fast plan reader
//! (`fast_parse.rs`): a value as written ([`Val`]), one `key = value` line ([`Entry`]), how a
//! Rust type is made from a value ([`FromVal`]), a table read key by key by the general path
//! (`lenient.rs`: [`FromTable`], [`Problem`]), and `raw_table!`, which declares a raw table's
//! serde shape together with its [`FromEntries`] and [`FromTable`] impls so the paths never
//! disagree about the keys.

use serde_spanned::Spanned;
use std::ops::Range;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// A scalar or array value as written, with no type decided yet.
#[derive(Debug)]
pub enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Datetime(toml::value::Datetime),
    /// Elements with their spans (only scalars; nested arrays give up).
    Array(Vec<(Range<usize>, Val<'a>)>),
}

/// One `key = value` line of a table.
#[derive(Debug)]
pub struct Entry<'a> {
    pub key: &'a str,
    pub span: Range<usize>,
    pub val: Val<'a>,
}

/// A Rust type a value can become, exactly as serde-through-`toml` would produce it.
pub trait FromVal: Sized {
    fn from_val(span: &Range<usize>, val: &Val) -> Option<Self>;
    /// The value when the key is absent: only `Option` fields may be absent.
    fn absent() -> Option<Self> {
        None
    }
}

impl<T: FromVal> FromVal for Option<T> {
    fn from_val(span: &Range<usize>, val: &Val) -> Option<Self> {
        T::from_val(span, val).map(Some)
    }
    fn absent() -> Option<Self> {
        Some(None)
    }
}

impl<T: FromVal> FromVal for Spanned<T> {
    fn from_val(span: &Range<usize>, val: &Val) -> Option<Self> {
        T::from_val(span, val).map(|v| Spanned::new(span.clone(), v))
    }
}

impl FromVal for String {
    fn from_val(_: &Range<usize>, val: &Val) -> Option<Self> {
        match val {
            Val::Str(s) => Some((*s).to_owned()),
            _ => None,
        }
    }
}

impl FromVal for bool {
    fn from_val(_: &Range<usize>, val: &Val) -> Option<Self> {
        match val {
            Val::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl FromVal for u32 {
    fn from_val(_: &Range<usize>, val: &Val) -> Option<Self> {
        match val {
            Val::Int(i) => u32::try_from(*i).ok(),
            _ => None,
        }
    }
}

impl FromVal for u64 {
    fn from_val(_: &Range<usize>, val: &Val) -> Option<Self> {
        match val {
            Val::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
}

impl FromVal for i64 {
    fn from_val(_: &Range<usize>, val: &Val) -> Option<Self> {
        match val {
            Val::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl<T: FromVal> FromVal for Vec<T> {
    fn from_val(_: &Range<usize>, val: &Val) -> Option<Self> {
        match val {
            Val::Array(items) => items.iter().map(|(span, v)| T::from_val(span, v)).collect(),
            _ => None,
        }
    }
}

impl FromVal for toml::Value {
    fn from_val(_: &Range<usize>, val: &Val) -> Option<Self> {
        Some(match val {
            Val::Str(s) => toml::Value::String((*s).to_owned()),
            Val::Int(i) => toml::Value::Integer(*i),
            Val::Bool(b) => toml::Value::Boolean(*b),
            Val::Datetime(d) => toml::Value::Datetime(*d),
            Val::Array(_) => return None,
        })
    }
}

/// A table type built from its entries; implemented by `raw_table!` next to the serde shape.
pub trait FromEntries: Sized {
    fn from_entries(entries: &[Entry]) -> Option<Self>;
}

/// One problem in the shape of a file (a key or a type), with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Byte span of the key or value; `None` for the whole file.
    pub span: Option<Range<usize>>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// What a field of a table read key by key holds when its key is absent or unusable.
pub trait Absent: Sized {
    /// The value when the key is absent: only `Option` fields may be absent.
    fn absent() -> Option<Self>;
    /// A stand-in for a required key that is missing or has the wrong type. Its table is then
    /// never used, only checked: the stand-in lets the table's other keys be checked too.
    fn stand_in(table: &Range<usize>) -> Self;
}

impl<T> Absent for Option<T> {
    fn absent() -> Option<Self> {
        Some(None)
    }
    fn stand_in(_: &Range<usize>) -> Self {
        None
    }
}

impl Absent for Spanned<String> {
    fn absent() -> Option<Self> {
        None
    }
    fn stand_in(table: &Range<usize>) -> Self {
        Spanned::new(table.clone(), String::new())
    }
}

impl Absent for Spanned<toml::Value> {
    fn absent() -> Option<Self> {
        None
    }
    fn stand_in(table: &Range<usize>) -> Self {
        Spanned::new(table.clone(), toml::Value::String(String::new()))
    }
}

/// A raw table read key by key; implemented by `raw_table!`.
pub trait FromTable: Sized {
    /// The keys of the table, in declaration order.
    const KEYS: &'static [&'static str];
    /// Reads the table: every unknown key, missing key and wrong type goes to `problems`.
    /// Returns the table and its unusable keys: missing (required), of the wrong type, or
    /// absent but probably written under a misspelt name (the did-you-mean of an unknown key).
    /// Such a key holds a stand-in (required) or `None` (optional), so the table's other keys
    /// can still be checked, but a table with one is never used.
    fn from_table(
        table: &DeTable<'_>,
        span: &Range<usize>,
        what: &str,
        problems: &mut Vec<Problem>,
    ) -> (Self, Vec<&'static str>);
    /// A stand-in for a table that is missing or is not a table (its absence is reported by
    /// the caller): every key absent, the required ones listed as unusable.
    fn stand_in(span: &Range<usize>) -> (Self, Vec<&'static str>);
}

/// The keys of tables (by the table's span) that are missing (required) or have the wrong
/// type: the checks of those keys, and of anything that needs them, are skipped, because the
/// problem was reported already.
#[derive(Debug, Default, Clone)]
pub struct Unusable(Vec<(Range<usize>, Vec<&'static str>)>);

impl Unusable {
    /// Records the unusable keys of the table at `span` (nothing when there are none).
    pub fn add(&mut self, span: &Range<usize>, keys: Vec<&'static str>) {
        if !keys.is_empty() {
            self.0.push((span.clone(), keys));
        }
    }

    /// Whether `key` of the table at `span` is unusable.
    pub fn has(&self, span: &Range<usize>, key: &str) -> bool {
        self.0.iter().any(|(s, keys)| s == span && keys.contains(&key))
    }
}

/// One value, exactly as serde through `toml` makes it.
///
/// # Errors
/// The value has another type (the `toml` crate's wording and span).
pub fn field<T: serde::de::DeserializeOwned>(value: &Spanned<DeValue<'_>>) -> Result<T, Problem> {
    let mut owned = value.clone();
    owned.get_mut().make_owned();
    T::deserialize(ValueDeserializer::from(owned)).map_err(|e| {
        let message = e.message().trim().to_string();
        let (message, hint) = if message.starts_with("unknown variant") {
            (message, "use one of the values listed")
        } else if message.starts_with("invalid value") {
            (message, "the number is out of range for this key")
        } else if let Some(plain) = type_problem(&message) {
            plain
        } else {
            (message, "check the value's type: strings need quotes; numbers, booleans and dates (2016-03-01) do not")
        };
        Problem { span: e.span().or_else(|| Some(value.span())), message, hint: hint.into() }
    })
}

/// serde's "invalid type: string \"5\", expected i64" in the words of a TOML file ("expected a
/// whole number, found the string \"5\"") with a hint for that case (numbers without quotes,
/// strings in quotes); `None` for another message.
pub fn type_problem(message: &str) -> Option<(String, &'static str)> {
    let rest = message.strip_prefix("invalid type: ")?;
    let (found, expected) = rest.rsplit_once(", expected ")?;
    let number = |t: &str| {
        matches!(t, "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "isize")
    };
    let expected_words = match expected {
        t if number(t) => "a whole number".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => "a table".to_string(),
        t if t.starts_with("struct ") => "a table".to_string(),
        t => t.to_string(),
    };
    let literal = |s: &str| s.trim_matches('`').to_string();
    let (found_words, found_kind) = if let Some(v) = found.strip_prefix("string ") {
        (format!("the string {v}"), "string")
    } else if let Some(v) = found.strip_prefix("integer ") {
        (format!("the number {}", literal(v.split(" as ").next().unwrap_or(v))), "number")
    } else if let Some(v) = found.strip_prefix("floating point ") {
        (format!("the number {}", literal(v)), "number")
    } else if let Some(v) = found.strip_prefix("boolean ") {
        (literal(v), "boolean")
    } else if found == "sequence" {
        ("an array".to_string(), "array")
    } else if found == "map" {
        ("a table".to_string(), "table")
    } else {
        (found.to_string(), "")
    };
    let hint = match (expected_words.as_str(), found_kind) {
        ("a whole number", "string") => "write the number without quotes, e.g. max_per_hour = 5",
        ("a whole number", "number") => "the number is out of range for this key (README gives each key's range)",
        ("a string", _) => "put the value in quotes, e.g. template = \"birthday\"",
        ("an array", _) => "write a list in brackets, e.g. [\"sat\", \"sun\"] (one value too: [\"sat\"])",
        ("a boolean", _) => "write true or false, without quotes",
        _ => "check the value's type: strings need quotes; numbers, booleans and dates (2016-03-01) do not",
    };
    Some((format!("expected {expected_words}, found {found_words}"), hint))
}

/// A TOML type's name with its article, as in "not a string", "not an array".
pub fn type_with_article(value: &DeValue<'_>) -> String {
    let name = value.type_str();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {name}")
}

/// The closest known key to a misspelt one, if any is close.
pub fn closest<'k>(key: &str, keys: &[&'k str]) -> Option<&'k str> {
    keys.iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// An unknown key of table `what`; `section` names the README section that lists the keys.
pub fn unknown(key: &Spanned<std::borrow::Cow<'_, str>>, what: &str, keys: &[&str], section: &str) -> Problem {
    let name = key.get_ref();
    let known = keys.join(", ");
    // Keys are compared without the brackets of table names (`sender` → `[sender]`).
    let bare: Vec<&str> = keys.iter().map(|k| k.trim_matches(|c| c == '[' || c == ']')).collect();
    let hint = match closest(name, &bare).and_then(|b| bare.iter().position(|k| *k == b)).map(|i| keys[i]) {
        Some(k) => format!("did you mean `{k}`? The keys of {what} are: {known} (README, \"{section}\")"),
        None => {
            format!("remove the key or fix its spelling; the keys of {what} are: {known} (README, \"{section}\")")
        }
    };
    Problem { span: Some(key.span()), message: format!("unknown key `{name}` in {what}"), hint }
}

/// The value a key has when it is absent (`None` for optional keys), or the problem.
///
/// # Errors
/// The key is required.
pub fn absent<T: Absent>(key: &str, what: &str, span: &Range<usize>, section: &str) -> Result<T, Problem> {
    T::absent().ok_or_else(|| Problem {
        span: Some(span.clone()),
        message: format!("missing key `{key}` in {what}"),
        hint: format!("add {key} = … to {what} (README, \"{section}\")"),
    })
}

/// A TOML document, or every syntax error in it that is worth reading.
///
/// The `toml` crate recovers after a syntax error and goes on, so the errors of several lines
/// are reported in one run. Only the first error of a line is kept (the rest of a line are
/// mostly its echoes), and the report stops after the first error inside an array or inline
/// table: such a value may run over many lines, and what follows an unclosed one is misread.
///
/// # Errors
/// The text is not TOML: its syntax errors, in order, at least one.
pub fn parse_document(text: &str) -> Result<Spanned<DeTable<'_>>, Vec<toml::de::Error>> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return Ok(doc);
    }
    let newlines: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
    let line = |e: &toml::de::Error| e.span().map(|s| newlines.partition_point(|&n| n < s.start));
    // The first error found on each line (the one a parse that stops at the first reports).
    let mut lines = std::collections::HashSet::new();
    let mut firsts: Vec<toml::de::Error> = errors.into_iter().filter(|e| lines.insert(line(e))).collect();
    firsts.sort_by_key(|e| e.span().map_or(usize::MAX, |s| s.start));
    let mut kept: Vec<toml::de::Error> = Vec::new();
    for e in firsts {
        let message = e.message();
        let swallows = ["array", "inline table", "key-value pairs"].iter().any(|w| message.contains(w));
        kept.push(e);
        if swallows {
            break;
        }
    }
    Err(kept)
}

/// Puts a value into an empty slot; a second value for the same key gives up (TOML rejects
/// duplicate keys).
pub fn set<T: FromVal>(slot: &mut Option<T>, entry: &Entry) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(T::from_val(&entry.span, &entry.val)?);
    Some(())
}

/// The value of a field after all entries: present, or absent where that is allowed.
pub fn finish<T: FromVal>(slot: Option<T>) -> Option<T> {
    match slot {
        Some(v) => Some(v),
        None => T::absent(),
    }
}

/// Declares a raw table struct (serde shape) together with its [`FromEntries`] (the fast plan
/// reader) and [`FromTable`] (key by key) impls, so the paths can never disagree about the
/// keys. With `section = "…";` first, only [`FromTable`] is implemented and unknown or missing
/// keys point to that README section (the daemon config, which has no fast reader); otherwise
/// they point to "Plan format".
macro_rules! raw_table {
    (
        section = $section:literal;
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        $crate::plan::entries::raw_table!(@from_table $section, $name { $( $field: $ty, )* });
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::plan::entries::FromEntries for $name {
            fn from_entries(entries: &[$crate::plan::entries::Entry]) -> Option<Self> {
                use $crate::plan::entries::{finish, set};
                $( let mut $field: Option<$ty> = None; )*
                for e in entries {
                    match e.key {
                        $( stringify!($field) => set(&mut $field, e)?, )*
                        _ => return None,
                    }
                }
                Some($name { $( $field: finish($field)?, )* })
            }
        }

        $crate::plan::entries::raw_table!(@from_table "Plan format", $name { $( $field: $ty, )* });
    };
    (@from_table $section:literal, $name:ident { $( $field:ident : $ty:ty, )* }) => {
        impl $crate::plan::entries::FromTable for $name {
            const KEYS: &'static [&'static str] = &[$( stringify!($field) ),*];

            fn from_table(
                table: &toml::de::DeTable<'_>,
                span: &std::ops::Range<usize>,
                what: &str,
                problems: &mut Vec<$crate::plan::entries::Problem>,
            ) -> (Self, Vec<&'static str>) {
                use $crate::plan::entries::{Absent, absent, closest, field, unknown};
                $( let mut $field: Option<$ty> = None; )*
                // Keys that are missing (required) or have the wrong type.
                let mut unusable: Vec<&'static str> = Vec::new();
                // Keys an unknown key was probably meant to be: not reported again as missing,
                // and unusable.
                let mut meant: Vec<&str> = Vec::new();
                for (key, value) in table.iter() {
                    match key.get_ref().as_ref() {
                        $( stringify!($field) => match field::<$ty>(value) {
                            Ok(v) => $field = Some(v),
                            Err(p) => {
                                problems.push(p);
                                unusable.push(stringify!($field));
                            }
                        }, )*
                        _ => {
                            meant.extend(closest(key.get_ref(), Self::KEYS));
                            problems.push(unknown(key, what, Self::KEYS, $section));
                        }
                    }
                }
                $(
                    let $field: $ty = match $field {
                        Some(v) => v,
                        None if unusable.contains(&stringify!($field)) => <$ty as Absent>::stand_in(span),
                        // Probably written under a misspelt name (reported as unknown): what
                        // needs it is not checked, nor is it reported as missing.
                        None if meant.contains(&stringify!($field)) => {
                            unusable.push(stringify!($field));
                            <$ty as Absent>::stand_in(span)
                        }
                        None => match absent::<$ty>(stringify!($field), what, span, $section) {
                            Ok(v) => v,
                            Err(p) => {
                                problems.push(p);
                                unusable.push(stringify!($field));
                                <$ty as Absent>::stand_in(span)
                            }
                        },
                    };
                )*
                ($name { $( $field, )* }, unusable)
            }

            fn stand_in(span: &std::ops::Range<usize>) -> (Self, Vec<&'static str>) {
                use $crate::plan::entries::Absent;
                let mut unusable: Vec<&'static str> = Vec::new();
                $(
                    let $field: $ty = match <$ty as Absent>::absent() {
                        Some(v) => v,
                        None => {
                            unusable.push(stringify!($field));
                            <$ty as Absent>::stand_in(span)
                        }
                    };
                )*
                ($name { $( $field, )* }, unusable)
            }
        }
    };
}
pub(crate) use raw_table;
