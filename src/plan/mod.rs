//! Contact plans: the model ops describe in TOML, and loading it with precise diagnostics.

pub(crate) mod entries;
mod fast_parse;
mod lenient;
mod load;
mod model;
pub mod names;
mod raw;
mod validate;

pub use crate::calendar::CrontabCache;
pub use load::{
    Loaded, Sources, duplicate_diagnostics, load, load_with_last_good, plan_file, plan_text, playbook_text, playbooks,
    resolve_duplicates, share_unchanged, toml_files,
};
pub use model::*;
pub use raw::RawCalendar;
pub use validate::{Context, Playbook, RuleCache, calendar_table};
