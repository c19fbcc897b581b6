//! Civil dates as plans write them: a month-day with an optional year, and the Feb 29 policy.

/// A civil month-day, optionally with its year (a birthday is often known without the year;
/// `--12-24` in plans). Month 1–12, day 1–31; Feb 29 is valid (see [`LeapDay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MonthDay {
    /// 1–12.
    pub month: u32,
    /// 1–31, valid for the month in a leap year.
    pub day: u32,
    /// The year, when known (an anchor such as a birth year or a one-off date).
    pub year: Option<i32>,
}

/// How a Feb 29 date is observed in common years: an explicit policy, since tools disagree
/// and users file bugs either way (nextcloud/contacts#2102, BirthdayBot#192).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LeapDay {
    /// On Feb 28 (the default).
    #[default]
    Feb28,
    /// On Mar 1.
    Mar1,
    /// Only in leap years.
    LeapOnly,
}
