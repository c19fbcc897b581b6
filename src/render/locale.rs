//! Dates, numbers, ordinals and amounts of money in the recipient's language, through ICU4X
//! (the Unicode Consortium's `icu_*` crates, with their compiled CLDR data): `14. März 2026` /
//! `14 March 2026`, `1.234,56` / `1,234.56`, `10.` / `10th`, `1.234,56 €` / `€1,234.56`.
//! English is British English (`en-GB`), matching the salutations ("Dear Ms Smith").
//!
//! ICU4X was chosen because it is the maintained implementation of the CLDR rules in Rust
//! (date patterns, digit grouping, ordinal plural rules) and needs no system ICU; the other
//! candidates cover a part each (`chrono`'s `unstable-locales` dates, `num-format` integers
//! only). Own code is only the position of the currency sign: ICU4X's currency formatter is in
//! `icu_experimental`, whose API is not stable; `amounts_of_money` pins the result.

use crate::plan::Language;
use fixed_decimal::Decimal;
use icu_calendar::{Date, Gregorian};
use icu_datetime::FixedCalendarDateTimeFormatter;
use icu_datetime::fieldsets::YMD;
use icu_decimal::DecimalFormatter;
use icu_locale_core::{Locale, locale};
use icu_plurals::{PluralCategory, PluralRules};
use std::cell::OnceCell;

fn locale_of(language: Language) -> Locale {
    match language {
        Language::De => locale!("de"),
        Language::En => locale!("en-GB"),
    }
}

/// The formatters of one language, built on first use in each thread (ICU4X's data handles are
/// not `Sync` without its `sync` feature; building them takes microseconds). `None` if ICU4X
/// has no data, which the tests rule out for the two languages.
struct Formatters {
    date: Option<FixedCalendarDateTimeFormatter<Gregorian, YMD>>,
    decimal: Option<DecimalFormatter>,
    ordinal: Option<PluralRules>,
}

fn with<R>(language: Language, f: impl FnOnce(&Formatters) -> R) -> R {
    thread_local! {
        static DE: OnceCell<Formatters> = const { OnceCell::new() };
        static EN: OnceCell<Formatters> = const { OnceCell::new() };
    }
    let build = || {
        let l = locale_of(language);
        Formatters {
            date: FixedCalendarDateTimeFormatter::try_new((&l).into(), YMD::long()).ok(),
            decimal: DecimalFormatter::try_new((&l).into(), Default::default()).ok(),
            ordinal: PluralRules::try_new_ordinal((&l).into()).ok(),
        }
    };
    let key = match language {
        Language::De => &DE,
        Language::En => &EN,
    };
    key.with(|cell| f(cell.get_or_init(build)))
}

/// A civil date written out: `14. März 2026`, `14 March 2026`.
pub fn date(d: chrono::NaiveDate, language: Language) -> String {
    use chrono::Datelike;
    let civil = Date::try_new_gregorian(d.year(), d.month() as u8, d.day() as u8);
    with(language, |f| match (f.date.as_ref(), civil) {
        (Some(fmt), Ok(date)) => fmt.format(&date).to_string(),
        _ => d.format("%Y-%m-%d").to_string(),
    })
}

/// A number with the language's grouping and decimal separator, rounded to `decimals`
/// fraction digits (`1.234,56`, `1,234.56`); `None` for a value that is not finite.
pub fn number(x: f64, decimals: u8, language: Language) -> Option<String> {
    if !x.is_finite() {
        return None;
    }
    let text = format!("{x:.*}", usize::from(decimals));
    let value = Decimal::try_from_str(&text).ok()?;
    Some(with(language, |f| match &f.decimal {
        Some(fmt) => fmt.format(&value).to_string(),
        None => text,
    }))
}

/// An ordinal: `10.` (German) or `10th`, `1st`, `22nd`, `103rd` (English, by CLDR's ordinal
/// plural rules).
pub fn ordinal(n: u64, language: Language) -> String {
    match language {
        Language::De => format!("{n}."),
        Language::En => {
            let suffix = match with(language, |f| f.ordinal.as_ref().map(|r| r.category_for(n))) {
                Some(PluralCategory::One) => "st",
                Some(PluralCategory::Two) => "nd",
                Some(PluralCategory::Few) => "rd",
                _ => "th",
            };
            format!("{n}{suffix}")
        }
    }
}

/// An amount of money with two decimals and the currency's sign where the language puts it:
/// `1.234,56 €` (German: after the number, with a non-breaking space), `€1,234.56` (English:
/// before). Currencies other than EUR, USD, GBP and CHF are written by their ISO code.
pub fn money(amount: f64, currency: &str, language: Language) -> Option<String> {
    Some(with_sign(&number(amount, 2, language)?, currency, language))
}

/// [`money`] for an exact decimal amount (order revenue: never through a float), rounded half
/// away from zero to `decimals` fraction digits (at most 2): `1.234,50 €` (2), `100.000 €` (0,
/// for thresholds).
pub fn money_exact(amount: rust_decimal::Decimal, decimals: u32, currency: &str, language: Language) -> String {
    let decimals = decimals.min(2);
    let mut rounded = amount.round_dp_with_strategy(decimals, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(decimals);
    let text = rounded.to_string();
    let n = match Decimal::try_from_str(&text) {
        Ok(value) => with(language, |f| match &f.decimal {
            Some(fmt) => fmt.format(&value).to_string(),
            None => text.clone(),
        }),
        Err(_) => text,
    };
    with_sign(&n, currency, language)
}

/// A formatted number with the currency's sign where the language puts it.
fn with_sign(n: &str, currency: &str, language: Language) -> String {
    let sign = match currency {
        "EUR" => "€",
        "USD" => "$",
        "GBP" => "£",
        other => other,
    };
    match language {
        Language::De => format!("{n}\u{a0}{sign}"),
        Language::En if sign.chars().count() == 1 => format!("{sign}{n}"),
        Language::En => format!("{sign}\u{a0}{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    /// The reference values of issue 14, and the English ones.
    #[test]
    fn reference_values() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 14).unwrap();
        assert_eq!(date(d, Language::De), "14. März 2026");
        assert_eq!(date(d, Language::En), "14 March 2026");
        assert_eq!(ordinal(10, Language::De), "10.");
        assert_eq!(format!("{} Geschäftsjubiläum", ordinal(10, Language::De)), "10. Geschäftsjubiläum");
        assert_eq!(format!("{} order", ordinal(100, Language::En)), "100th order");
        let en: Vec<String> =
            [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112].map(|n| ordinal(n, Language::En)).into();
        assert_eq!(
            en,
            ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "101st", "111th", "112th"]
        );
        assert_eq!(number(1234.56, 2, Language::De).unwrap(), "1.234,56");
        assert_eq!(number(1234.56, 2, Language::En).unwrap(), "1,234.56");
        assert_eq!(number(1234567.0, 0, Language::De).unwrap(), "1.234.567");
        assert_eq!(number(f64::NAN, 2, Language::De), None);
    }

    #[test]
    fn amounts_of_money() {
        assert_eq!(money(1234.56, "EUR", Language::De).unwrap(), "1.234,56\u{a0}€");
        assert_eq!(money(1234.56, "EUR", Language::En).unwrap(), "€1,234.56");
        assert_eq!(money(0.5, "CHF", Language::De).unwrap(), "0,50\u{a0}CHF");
        let d = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
        assert_eq!(money_exact(d("1234.5"), 2, "EUR", Language::De), "1.234,50\u{a0}€");
        assert_eq!(money_exact(d("45678"), 2, "EUR", Language::De), "45.678,00\u{a0}€");
        assert_eq!(money_exact(d("100000"), 0, "EUR", Language::De), "100.000\u{a0}€");
        assert_eq!(money_exact(d("100000.00"), 0, "EUR", Language::En), "€100,000");
        assert_eq!(money_exact(d("0.005"), 2, "USD", Language::En), "$0.01", "half away from zero");
        assert_eq!(
            money_exact(d("99999999999999.995"), 2, "CHF", Language::En),
            "CHF\u{a0}100,000,000,000,000.00",
            "beyond f64's exact range"
        );
    }
}
