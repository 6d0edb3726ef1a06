//! WeCom's callback side: `GET` checks the URL (the answer is the decrypted
//! `echostr` and nothing else), `POST` carries an encrypted message or event
//! (answered `success` once stored). Both are signed over the query's
//! `msg_signature`, `timestamp` and `nonce`.

use std::collections::HashMap;

use super::{CryptoError, ParseError, WecomCrypto, parse_app_message, parse_envelope};
use crate::config::WecomConfig;
use crate::platform::{Answer, Callback, CallbackMethod, CallbackRequest, CallbackSide, Refusal};

/// The signed query every WeCom callback carries.
struct SignedQuery {
    msg_signature: String,
    timestamp: String,
    nonce: String,
    echostr: Option<String>,
}

fn parse_query(raw: &str) -> Result<SignedQuery, Refusal> {
    let mut map: HashMap<String, String> = form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    let mut take = |k: &'static str| {
        map.remove(k)
            .ok_or_else(|| Refusal::BadRequest(format!("missing query parameter {k}")))
    };
    Ok(SignedQuery {
        msg_signature: take("msg_signature")?,
        timestamp: take("timestamp")?,
        nonce: take("nonce")?,
        echostr: take("echostr").ok(),
    })
}

/// How a crypto failure is refused (DingTalk's event scheme is the same).
pub(crate) fn refusal(e: CryptoError) -> Refusal {
    match e {
        CryptoError::BadSignature => Refusal::BadSignature(e.to_string()),
        CryptoError::WrongReceiveId => Refusal::WrongReceiveId(e.to_string()),
        _ => Refusal::Undecryptable(e.to_string()),
    }
}

/// One WeCom app's callback verification.
#[derive(Debug)]
pub struct WecomCallbacks {
    crypto: WecomCrypto,
    agent_id: i64,
}

impl WecomCallbacks {
    pub fn new(config: &WecomConfig) -> Result<WecomCallbacks, CryptoError> {
        Ok(WecomCallbacks {
            crypto: WecomCrypto::new(
                config.token.expose(),
                config.encoding_aes_key.expose(),
                &config.corp_id,
            )?,
            agent_id: config.agent_id,
        })
    }
}

/// Whether the callback's `timestamp` (seconds) is within the window.
fn fresh(request: &CallbackRequest<'_>, timestamp: &str) -> bool {
    timestamp
        .parse::<i64>()
        .is_ok_and(|ts| request.now.abs_diff(ts) <= request.replay_window_secs)
}

impl CallbackSide for WecomCallbacks {
    fn platform(&self) -> &'static str {
        "wecom"
    }

    fn handle(&self, request: &CallbackRequest<'_>) -> Result<Callback, Refusal> {
        let q = parse_query(request.query)?;
        match request.method {
            CallbackMethod::Get => {
                let echostr = q
                    .echostr
                    .ok_or_else(|| Refusal::BadRequest("missing query parameter echostr".into()))?;
                if !fresh(request, &q.timestamp) {
                    return Err(Refusal::StaleTimestamp);
                }
                let plain = self
                    .crypto
                    .open(&q.msg_signature, &q.timestamp, &q.nonce, &echostr)
                    .map_err(refusal)?;
                Ok(Callback::Verified(Answer::text(plain)))
            }
            CallbackMethod::Post => {
                let body = std::str::from_utf8(request.body)
                    .map_err(|_| Refusal::Malformed("body is not UTF-8".into()))?;
                let encrypt =
                    parse_envelope(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
                if !fresh(request, &q.timestamp) {
                    return Err(Refusal::StaleTimestamp);
                }
                let plaintext = self
                    .crypto
                    .open(&q.msg_signature, &q.timestamp, &q.nonce, &encrypt)
                    .map_err(refusal)?;
                let event = parse_app_message(&plaintext, self.agent_id).map_err(|e| match e {
                    ParseError::OtherAgent { .. } => Refusal::WrongReceiveId(e.to_string()),
                    e => Refusal::Malformed(e.to_string()),
                })?;
                Ok(Callback::Event {
                    events: vec![event],
                    plaintext,
                    answer: Answer::text("success"),
                    body: None,
                })
            }
        }
    }
}
