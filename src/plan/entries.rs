//! The vocabulary shared by the raw shapes (`raw.rs`) and the fast plan reader
//! (`fast_parse.rs`): a value as written ([`Val`]), one `key = value` line ([`Entry`]), how a
//! Rust type is made from a value ([`FromVal`]), and `raw_table!`, which declares a raw table's
//! serde shape together with its [`FromEntries`] impl so the two paths never disagree about
//! the keys.

use serde_spanned::Spanned;
use std::ops::Range;

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

        impl $crate::plan::lenient::FromTable for $name {
            const KEYS: &'static [&'static str] = &[$( stringify!($field) ),*];

            fn from_table(
                table: &toml::de::DeTable<'_>,
                span: &std::ops::Range<usize>,
                what: &str,
                problems: &mut Vec<$crate::plan::lenient::Problem>,
            ) -> Option<Self> {
                use $crate::plan::lenient::{absent, closest, field, unknown};
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
