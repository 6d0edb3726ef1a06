//! The context of handling one inbound event ([`Turn`]): what the
//! conversation and the commands it runs share, and their error.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseTransaction, DbErr};
use serde_json::Value;

use crate::cases::notify::NotifyError;
use crate::cases::store::record;
use crate::outbox::render::TemplateError;
use crate::outbox::{NewMessage, Payload, enqueue};
use crate::platform::InboundEvent;
use crate::runtime::{Runtime, Tenant};

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("stored event {id} does not parse: {reason}")]
    Unreadable { id: i64, reason: String },
}

impl From<NotifyError> for HandleError {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::Db(e) => Self::Db(e),
            NotifyError::Template(e) => Self::Template(e),
        }
    }
}

/// The context of one event's handling.
pub(crate) struct Turn<'a> {
    pub rt: &'a Runtime,
    pub txn: &'a DatabaseTransaction,
    pub tenant: &'a Tenant,
    pub event_id: i64,
    pub event: &'a InboundEvent,
    pub sent_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

impl Turn<'_> {
    /// Answers the sender with `block` of `template` (one answer per event).
    pub async fn reply(
        &self,
        template: &str,
        block: &str,
        context: &Value,
    ) -> Result<(), HandleError> {
        self.send_text(
            &format!("reply:{}", self.event_id),
            &self.event.sender,
            template,
            block,
            context,
        )
        .await
    }

    pub async fn send_text(
        &self,
        key: &str,
        to: &str,
        template: &str,
        block: &str,
        context: &Value,
    ) -> Result<(), HandleError> {
        let rendered = self.rt.templates.render(template, context, &[block])?;
        let message = NewMessage {
            secret: None,
            tenant_id: self.tenant.config.id.clone(),
            idem_key: key.to_owned(),
            case_id: None,
            fence: None,
            step: None,
            recipient: to.to_owned(),
            template: rendered.template.clone(),
            template_hash: rendered.hash.clone(),
            payload: Payload::Text {
                content: rendered.block(block).to_owned(),
            },
        };
        enqueue(self.txn, message, self.now).await?;
        Ok(())
    }

    pub async fn record(
        &self,
        case_id: Option<i64>,
        user: Option<&str>,
        kind: &str,
        detail: Value,
    ) -> Result<(), DbErr> {
        record(
            self.txn,
            &self.tenant.config.id,
            case_id,
            user,
            kind,
            Some(&self.event.sender),
            detail,
            Some(self.event_id),
            self.now,
        )
        .await
    }
}
