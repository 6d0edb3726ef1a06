//! The daily email of each tenant's last witnessed checkpoint to the
//! witnesses it names (`[tenants.evidence] witness_emails`): copies of the
//! log's state held by people outside the company and outside rollcall.
//! Sent through the outbox (retried, and each send a leaf), once per
//! tenant, local day and address, whichever instance looks first.

use chrono::{DateTime, Utc};
use entity::outbox;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

use super::checkpoint::fingerprint;
use super::download::DownloadError;
use crate::outbox::{NewMessage, Payload, enqueue};
use crate::runtime::Runtime;

/// The outbox key of the day's email to `address`.
fn idem_key(tenant: &str, date: chrono::NaiveDate, address: &str) -> String {
    format!("witness:{tenant}:{date}:{address}")
}

/// Queues today's email to every witness of every tenant that has not had
/// it yet. Returns how many were queued.
pub async fn mail_witnesses(rt: &Runtime, now: DateTime<Utc>) -> Result<usize, DownloadError> {
    let db = &rt.db.orm;
    let mut queued = 0;
    for tenant in rt.tenants() {
        let config = &tenant.config;
        if config.witness_emails.is_empty() {
            continue;
        }
        let date = now.with_timezone(&config.timezone).date_naive();
        let keys: Vec<String> = config
            .witness_emails
            .iter()
            .map(|a| idem_key(&config.id, date, a))
            .collect();
        let sent = outbox::Entity::find()
            .filter(outbox::Column::IdemKey.is_in(keys.clone()))
            .all(db)
            .await?
            .len();
        if sent == keys.len() {
            continue;
        }
        let witnessed = match rt.witness.read(&config.id) {
            Ok(Some(w)) => w,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(tenant = %config.id, error = %e, "reading the witness file failed: no witness email today");
                continue;
            }
        };
        let rendered = rt.templates.render(
            "witness",
            json!({
                "tenant_name": config.name,
                "date": date.to_string(),
                "note": witnessed.note,
                "origin": witnessed.origin,
                "size": witnessed.size,
                "fingerprint": fingerprint(&rt.signer),
            }),
            &["subject", "text"],
        )?;
        let txn = rt.db.write().await?;
        for (address, key) in config.witness_emails.iter().zip(keys) {
            let made = enqueue(
                &txn,
                NewMessage {
                    tenant_id: config.id.clone(),
                    idem_key: key,
                    case_id: None,
                    fence: None,
                    step: None,
                    recipient: format!("witness:{address}"),
                    template: rendered.template.clone(),
                    template_hash: rendered.hash.clone(),
                    payload: Payload::Email {
                        to: address.clone(),
                        subject: rendered.block("subject").trim().to_owned(),
                        text: rendered.block("text").to_owned(),
                    },
                    secret: None,
                },
                now,
            )
            .await?;
            queued += usize::from(made.is_some());
        }
        txn.commit().await?;
    }
    Ok(queued)
}
