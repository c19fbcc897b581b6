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

/// A raw table read key by key; implemented by `raw_table!`.
pub trait FromTable: Sized {
    /// The keys of the table, in declaration order.
    const KEYS: &'static [&'static str];
    /// Reads the table: every unknown key, missing key and wrong type goes to `problems`;
    /// `None` when a key is missing or has the wrong type.
    fn from_table(table: &DeTable<'_>, span: &Range<usize>, what: &str, problems: &mut Vec<Problem>) -> Option<Self>;
}

/// One value, exactly as serde through `toml` makes it.
///
/// # Errors
/// The value has another type (the `toml` crate's wording and span).
pub fn field<T: serde::de::DeserializeOwned>(value: &Spanned<DeValue<'_>>) -> Result<T, Problem> {
    let mut owned = value.clone();
    owned.get_mut().make_owned();
    T::deserialize(ValueDeserializer::from(owned)).map_err(|e| Problem {
        span: e.span().or_else(|| Some(value.span())),
        message: e.message().trim().to_string(),
        hint: "check the value's type: strings need quotes, dates are written 2016-03-01 without quotes".into(),
    })
}

/// The closest known key to a misspelt one, if any is close.
pub fn closest<'k>(key: &str, keys: &[&'k str]) -> Option<&'k str> {
    keys.iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// An unknown key of table `what`.
pub fn unknown(key: &Spanned<std::borrow::Cow<'_, str>>, what: &str, keys: &[&str]) -> Problem {
    let name = key.get_ref();
    let known = keys.join(", ");
    let hint = match closest(name, keys) {
        Some(k) => format!("did you mean `{k}`? The keys of {what} are: {known} (README, \"Plan format\")"),
        None => {
            format!("remove the key or fix its spelling; the keys of {what} are: {known} (README, \"Plan format\")")
        }
    };
    Problem { span: Some(key.span()), message: format!("unknown key `{name}` in {what}"), hint }
}

/// The value a key has when it is absent (`None` for optional keys), or the problem.
///
/// # Errors
/// The key is required.
pub fn absent<T: FromVal>(key: &str, what: &str, span: &Range<usize>) -> Result<T, Problem> {
    T::absent().ok_or_else(|| Problem {
        span: Some(span.clone()),
        message: format!("missing key `{key}` in {what}"),
        hint: format!("add {key} = … to {what} (README, \"Plan format\")"),
    })
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

/// Declares a raw table struct (serde shape) together with its [`FromEntries`] impl, so the
/// two can never disagree about the keys.
macro_rules! raw_table {
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

        impl $crate::plan::entries::FromTable for $name {
            const KEYS: &'static [&'static str] = &[$( stringify!($field) ),*];

            fn from_table(
                table: &toml::de::DeTable<'_>,
                span: &std::ops::Range<usize>,
                what: &str,
                problems: &mut Vec<$crate::plan::entries::Problem>,
            ) -> Option<Self> {
                use $crate::plan::entries::{absent, closest, field, unknown};
                $( let mut $field: Option<$ty> = None; )*
                let mut ok = true;
                // Keys an unknown key was probably meant to be: not reported again as missing.
                let mut meant: Vec<&str> = Vec::new();
                for (key, value) in table.iter() {
                    match key.get_ref().as_ref() {
                        $( stringify!($field) => match field::<$ty>(value) {
                            Ok(v) => $field = Some(v),
                            Err(p) => {
                                problems.push(p);
                                ok = false;
                            }
                        }, )*
                        _ => {
                            meant.extend(closest(key.get_ref(), Self::KEYS));
                            problems.push(unknown(key, what, Self::KEYS));
                        }
                    }
                }
                $(
                    let $field: Option<$ty> = match $field {
                        Some(v) => Some(v),
                        None => match absent::<$ty>(stringify!($field), what, span) {
                            Ok(v) => Some(v),
                            Err(p) => {
                                if !meant.contains(&stringify!($field)) {
                                    problems.push(p);
                                }
                                ok = false;
                                None
                            }
                        },
                    };
                )*
                if !ok {
                    return None;
                }
                Some($name { $( $field: $field?, )* })
            }
        }
    };
}
pub(crate) use raw_table;
