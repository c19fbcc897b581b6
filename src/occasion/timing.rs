//! The send time of one occurrence on its (already decided) local send day: the rule's `at`
//! moved into the send window, resolved with the DST policy, then offset per recipient.
//!
//! Jitter: each recipient's send time is the base time plus `hash(outbox key) mod L` seconds,
//! where `L` is the configured spread shortened so the send stays inside the window, on the
//! same local day, and strictly before the default deadline (the end of the day, or for
//! crontab rules the next firing, which keeps a rule's sends in order). The hash is FNV-1a
//! (64 bit) of the outbox key, so it is the same on every start and every instance, and the
//! key itself stays the nominal occasion: jitter never creates a second key.

use crate::calendar::business::Window;
use crate::calendar::{Adjustment, Calendar, Resolved, resolve_local};
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;

fn time_of(secs: u32) -> NaiveTime {
    NaiveTime::from_num_seconds_from_midnight_opt(secs.min(86_399), 0).unwrap_or(NaiveTime::MIN)
}

/// The base send time in seconds after midnight: `at`, moved into the window when outside
/// it. A time after the window moves back far enough that the whole jitter spread still fits.
pub fn clamp(at: u32, window: Window, spread: u32) -> u32 {
    if at < window.start {
        window.start
    } else if at > window.end {
        window.end.saturating_sub(spread).max(window.start).min(86_399)
    } else {
        at
    }
}

/// The base instant of a send on `date` at `at`: window clamp, then the DST policy. Appends
/// the adjustments it makes.
pub fn base(zone: Tz, date: NaiveDate, at: NaiveTime, cal: &Calendar, adjustments: &mut Vec<Adjustment>) -> Resolved {
    let mut t = at.num_seconds_from_midnight();
    if let Some(w) = cal.window {
        let clamped = clamp(t, w, cal.jitter);
        if clamped != t {
            adjustments.push(Adjustment::WindowClamp { from: at, to: time_of(clamped), window: w.to_string() });
            t = clamped;
        }
    }
    let r = resolve_local(zone, date.and_time(time_of(t)));
    adjustments.extend(r.adjustment.clone());
    r
}

/// The send instant: `base` plus the per-recipient offset (see the module docs). `limit` is
/// the default deadline the send must stay before, if the rule uses it.
pub fn jitter(
    zone: Tz,
    base: &Resolved,
    cal: &Calendar,
    limit: Option<DateTime<Utc>>,
    key_hash: impl FnOnce() -> u64,
    adjustments: &mut Vec<Adjustment>,
) -> Resolved {
    if cal.jitter == 0 {
        return base.clone();
    }
    let local_secs = base.local.time().num_seconds_from_midnight();
    let room = cal.window.map_or(86_400 - local_secs, |w| w.end.saturating_sub(local_secs));
    let mut spread = i64::from(cal.jitter.min(room));
    if let Some(limit) = limit {
        spread = spread.min((limit - base.utc).num_seconds());
    }
    if spread <= 1 {
        return base.clone();
    }
    let offset = (key_hash() % spread as u64) as i64;
    let utc = base.utc + TimeDelta::seconds(offset);
    let local = utc.with_timezone(&zone);
    // A DST change inside the spread could carry the local time out of the day or window.
    let secs = local.time().num_seconds_from_midnight();
    if local.date_naive() != base.local.date_naive() || cal.window.is_some_and(|w| !w.contains(secs)) {
        return base.clone();
    }
    adjustments.push(Adjustment::Jitter { seconds: offset as u32, spread: spread as u32 });
    Resolved { utc, local, adjustment: base.adjustment.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_keeps_the_spread_inside_the_window() {
        let w = Window::parse("08:00-18:00").unwrap();
        assert_eq!(clamp(7 * 3600, w, 900), 8 * 3600);
        assert_eq!(clamp(9 * 3600, w, 900), 9 * 3600);
        assert_eq!(clamp(20 * 3600, w, 900), 18 * 3600 - 900);
        assert_eq!(clamp(20 * 3600, w, 0), 18 * 3600);
        assert_eq!(clamp(20 * 3600, w, 12 * 3600), 8 * 3600);
    }
}
