//! `POST /api/v1/events`: a custom event of a customer (a complaint, …) for its `on = "event"`
//! rules, as `contactplan event` records it. One JSON object per request:
//! `{"customer": "acme", "kind": "complaint", "note": "…", "id": "ticket-4711", "date":
//! "2026-11-30"}` (`note`, `id` and `date` optional; `date` defaults to today in the customer's
//! zone and may not be in the future; without `id` a unique one is generated and returned).
//! The same `id` again records nothing (200 with `"recorded": false`), so a client may retry.
//! Behind the API token like the orders API; 422 names the field and value of every problem.

use super::Ops;
use super::api::{error, write_guard};
use crate::events::{Event, generated_id};
use crate::plan::Trigger;
use crate::store::secs;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest request body of `POST /api/v1/events`, in bytes (413 above).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The fields of an event object.
const FIELDS: [&str; 5] = ["customer", "kind", "id", "note", "date"];

/// Makes generated ids of one process distinct within one clock tick.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// `POST /api/v1/events`.
pub async fn post_event(State(ops): State<Ops>, request: Request) -> Response {
    if let Err(r) = write_guard(&ops, request.headers()) {
        return r;
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {MAX_BODY_BYTES} bytes"));
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    let Value::Object(m) = &value else {
        return invalid(vec![json!({ "field": "", "value": value, "reason": "the body must be one event object" })]);
    };
    let mut problems = Vec::new();
    for k in m.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        problems.push(json!({ "field": k, "value": m[k.as_str()], "reason": format!("unknown field; the fields are {}", FIELDS.join(", ")) }));
    }
    let text = |field: &str, required: bool, problems: &mut Vec<Value>| -> Option<String> {
        match m.get(field) {
            Some(Value::String(s)) => Some(s.clone()),
            None if !required => None,
            None => {
                problems.push(json!({ "field": field, "value": null, "reason": "missing" }));
                None
            }
            Some(other) => {
                problems.push(json!({ "field": field, "value": other, "reason": "must be a string" }));
                None
            }
        }
    };
    let customer = text("customer", true, &mut problems);
    let kind = text("kind", true, &mut problems);
    let id = text("id", false, &mut problems);
    let note = text("note", false, &mut problems);
    let date = text("date", false, &mut problems).and_then(|d| match d.parse::<chrono::NaiveDate>() {
        Ok(day) => Some(day),
        Err(_) => {
            problems.push(json!({ "field": "date", "value": d, "reason": "not a date: write YYYY-MM-DD" }));
            None
        }
    });
    if let Some(k) = kind.as_deref().filter(|k| !crate::plan::is_event_kind(k)) {
        problems.push(json!({ "field": "kind", "value": k, "reason": "not an event kind: one lowercase word (a-z, digits, `-`, `_`) starting with a letter, e.g. complaint" }));
    }
    if let Some(i) = id.as_deref().filter(|i| !crate::plan::is_id(i)) {
        problems.push(json!({ "field": "id", "value": i, "reason": "not an event id: 1–128 letters, digits, `-`, `_` or `.`, starting with a letter or digit" }));
    }
    if let Some((n, why)) = note
        .as_deref()
        .and_then(|n| crate::plan::text_problem(n.trim(), crate::events::MAX_EVENT_NOTE_CHARS).map(|w| (n, w)))
    {
        problems.push(json!({ "field": "note", "value": n, "reason": format!("the note {why}") }));
    }
    let snapshot = ops.served.current();
    let plan = customer.as_deref().and_then(|c| snapshot.plans.get(c));
    if let (Some(c), None) = (&customer, plan) {
        problems.push(json!({ "field": "customer", "value": c, "reason": "no valid plan names this customer (run `contactplan check`)" }));
    }
    let now = ops.clock.now();
    let today = plan.map(|p| now.with_timezone(&p.timezone).date_naive());
    if let (Some(d), Some(today)) = (date, today)
        && d > today
    {
        problems.push(json!({ "field": "date", "value": d.to_string(), "reason": format!("in the future (today is {today} in the customer's zone)") }));
    }
    let (Some(plan), Some(kind), Some(today), true) = (plan, kind, today, problems.is_empty()) else {
        return invalid(problems);
    };
    let day = date.unwrap_or(today);
    let id = id.unwrap_or_else(|| {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        generated_id(&kind, day, now.timestamp_nanos_opt().unwrap_or_default() as u64 ^ n.rotate_left(40))
    });
    let event = match Event::new(&plan.id, &id, &kind, note.as_deref(), day, today) {
        Ok(e) => e,
        // Checked field by field above; the validator's own words if it still refuses.
        Err(why) => return invalid(vec![json!({ "field": "", "value": value, "reason": why })]),
    };
    let rules = plan
        .rules
        .iter()
        .filter(|r| matches!(&r.trigger, Trigger::Event { event: k, .. } if **k == *event.kind))
        .count();
    match ops.store.record_event(&event, "api", secs(now)).await {
        Ok(recorded) => {
            if recorded {
                (ops.orders_stored)();
            }
            tracing::info!(customer = %event.customer, kind = %event.kind, recorded, "event through the API");
            let body = json!({
                "recorded": recorded,
                "customer": event.customer,
                "id": event.id,
                "kind": event.kind,
                "date": event.date.to_string(),
                "rules": rules,
            });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "recording an event from the API failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database did not take the event; nothing was recorded, send it again",
            )
        }
    }
}

fn invalid(problems: Vec<Value>) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({ "errors": problems, "recorded": false }))).into_response()
}
