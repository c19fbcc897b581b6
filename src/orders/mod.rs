//! Orders, the business events behind order milestones (`on = "orders"` rules). Pure: the
//! validated order every way in produces (`orders add`, `orders import`, `POST
//! /api/v1/orders`), and which thresholds a change of a customer's totals passes
//! ([`milestone`]). The store keeps orders per (customer, order id), so the same order
//! imported twice counts once and a correction updates it.

pub mod csv;
pub mod milestone;

use crate::money::{Currency, Money};
use chrono::NaiveDate;
use rust_decimal::Decimal;

/// Longest order id or reference, in characters.
pub const MAX_TEXT_CHARS: usize = 128;

/// One order as it is stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Order {
    /// The customer's id (as in its plan).
    pub customer: String,
    /// The order's id in the customer's or the ERP's numbering: unique per customer.
    pub id: String,
    /// The order date (a civil date, no time zone).
    pub date: NaiveDate,
    /// The order's value, if known (an order without one counts, but adds no revenue).
    pub amount: Option<Money>,
    /// Free text, e.g. the customer's purchase order number.
    pub reference: Option<String>,
}

/// A field of an order that is not valid: which field, the value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// The field's name as the input spells it (`customer`, `order_id`, `date`, `amount`,
    /// `currency`, `reference`).
    pub field: &'static str,
    /// What is wrong, naming the value.
    pub problem: String,
}

impl FieldError {
    fn new(field: &'static str, problem: impl Into<String>) -> FieldError {
        FieldError { field, problem: problem.into() }
    }
}

impl Order {
    /// Builds a validated order from its parts as given (already split into fields; see
    /// [`parse_amount`] and [`parse_date`] for the text forms).
    ///
    /// # Errors
    /// Every invalid field, in field order: a customer id plans would not accept, an empty or
    /// overlong order id or reference, or one with control characters, a negative amount.
    pub fn new(
        customer: &str,
        id: &str,
        date: NaiveDate,
        amount: Option<Money>,
        reference: Option<&str>,
    ) -> Result<Order, Vec<FieldError>> {
        let mut errors = Vec::new();
        if !crate::plan::is_id(customer) {
            errors.push(FieldError::new(
                "customer",
                format!(
                    "`{}` is not a customer id (1–128 ASCII letters, digits, '-', '_' or '.', as in the plans)",
                    shown(customer)
                ),
            ));
        }
        let id = id.trim();
        if let Err(why) = text_field(id, true) {
            errors.push(FieldError::new("order_id", format!("`{}` {why}", shown(id))));
        }
        if let Some(m) = &amount
            && m.amount.is_sign_negative()
            && !m.amount.is_zero()
        {
            errors.push(FieldError::new("amount", format!("`{}` is negative", m.amount)));
        }
        let reference = reference.map(str::trim).filter(|r| !r.is_empty());
        if let Some(r) = reference
            && let Err(why) = text_field(r, false)
        {
            errors.push(FieldError::new("reference", format!("`{}` {why}", shown(r))));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Order {
            customer: customer.to_string(),
            id: id.to_string(),
            date,
            amount,
            reference: reference.map(str::to_string),
        })
    }
}

/// At most 60 characters of `s`, control characters escaped, for messages.
fn shown(s: &str) -> String {
    let short: String = s.chars().take(60).collect();
    let short = crate::diagnostics::escape_controls(&short).into_owned();
    if s.chars().count() > 60 { format!("{short}…") } else { short }
}

fn text_field(s: &str, required: bool) -> Result<(), String> {
    if required && s.is_empty() {
        return Err("is empty".into());
    }
    if s.chars().count() > MAX_TEXT_CHARS {
        return Err(format!("is longer than {MAX_TEXT_CHARS} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    Ok(())
}

/// How a text amount writes its decimal separator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalMark {
    /// `1234.56`, `1,234.56` (English).
    Point,
    /// `1234,56`, `1.234,56` (German).
    Comma,
}

/// Reads an amount written with `mark` as its decimal separator: an optional sign, digits
/// with optional grouping by the other separator (groups of three), and at most 4 decimals.
/// `1.234,56` (comma) and `1,234.56` (point) are both 1234.56; `1234,5` is 1234.5.
///
/// # Errors
/// Anything else, naming the text: a separator in the wrong place, grouping that is not by
/// threes, letters, or more than 4 decimals.
pub fn parse_amount(text: &str, mark: DecimalMark) -> Result<Decimal, String> {
    let t = text.trim();
    let (dec, group) = match mark {
        DecimalMark::Point => ('.', ','),
        DecimalMark::Comma => (',', '.'),
    };
    let bad = |why: &str| format!("`{}` is not an amount ({why})", shown(t));
    let (sign, digits) = match t.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = match digits.split_once(dec) {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    if int.is_empty() {
        return Err(bad("no digits before the decimal separator"));
    }
    let groups: Vec<&str> = int.split(group).collect();
    let grouped = groups.len() > 1;
    for (i, g) in groups.iter().enumerate() {
        if g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(&format!("use digits, '{dec}' as the decimal separator and '{group}' between thousands")));
        }
        if grouped && ((i == 0 && g.len() > 3) || (i > 0 && g.len() != 3)) {
            return Err(bad(&format!("'{group}' separates thousands, in groups of three digits")));
        }
    }
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(&format!("digits must follow the decimal separator '{dec}'")));
        }
        if f.len() > 4 {
            return Err(bad("more than 4 decimals"));
        }
    }
    let canonical = format!("{sign}{}{}", groups.concat(), frac.map(|f| format!(".{f}")).unwrap_or_default());
    canonical.parse::<Decimal>().map_err(|_| bad("too large"))
}

/// Reads an order date: ISO `2026-11-30` or German `30.11.2026` (day and month may have one
/// digit).
///
/// # Errors
/// Any other form, or a day that does not exist; the message names the text.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let t = text.trim();
    let four_digits = |y: &str| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit());
    let parsed = match (t.split('-').next(), t.rsplit('.').next()) {
        (Some(y), _) if t.contains('-') && four_digits(y) => NaiveDate::parse_from_str(t, "%Y-%m-%d").ok(),
        (_, Some(y)) if t.contains('.') && four_digits(y) => NaiveDate::parse_from_str(t, "%d.%m.%Y").ok(),
        _ => None,
    };
    parsed.ok_or_else(|| format!("`{}` is not a date (2026-11-30 or 30.11.2026)", shown(t)))
}

/// An amount with its currency, from the two texts.
///
/// # Errors
/// The amount or the currency is not valid (see [`parse_amount`], [`Currency::parse`]).
pub fn money(amount: &str, currency: &str, mark: DecimalMark) -> Result<Money, FieldError> {
    let amount = parse_amount(amount, mark).map_err(|e| FieldError::new("amount", e))?;
    let currency = Currency::parse(currency.trim()).map_err(|e| FieldError::new("currency", e))?;
    Ok(Money { amount, currency })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn amounts_in_both_conventions() {
        for (text, mark, want) in [
            ("1234.50", DecimalMark::Point, "1234.50"),
            ("1,234.50", DecimalMark::Point, "1234.50"),
            ("1,234,567", DecimalMark::Point, "1234567"),
            ("1.234,56", DecimalMark::Comma, "1234.56"),
            ("1234,5", DecimalMark::Comma, "1234.5"),
            ("0,99", DecimalMark::Comma, "0.99"),
            (" 17 ", DecimalMark::Comma, "17"),
            ("-5,00", DecimalMark::Comma, "-5.00"),
        ] {
            assert_eq!(parse_amount(text, mark).unwrap(), d(want), "{text}");
        }
        for (text, mark) in [
            ("1.234,56", DecimalMark::Point),
            ("1234.5", DecimalMark::Comma),
            ("12,34,567.00", DecimalMark::Point),
            ("1,2345.00", DecimalMark::Point),
            ("", DecimalMark::Point),
            (",5", DecimalMark::Comma),
            ("1.", DecimalMark::Point),
            ("1.23456", DecimalMark::Point),
            ("12 EUR", DecimalMark::Point),
            ("1e5", DecimalMark::Point),
            ("99999999999999999999999999999999", DecimalMark::Point),
        ] {
            let e = parse_amount(text, mark).unwrap_err();
            assert!(e.contains("is not an amount"), "{text}: {e}");
        }
    }

    #[test]
    fn dates_iso_and_german() {
        assert_eq!(parse_date("2026-11-30").unwrap(), NaiveDate::from_ymd_opt(2026, 11, 30).unwrap());
        assert_eq!(parse_date("30.11.2026").unwrap(), NaiveDate::from_ymd_opt(2026, 11, 30).unwrap());
        assert_eq!(parse_date("1.2.2026").unwrap(), NaiveDate::from_ymd_opt(2026, 2, 1).unwrap());
        for bad in ["2026-02-30", "30.11.26", "11/30/2026", "", "2026-1-5x"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_order_reports_every_bad_field() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let minus = Money { amount: d("-1"), currency: Currency::EUR };
        let errors = Order::new("acme/x", " ", date, Some(minus), Some("a\u{7}b")).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["customer", "order_id", "amount", "reference"]);
        let ok = Order::new("acme", " A-2026/0042 ", date, None, Some("  ")).unwrap();
        assert_eq!((ok.id.as_str(), ok.reference), ("A-2026/0042", None));
    }
}
