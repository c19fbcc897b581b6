//! Pure calendar logic: crontab schedules on wall time, civil-time policies (DST gaps and
//! folds, Feb 29, month ends, day ends), public holidays and the business calendar (closed
//! days, send windows). No I/O, no clock.

mod adjustment;
pub mod business;
mod civil;
mod crontab;
mod date;
pub mod holidays;

pub use adjustment::Adjustment;
pub use business::{Calendar, OnClosed, Settings};
pub use civil::{Resolved, anniversary, end_of_local_day, observe, resolve_local};
pub use crontab::{Crontab, CrontabCache};
pub use date::{LeapDay, MonthDay};
pub use holidays::Region;
