//! Pure calendar logic: crontab schedules on wall time, and civil-time policies (DST gaps and
//! folds, Feb 29, month ends, day ends). No I/O, no clock.

mod civil;
mod crontab;

pub use civil::{Adjustment, Resolved, anniversary, end_of_local_day, observe, resolve_local};
pub use crontab::Crontab;
