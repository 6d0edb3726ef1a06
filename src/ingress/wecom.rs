//! `GET|POST /callback/wecom/{tenant}`: URL verification and message callbacks.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use chrono::Utc;

use super::{Ingress, MAX_BODY_BYTES, Outcome};
use crate::inbox::{NewInbound, Stored};
use crate::platform::wecom::{CryptoError, WecomCrypto, parse_envelope, parse_message};

/// The signed query every WeCom callback carries.
struct SignedQuery {
    msg_signature: String,
    timestamp: String,
    nonce: String,
    echostr: Option<String>,
}

fn parse_query(raw: Option<&str>) -> Result<SignedQuery, &'static str> {
    let mut map: HashMap<String, String> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let mut take = |k: &'static str| map.remove(k);
    Ok(SignedQuery {
        msg_signature: take("msg_signature").ok_or("missing query parameter msg_signature")?,
        timestamp: take("timestamp").ok_or("missing query parameter timestamp")?,
        nonce: take("nonce").ok_or("missing query parameter nonce")?,
        echostr: take("echostr"),
    })
}

fn crypto_outcome(e: &CryptoError) -> Outcome {
    match e {
        CryptoError::BadSignature => Outcome::BadSignature,
        CryptoError::WrongReceiveId => Outcome::WrongReceiveId,
        _ => Outcome::Undecryptable,
    }
}

impl Ingress {
    fn wecom_tenant(&self, tenant: &str) -> Option<&WecomCrypto> {
        self.tenants.get(tenant).and_then(|t| t.wecom.as_ref())
    }

    fn fresh(&self, timestamp: &str) -> bool {
        timestamp
            .parse::<i64>()
            .is_ok_and(|ts| Utc::now().timestamp().abs_diff(ts) <= self.replay_window_secs)
    }
}

/// URL verification: the answer's body is the decrypted `echostr`, nothing else.
pub async fn verify_url(
    State(state): State<Ingress>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(crypto) = state.wecom_tenant(&tenant) else {
        return state.answer(&tenant, Outcome::UnknownTenant, "unknown tenant");
    };
    let q = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(reason) => return state.answer(&tenant, Outcome::BadRequest, reason),
    };
    let Some(echostr) = q.echostr else {
        return state.answer(
            &tenant,
            Outcome::BadRequest,
            "missing query parameter echostr",
        );
    };
    if !state.fresh(&q.timestamp) {
        return state.answer(
            &tenant,
            Outcome::StaleTimestamp,
            "timestamp outside the allowed window",
        );
    }
    match crypto.open(&q.msg_signature, &q.timestamp, &q.nonce, &echostr) {
        Ok(plain) => state.answer(&tenant, Outcome::Verified, plain),
        Err(e) => state.answer(&tenant, crypto_outcome(&e), e.to_string()),
    }
}

/// A message or event callback: verify, decrypt, parse, store, then "success".
pub async fn receive(
    State(state): State<Ingress>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    let received_at = Utc::now();
    let Some(crypto) = state.wecom_tenant(&tenant) else {
        return state.answer(&tenant, Outcome::UnknownTenant, "unknown tenant");
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return state.answer(&tenant, Outcome::TooLarge, "body larger than 256 KiB");
    };
    let q = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(reason) => return state.answer(&tenant, Outcome::BadRequest, reason),
    };
    let Ok(body) = String::from_utf8(Vec::from(bytes)) else {
        return state.answer(&tenant, Outcome::MalformedXml, "body is not UTF-8");
    };
    let encrypt = match parse_envelope(&body) {
        Ok(e) => e,
        Err(e) => return state.answer(&tenant, Outcome::MalformedXml, e.to_string()),
    };
    if !state.fresh(&q.timestamp) {
        return state.answer(
            &tenant,
            Outcome::StaleTimestamp,
            "timestamp outside the allowed window",
        );
    }
    let plaintext = match crypto.open(&q.msg_signature, &q.timestamp, &q.nonce, &encrypt) {
        Ok(p) => p,
        Err(e) => return state.answer(&tenant, crypto_outcome(&e), e.to_string()),
    };
    let event = match parse_message(&plaintext) {
        Ok(ev) => ev,
        Err(e) => return state.answer(&tenant, Outcome::MalformedXml, e.to_string()),
    };
    let row = NewInbound::new(
        &tenant,
        "wecom",
        &event,
        raw.unwrap_or_default(),
        body,
        plaintext,
        received_at,
    );
    match state.inbox.store(row).await {
        Ok(Stored::New) => state.answer(&tenant, Outcome::Accepted, "success"),
        Ok(Stored::Duplicate) => state.answer(&tenant, Outcome::Duplicate, "success"),
        Err(e) => state.answer(&tenant, Outcome::StoreFailed, e.to_string()),
    }
}
