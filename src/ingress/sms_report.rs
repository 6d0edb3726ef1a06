//! `POST /sms/report/{tenant}`: a webhook SMS gateway's delivery report
//! (the contract is on [`WebhookSms`](crate::outbox::sms::WebhookSms)).
//! Checked here, recorded by `outbox::reports`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::config::SmsConfig;
use crate::outbox::reports::{Posted, webhook_report};
use crate::outbox::sms::{
    DeliveryStatus, SmsReport, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, verify_webhook,
};
use crate::runtime::Runtime;

#[derive(Deserialize)]
struct ReportBody {
    id: Option<String>,
    out_id: Option<String>,
    status: String,
    at: chrono::DateTime<chrono::FixedOffset>,
    #[serde(default)]
    code: Option<String>,
}

fn answer(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

pub async fn receive(
    State(rt): State<Runtime>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(t) = rt.tenant(&tenant).cloned() else {
        return answer(StatusCode::NOT_FOUND, "no_such_tenant");
    };
    let Some(SmsConfig::Webhook(config)) = &t.config.sms else {
        return answer(StatusCode::NOT_FOUND, "no_webhook_gateway");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(why) = verify_webhook(
        config.secret.expose(),
        header(WEBHOOK_TIMESTAMP_HEADER),
        header(WEBHOOK_SIGNATURE_HEADER),
        &body,
        chrono::Utc::now().timestamp(),
    ) {
        tracing::info!(tenant, %why, "SMS report refused");
        return answer(StatusCode::UNAUTHORIZED, "refused");
    }
    let Ok(report) = serde_json::from_slice::<ReportBody>(&body) else {
        return answer(StatusCode::BAD_REQUEST, "invalid_body");
    };
    let status = match report.status.as_str() {
        "delivered" => DeliveryStatus::Delivered,
        "failed" => DeliveryStatus::Failed,
        _ => return answer(StatusCode::BAD_REQUEST, "invalid_status"),
    };
    let sms_report = SmsReport {
        status: Some(status),
        at: Some(report.at.with_timezone(&chrono::Utc)),
        code: report.code.unwrap_or_default(),
    };
    match webhook_report(
        &rt,
        &t,
        report.id.as_deref(),
        report.out_id.as_deref(),
        sms_report,
        &body,
        &crate::cases::notify::TellHr,
    )
    .await
    {
        Ok(Posted::Recorded) => axum::Json(json!({ "recorded": true })).into_response(),
        Ok(Posted::Already) => axum::Json(json!({ "recorded": false })).into_response(),
        Ok(Posted::UnknownId) => answer(StatusCode::NOT_FOUND, "unknown_id"),
        Err(e) => {
            tracing::error!(tenant, error = %e, "recording an SMS report failed");
            answer(StatusCode::SERVICE_UNAVAILABLE, "try_again_later")
        }
    }
}
