//! Replies that say "the relay's own sending limit", not "this message or recipient": rate
//! throttling and quotas. They are often 5xx (Exchange Online `554 5.2.0 …
//! SubmissionQuotaExceededException`, Google `550 5.4.5 Daily SMTP relay limit exceeded`), and a
//! 5xx read as "permanent" would fail a day's greetings because the relay's quota ran out
//! (`/work/shared/research/pitfalls.md`, "Mail relay limits"). Matched by code and text
//! (case-insensitive substrings): the built-in [`DEFAULT_PATTERNS`] plus `[delivery]
//! quota_patterns`. Pure: text in, a class out.

/// How long the relay's limit lasts, as the reply implies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QuotaWindow {
    /// A rate (messages per second, connections): slow down, try again at once.
    Rate,
    /// A per-minute limit: nothing until the next minute.
    Minute,
    /// A per-hour limit (or a 10-minute peak, Google): nothing until the next hour.
    Hour,
    /// A daily limit. Relays count a rolling 24 h (Exchange Online, Google), which we cannot see:
    /// nothing for an hour, then one probe (README, "Relay limits").
    Day,
}

/// Built-in texts of quota and throttle replies (lower case), with the window each implies.
pub const DEFAULT_PATTERNS: [(&str, QuotaWindow); 17] = [
    // Microsoft 365 / Exchange Online: 10,000 recipients per rolling 24 h.
    ("submissionquotaexceeded", QuotaWindow::Day),
    ("recipient rate limit", QuotaWindow::Day),
    // Google Workspace: daily relay and user limits; the 10-minute peak limit.
    ("daily smtp relay limit exceeded", QuotaWindow::Day),
    ("daily user sending limit exceeded", QuotaWindow::Day),
    ("daily sending quota", QuotaWindow::Day),
    ("peak smtp relay limit exceeded", QuotaWindow::Hour),
    // Amazon SES.
    ("daily message quota exceeded", QuotaWindow::Day),
    ("maximum sending rate exceeded", QuotaWindow::Rate),
    ("throttling failure", QuotaWindow::Rate),
    // Generic wording of many relays (Gmail's 421 4.7.0, Postfix policy servers, …).
    ("hourly", QuotaWindow::Hour),
    ("per hour", QuotaWindow::Hour),
    ("quota exceeded", QuotaWindow::Hour),
    ("rate limit", QuotaWindow::Rate),
    ("rate-limit", QuotaWindow::Rate),
    ("too many messages", QuotaWindow::Rate),
    ("too many connections", QuotaWindow::Rate),
    ("concurrent connections limit", QuotaWindow::Rate),
];

/// Words that make a 4xx reply with an enhanced code 4.7.x (policy) a throttle.
const THROTTLE_WORDS: [&str; 4] = ["too many", "rate", "throttl", "slow down"];

/// The quota class of a reply (`code` the three digits, `text` the rest, as the server sent it),
/// or `None` for an ordinary failure. `extra` are the configured `quota_patterns` (matched as
/// case-insensitive substrings; a match implies [`QuotaWindow::Hour`] unless the text says
/// "daily", "minute" or "rate").
pub fn classify(code: u16, text: &str, extra: &[String]) -> Option<QuotaWindow> {
    if !(400..600).contains(&code) {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    if let Some((_, w)) = DEFAULT_PATTERNS.iter().find(|(p, _)| lower.contains(p)) {
        // A daily text overrides a generic match ("quota exceeded" in "daily … quota exceeded").
        return Some(if lower.contains("daily") || lower.contains("24 h") { QuotaWindow::Day } else { *w });
    }
    if extra.iter().any(|p| !p.is_empty() && lower.contains(&p.to_ascii_lowercase())) {
        return Some(implied(&lower, QuotaWindow::Hour));
    }
    // A temporary policy refusal (421/450/451/452/454 with 4.7.x) worded as a rate or "too many".
    if (400..500).contains(&code)
        && lower.split_whitespace().next().is_some_and(|c| c.starts_with("4.7."))
        && THROTTLE_WORDS.iter().any(|w| lower.contains(w))
    {
        return Some(implied(&lower, QuotaWindow::Rate));
    }
    None
}

/// The window a matched reply's words imply; `otherwise` when they name none.
fn implied(lower: &str, otherwise: QuotaWindow) -> QuotaWindow {
    if lower.contains("daily") || lower.contains(" day") || lower.contains("24 h") {
        QuotaWindow::Day
    } else if lower.contains("hour") {
        QuotaWindow::Hour
    } else if lower.contains("minute") {
        QuotaWindow::Minute
    } else if lower.contains("rate") {
        QuotaWindow::Rate
    } else {
        otherwise
    }
}

/// Splits a failure detail as `SendError` carries it from lettre (`"permanent error (554):
/// 5.2.0 …"`, `"transient error (451): …"`) into code and text.
pub fn split_detail(detail: &str) -> Option<(u16, &str)> {
    let open = detail.find('(')?;
    let close = detail[open..].find(')')? + open;
    let code = detail[open + 1..close].trim().parse().ok()?;
    Some((code, detail[close + 1..].trim_start_matches(':').trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relays_quota_replies_are_recognised_with_their_window() {
        let none: &[String] = &[];
        let cases = [
            (554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", Some(QuotaWindow::Day)),
            (550, "5.4.5 Daily SMTP relay limit exceeded for user", Some(QuotaWindow::Day)),
            (550, "5.4.5 Daily user sending limit exceeded.", Some(QuotaWindow::Day)),
            (450, "4.2.1 Peak SMTP relay limit exceeded for customer", Some(QuotaWindow::Hour)),
            (454, "Throttling failure: Maximum sending rate exceeded.", Some(QuotaWindow::Rate)),
            (454, "Throttling failure: Daily message quota exceeded.", Some(QuotaWindow::Day)),
            (
                421,
                "4.7.0 Try again later, closing connection. Our system has detected an unusual rate",
                Some(QuotaWindow::Rate),
            ),
            (451, "4.7.1 Too many messages per minute, slow down", Some(QuotaWindow::Rate)),
            (451, "4.7.1 Sending rate for this hour exceeded", Some(QuotaWindow::Hour)),
            (550, "5.1.1 mailbox unavailable", None),
            (451, "4.3.0 Try again later", None),
            (451, "4.7.1 Greylisted, please try again", None),
            (250, "rate limit", None),
        ];
        for (code, text, want) in cases {
            assert_eq!(classify(code, text, none), want, "{code} {text}");
        }
        let extra = vec!["Kontingent erschöpft".to_string()];
        assert_eq!(classify(550, "5.7.1 Kontingent erschöpft für heute", &extra), Some(QuotaWindow::Hour));
        assert_eq!(classify(550, "5.7.1 Kontingent erschöpft per minute", &extra), Some(QuotaWindow::Minute));
    }

    #[test]
    fn lettre_details_split_into_code_and_text() {
        assert_eq!(split_detail("permanent error (554): 5.2.0 quota"), Some((554, "5.2.0 quota")));
        assert_eq!(split_detail("transient error (451): 4.7.1 rate"), Some((451, "4.7.1 rate")));
        assert_eq!(split_detail("connection refused"), None);
    }
}
