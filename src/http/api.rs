//! The write API: `POST /api/v1/orders` (orders into `Store::ingest_orders`) and its OpenAPI
//! document, `GET /api/v1/openapi.json` (`openapi.json` beside this file, served as written).
//!
//! A request is one order object, `{"orders": [...]}`, or a bare array of orders. Every order
//! is checked before anything is stored: one invalid order and the request stores nothing
//! (422, every problem with the order's index, the field and the value as sent). Amounts are
//! decimal strings (`"1234.50"`): a JSON number is refused, because JSON numbers are binary
//! floating point in most clients. Writes need the API token; with none configured the
//! endpoint refuses them (403) rather than accept orders from anyone.

use super::{Ops, authorized};
use crate::money::{Currency, Money};
use crate::orders::{DecimalMark, Order, parse_amount};
use crate::store::secs;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Largest request body of `POST /api/v1/orders`, in bytes (413 above).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Most orders in one request (413 above).
pub const MAX_BATCH: usize = 10_000;
/// The OpenAPI 3 document of the API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The `source` of changes the API writes.
const SOURCE: &str = "api";
/// Problems listed in a 422 (all are counted).
const MAX_ERRORS: usize = 1000;
/// Customers not in the plans named in a response (all are counted).
const SHOWN_UNKNOWN: usize = 5;

/// A JSON error answer: `{"error": message}`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `POST /api/v1/orders`.
pub async fn post_orders(State(ops): State<Ops>, request: Request) -> Response {
    if let Err(r) = write_guard(&ops, request.headers()) {
        return r;
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY_BYTES} bytes; send at most {MAX_BATCH} orders per request"),
        )
    };
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    let items = match batch(value) {
        Ok(items) => items,
        Err(problem) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({ "errors": [problem] }))).into_response();
        }
    };
    if items.len() > MAX_BATCH {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} orders in one request; send at most {MAX_BATCH} per request", items.len()),
        );
    }
    let mut orders = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    let mut count = 0usize;
    for (index, item) in items.iter().enumerate() {
        match order_of(item) {
            Ok(o) => orders.push(o),
            Err(errors) => {
                count += errors.len();
                for (field, value, reason) in errors {
                    if problems.len() < MAX_ERRORS {
                        problems.push(json!({ "index": index, "field": field, "value": value, "reason": reason }));
                    }
                }
            }
        }
    }
    if count > 0 {
        let body = json!({ "errors": problems, "error_count": count, "stored": 0 });
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response();
    }
    match ops.store.ingest_orders(&orders, SOURCE, secs(ops.clock.now())).await {
        Ok(done) => {
            if done.changed_customers > 0 {
                (ops.orders_stored)();
            }
            let unknown = not_in_plans(&ops, &orders);
            if !unknown.is_empty() {
                tracing::warn!(
                    customers = unknown.len(),
                    first = %unknown.iter().take(SHOWN_UNKNOWN).copied().collect::<Vec<_>>().join(", "),
                    "orders stored for customers not in the plans"
                );
            }
            tracing::info!(
                orders = orders.len(),
                inserted = done.inserted,
                updated = done.updated,
                "orders stored through the API"
            );
            let body = json!({
                "inserted": done.inserted,
                "updated": done.updated,
                "unchanged": done.unchanged,
                "changed_customers": done.changed_customers,
                "unknown_customers": unknown.len(),
                "unknown_customers_first": unknown.iter().take(SHOWN_UNKNOWN).collect::<Vec<_>>(),
            });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), orders = orders.len(), "storing orders from the API failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database did not take the orders; nothing was stored, send them again",
            )
        }
    }
}

/// What every write must pass: an API token is configured (else 403), the request carries it
/// (else 401 with `WWW-Authenticate: Bearer`), and the body is JSON (else 415).
#[allow(clippy::result_large_err)]
pub(super) fn write_guard(ops: &Ops, headers: &HeaderMap) -> Result<(), Response> {
    if ops.api_token.is_none() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "writes need an API token, and none is configured: set CONTACTPLAN_API_TOKEN or the systemd credential `api-token` (LoadCredential=api-token:/etc/contactplan/api-token) and restart the daemon",
        ));
    }
    if !authorized(ops.api_token.as_ref(), headers) {
        let mut r = error(StatusCode::UNAUTHORIZED, "bearer token required: send Authorization: Bearer <token>");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return Err(r);
    }
    json_content(headers)
}

/// The customers of `orders` that no plan in force names, sorted.
fn not_in_plans<'o>(ops: &Ops, orders: &'o [Order]) -> Vec<&'o str> {
    let snapshot = ops.served.current();
    let unknown: std::collections::BTreeSet<&str> =
        orders.iter().map(|o| o.customer.as_str()).filter(|c| snapshot.plans.get(c).is_none()).collect();
    unknown.into_iter().collect()
}

/// A `Content-Type` other than JSON is refused (none at all is taken as JSON).
#[allow(clippy::result_large_err)]
fn json_content(headers: &HeaderMap) -> Result<(), Response> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let ct = ct.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json")) {
        Ok(())
    } else {
        Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("Content-Type `{ct}`: send application/json")))
    }
}

/// The orders of a body: one order object, `{"orders": [...]}`, or an array.
fn batch(value: Value) -> Result<Vec<Value>, Value> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Object(mut m) if m.contains_key("orders") => {
            let extra: Vec<&String> = m.keys().filter(|k| *k != "orders").collect();
            if let Some(k) = extra.first() {
                return Err(json!({ "field": k, "value": m[k.as_str()], "reason": "unknown field beside `orders`" }));
            }
            match m.remove("orders") {
                Some(Value::Array(items)) => Ok(items),
                other => Err(json!({ "field": "orders", "value": other, "reason": "must be an array of orders" })),
            }
        }
        Value::Object(m) => Ok(vec![Value::Object(m)]),
        other => Err(json!({
            "field": "",
            "value": other,
            "reason": "the body must be an order object, {\"orders\": [...]}, or an array of orders",
        })),
    }
}

/// The fields of an order object.
const FIELDS: [&str; 6] = ["customer", "order", "date", "amount", "currency", "reference"];

type Problem = (String, Value, String);

/// One order object → an order, or every problem (field, value as sent, reason).
fn order_of(item: &Value) -> Result<Order, Vec<Problem>> {
    let Value::Object(m) = item else {
        return Err(vec![("".into(), item.clone(), "an order must be a JSON object".into())]);
    };
    let mut problems: Vec<Problem> = Vec::new();
    for k in m.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        problems.push((
            k.clone(),
            m[k.as_str()].clone(),
            format!("unknown field; the fields are {}", FIELDS.join(", ")),
        ));
    }
    let customer = text(m, "customer", true, &mut problems);
    let id = text(m, "order", true, &mut problems);
    let date = text(m, "date", true, &mut problems).and_then(|d| match date_of(d) {
        Ok(d) => Some(d),
        Err(why) => {
            problems.push(("date".into(), m["date"].clone(), why));
            None
        }
    });
    let amount = match m.get("amount") {
        Some(Value::Number(_)) => {
            problems.push((
                "amount".into(),
                m["amount"].clone(),
                "must be a string such as \"1234.50\": JSON numbers are binary floating point and may not keep cents exact".into(),
            ));
            None
        }
        _ => text(m, "amount", false, &mut problems),
    };
    let currency = text(m, "currency", false, &mut problems);
    let money = match (amount, currency) {
        (Some(a), Some(c)) => {
            let amount = if a.contains(',') {
                Err(format!(
                    "`{a}` is not an amount: write digits with a decimal point, e.g. \"1234.50\", without grouping"
                ))
            } else {
                parse_amount(a, DecimalMark::Point)
            };
            let currency = Currency::parse(c);
            match (amount, currency) {
                (Ok(amount), Ok(currency)) => Some(Money { amount, currency }),
                (a, c) => {
                    if let Err(why) = a {
                        problems.push(("amount".into(), m["amount"].clone(), why));
                    }
                    if let Err(why) = c {
                        problems.push(("currency".into(), m["currency"].clone(), why));
                    }
                    None
                }
            }
        }
        (Some(_), None) => {
            problems.push((
                "currency".into(),
                Value::Null,
                "is required with an amount (ISO 4217, e.g. \"EUR\")".into(),
            ));
            None
        }
        (None, Some(_)) if matches!(m.get("amount"), None | Some(Value::Null)) => {
            problems.push(("currency".into(), m["currency"].clone(), "is given without an amount".into()));
            None
        }
        (None, _) => None,
    };
    let reference = text(m, "reference", false, &mut problems);
    let (Some(customer), Some(id)) = (customer, id) else {
        return Err(problems);
    };
    match Order::new(customer, id, date.unwrap_or_default(), money, reference) {
        Ok(o) if problems.is_empty() && date.is_some() => Ok(o),
        Ok(_) => Err(problems),
        Err(errors) => {
            for e in errors {
                let field = if e.field == "order_id" { "order" } else { e.field };
                problems.push((field.into(), m.get(field).cloned().unwrap_or(Value::Null), e.problem));
            }
            Err(problems)
        }
    }
}

/// A string field; a missing required one, or one of another type (`null` too), is a problem.
fn text<'a>(m: &'a Map<String, Value>, field: &str, required: bool, problems: &mut Vec<Problem>) -> Option<&'a str> {
    match m.get(field) {
        Some(Value::String(s)) => Some(s),
        None if !required => None,
        None => {
            problems.push((field.into(), Value::Null, "is required".into()));
            None
        }
        Some(Value::Null) if !required => {
            problems.push((field.into(), Value::Null, "must be a string; leave the field out instead of null".into()));
            None
        }
        Some(other) => {
            problems.push((field.into(), other.clone(), "must be a string".into()));
            None
        }
    }
}

/// An ISO date (`2026-11-30`) with a year from 1900 to 2100.
fn date_of(s: &str) -> Result<chrono::NaiveDate, String> {
    use chrono::Datelike;
    let bad = || format!("`{s}` is not a date: write YYYY-MM-DD, e.g. 2026-11-30");
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?;
    if !(crate::orders::csv::MIN_YEAR..=crate::orders::csv::MAX_YEAR).contains(&d.year()) {
        return Err(format!("`{s}` is not a plausible order date (years 1900–2100)"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> Vec<String> {
        order_of(&v).unwrap_err().into_iter().map(|p| p.0).collect()
    }

    #[test]
    fn orders_from_json() {
        let o = order_of(
            &json!({"customer": "acme", "order": "A-1", "date": "2026-11-30", "amount": "1234.50", "currency": "eur"}),
        )
        .unwrap();
        assert_eq!(o.amount.unwrap().to_string(), "1234.50 EUR");
        assert_eq!(
            fields(
                json!({"customer": "acme", "order": "A-1", "date": "2026-11-30", "amount": 12.5, "currency": "EUR"})
            ),
            ["amount"]
        );
        assert_eq!(
            fields(
                json!({"customer": "a/b", "order": "", "date": "30.11.2026", "amount": "12,5x", "currency": "EURO", "x": 1})
            ),
            ["x", "date", "amount", "currency", "customer", "order"]
        );
        assert_eq!(fields(json!({"order": 5, "date": "2026-11-30"})), ["customer", "order"]);
        assert_eq!(
            fields(json!({"customer": "a", "order": "1", "date": "2026-11-30", "reference": null})),
            ["reference"]
        );
        assert_eq!(fields(json!({"customer": "a", "order": "1", "date": "2026-11-30", "amount": "1"})), ["currency"]);
        assert_eq!(fields(json!([1])), [""]);
        for date in ["0001-01-01", "2026-1-01", "+2026-01-01", "2026-02-30"] {
            assert!(date_of(date).is_err(), "{date}");
        }
    }

    #[test]
    fn the_openapi_document_is_json() {
        let v: Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3."));
        assert!(v["paths"]["/api/v1/orders"]["post"].is_object());
    }
}
