//! `GET|POST /callback/{platform}/{tenant}`: the platform's callback side
//! verifies and parses the request; a URL check is answered at once, an
//! event is stored (durably) before the platform gets its answer.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::{Ingress, MAX_BODY_BYTES, Outcome};
use crate::inbox::{NewInbound, Stored};
use crate::platform::{Answer, Callback, CallbackMethod, CallbackRequest, Refusal};

fn outcome(refusal: &Refusal) -> Outcome {
    match refusal {
        Refusal::BadRequest(_) => Outcome::BadRequest,
        Refusal::BadSignature(_) => Outcome::BadSignature,
        Refusal::Undecryptable(_) => Outcome::Undecryptable,
        Refusal::WrongReceiveId(_) => Outcome::WrongReceiveId,
        Refusal::Malformed(_) => Outcome::Malformed,
        Refusal::StaleTimestamp => Outcome::StaleTimestamp,
    }
}

/// Any callback of any platform.
pub async fn receive(
    State(state): State<Ingress>,
    Path((platform, tenant)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    let received_at = Utc::now();
    // A tenant answers only on its own platform's URL.
    let Some(side) = state
        .tenants
        .get(&tenant)
        .and_then(|t| t.callbacks.as_ref())
        .filter(|c| c.platform() == platform)
    else {
        return state.answer(&tenant, Outcome::UnknownTenant, "unknown tenant");
    };
    let bytes = match tokio::time::timeout(
        state.body_timeout,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return state.answer(&tenant, Outcome::TooLarge, "body larger than 256 KiB"),
        Err(_) => return state.answer(&tenant, Outcome::SlowBody, "the body took too long"),
    };
    let query = raw.unwrap_or_default();
    let request = CallbackRequest {
        method: if method == Method::GET {
            CallbackMethod::Get
        } else {
            CallbackMethod::Post
        },
        query: &query,
        headers: &headers,
        body: &bytes,
        now: received_at.timestamp(),
        replay_window_secs: state.replay_window_secs,
    };
    let (events, plaintext, answer, redacted) = match side.handle(&request) {
        Ok(Callback::Verified(answer)) => {
            return respond(&state, &tenant, Outcome::Verified, answer);
        }
        Ok(Callback::Event {
            events,
            plaintext,
            answer,
            body,
        }) => (events, plaintext, answer, body),
        Err(refusal) => return state.answer(&tenant, outcome(&refusal), refusal.to_string()),
    };
    // Verified bytes are the platform's own; a body that is not text was
    // refused by the platform's parser already.
    let body = redacted.unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    // Each event of the delivery (usually one) is stored before the answer;
    // a retry after a failure finds the stored ones by their keys.
    let mut outcome = Outcome::Duplicate;
    for event in &events {
        // An event that is one of several people's in the delivery keeps
        // only its own part: no one's record holds another person's.
        let (body, plaintext) = match &event.own_part {
            Some(own) => (own.clone(), own.clone()),
            None => (body.clone(), plaintext.clone()),
        };
        let row = NewInbound::new(
            &tenant,
            side.platform(),
            event,
            query.clone(),
            body,
            plaintext,
            received_at,
        );
        // A commit that does not come in time is refused with 503 (the
        // platform retries; should it commit later, the retry is a
        // duplicate): a database that is down costs a platform seconds, not
        // the pool's 30 s wait for a connection (tests/chaos.rs).
        let stored = tokio::time::timeout(super::STORE_WAIT, state.inbox.store(row))
            .await
            .unwrap_or(Err(crate::inbox::InboxError::TimedOut(super::STORE_WAIT)));
        match stored {
            Ok(Stored::New) => outcome = Outcome::Accepted,
            Ok(Stored::Duplicate) => {}
            // The database's words stay in the log, not in the answer.
            Err(e) => {
                tracing::error!(tenant = %tenant, error = %e, "could not store a callback");
                return state.answer(
                    &tenant,
                    Outcome::StoreFailed,
                    "temporarily unavailable, try again",
                );
            }
        }
    }
    respond(&state, &tenant, outcome, answer)
}

fn respond(state: &Ingress, tenant: &str, outcome: Outcome, answer: Answer) -> Response {
    let mut response = state.answer(tenant, outcome, answer.body);
    if let Ok(value) = answer.content_type.parse() {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, value);
    }
    response.into_response()
}
