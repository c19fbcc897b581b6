//! The TOML shape ops write, exactly as written (with spans). Unknown keys are errors.

use super::entries::raw_table;
use serde::Deserialize;
use serde_spanned::Spanned;

/// `config/plans/<customer>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    pub customer: Spanned<RawCustomer>,
    #[serde(default, rename = "contact")]
    pub contacts: Vec<Spanned<RawContact>>,
    /// The `[[occasion]]` entries (the TOML key is a stable interface; in code they are rules).
    #[serde(default, rename = "occasion")]
    pub rules: Vec<Spanned<RawRule>>,
}

raw_table! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawCustomer {
        pub id: Spanned<String>,
        pub name: Spanned<String>,
        pub since: Spanned<toml::Value>,
        pub ended: Option<Spanned<toml::Value>>,
        pub owner: Spanned<String>,
        pub timezone: Option<Spanned<String>>,
        pub language: Spanned<String>,
        pub phase: Spanned<String>,
        pub notes: Option<Spanned<toml::Value>>,
        pub goals: Option<Spanned<toml::Value>>,
        pub currency: Option<Spanned<String>>,
        pub playbook: Option<Spanned<String>>,
        pub region: Option<Spanned<String>>,
        pub weekend: Option<Spanned<Vec<Spanned<String>>>>,
        pub closed: Option<Spanned<Vec<Spanned<toml::Value>>>>,
        pub blackout: Option<Spanned<Vec<Spanned<String>>>>,
        pub on_closed: Option<Spanned<String>>,
        pub window: Option<Spanned<String>>,
        pub jitter: Option<Spanned<String>>,
    }
}

raw_table! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawContact {
        pub id: Spanned<String>,
        pub name: Spanned<String>,
        pub given_name: Option<Spanned<String>>,
        pub family_name: Option<Spanned<String>>,
        pub title: Option<Spanned<String>>,
        pub salutation: Option<Spanned<String>>,
        pub gender: Option<Spanned<String>>,
        pub email: Spanned<String>,
        pub birthday: Option<Spanned<toml::Value>>,
        pub tone: Spanned<String>,
        pub language: Option<Spanned<String>>,
        pub timezone: Option<Spanned<String>>,
        pub primary: Option<Spanned<bool>>,
        pub phone: Option<Spanned<String>>,
        pub role: Option<Spanned<String>>,
    }
}

/// `config/playbooks/<name>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlaybook {
    /// For humans reading the file; accepted so ops can document a playbook in place.
    #[allow(dead_code)]
    pub description: Option<String>,
    /// The `[[occasion]]` entries (the TOML key is a stable interface; in code they are rules).
    #[serde(default, rename = "occasion")]
    pub rules: Vec<Spanned<RawRule>>,
}

raw_table! {
    /// One `[[occasion]]`; every field optional so a plan can override single fields of a
    /// playbook rule by naming it.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawRule {
        pub name: Spanned<String>,
        pub on: Option<Spanned<String>>,
        pub years: Option<Spanned<Vec<u32>>>,
        pub every_years: Option<Spanned<u32>>,
        pub counts: Option<Spanned<Vec<u64>>>,
        pub every_count: Option<Spanned<u64>>,
        pub revenue: Option<Spanned<Vec<u64>>>,
        pub on_multiple: Option<Spanned<String>>,
        pub cron: Option<Spanned<String>>,
        pub date: Option<Spanned<toml::Value>>,
        pub send: Option<Spanned<String>>,
        pub to: Option<Spanned<String>>,
        pub template: Option<Spanned<String>>,
        pub at: Option<Spanned<toml::Value>>,
        pub before: Option<Spanned<String>>,
        pub leap_day: Option<Spanned<String>>,
        pub delivery: Option<Spanned<String>>,
        pub deadline: Option<Spanned<String>>,
        pub priority: Option<Spanned<i64>>,
        pub spread: Option<Spanned<String>>,
        pub enabled: Option<Spanned<bool>>,
        pub phases: Option<Spanned<Vec<Spanned<String>>>>,
        pub to_phase: Option<Spanned<String>>,
        pub event: Option<Spanned<String>>,
        pub cc: Option<Spanned<String>>,
        pub days: Option<Spanned<u32>>,
        pub factor: Option<Spanned<toml::Value>>,
        pub region: Option<Spanned<String>>,
        pub weekend: Option<Spanned<Vec<Spanned<String>>>>,
        pub closed: Option<Spanned<Vec<Spanned<toml::Value>>>>,
        pub blackout: Option<Spanned<Vec<Spanned<String>>>>,
        pub on_closed: Option<Spanned<String>>,
        pub window: Option<Spanned<String>>,
        pub jitter: Option<Spanned<String>>,
    }
}

/// The business-calendar keys, which `[customer]`, `[[occasion]]` and the daemon's
/// `[calendar]` table share; borrowed from either raw table for one validation routine.
pub struct CalendarKeys<'r> {
    pub region: Option<&'r Spanned<String>>,
    pub weekend: Option<&'r Spanned<Vec<Spanned<String>>>>,
    pub closed: Option<&'r Spanned<Vec<Spanned<toml::Value>>>>,
    pub blackout: Option<&'r Spanned<Vec<Spanned<String>>>>,
    pub on_closed: Option<&'r Spanned<String>>,
    pub window: Option<&'r Spanned<String>>,
    pub jitter: Option<&'r Spanned<String>>,
}

macro_rules! calendar_keys {
    ($($t:ty),*) => {$(
        impl $t {
            /// The business-calendar keys of this table, borrowed for validation.
            pub fn calendar_keys(&self) -> CalendarKeys<'_> {
                CalendarKeys {
                    region: self.region.as_ref(),
                    weekend: self.weekend.as_ref(),
                    closed: self.closed.as_ref(),
                    blackout: self.blackout.as_ref(),
                    on_closed: self.on_closed.as_ref(),
                    window: self.window.as_ref(),
                    jitter: self.jitter.as_ref(),
                }
            }
        }
    )*};
}
calendar_keys!(RawCustomer, RawRule, RawCalendar);

raw_table! {
    section = "Business calendar and send window";
    /// The daemon config's `[calendar]` table: defaults for every customer and rule (read key by
    /// key with the rest of the config).
    #[derive(Debug, Default)]
    pub struct RawCalendar {
        /// `region`: public holidays of a region (`"DE-BY"`, `"none"`).
        pub region: Option<Spanned<String>>,
        /// `weekend`: weekdays always closed (`["sat", "sun"]`).
        pub weekend: Option<Spanned<Vec<Spanned<String>>>>,
        /// `closed`: closure dates, a TOML date once or `"--MM-DD"` yearly.
        pub closed: Option<Spanned<Vec<Spanned<toml::Value>>>>,
        /// `blackout`: closed periods, both ends included (`"--12-20..--01-06"`).
        pub blackout: Option<Spanned<Vec<Spanned<String>>>>,
        /// `on_closed`: `after`, `before`, `skip` or `ignore`.
        pub on_closed: Option<Spanned<String>>,
        /// `window`: local send hours, both ends included (`"08:00-18:00"`).
        pub window: Option<Spanned<String>>,
        /// `jitter`: per-recipient spread (`"15m"`; `s`, `m`, `h`, up to `12h`).
        pub jitter: Option<Spanned<String>>,
    }
}
