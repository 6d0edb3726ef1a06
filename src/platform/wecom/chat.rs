//! WeCom behind the neutral [`ChatApi`]: a card is a `button_interaction`
//! template card whose `task_id` is the card's id, updating a card is
//! `update_template_card` with a single-use `response_code`, media is
//! `media/get`, and the directory is the address book.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::api::{Outbound, WecomApi};
use crate::platform::{
    Card, ChatApi, Exchange, Media, Member, OutboundMessage, PlatformError, PunchRecord,
    ReadStatus, Receipt,
};

/// The root department: `user/list` with `fetch_child=1` from it is everyone.
const ROOT_DEPARTMENT: i64 = 1;

/// The `template_card` body WeCom expects for a card with buttons.
pub fn card_body(card: &Card) -> Value {
    json!({
        "card_type": "button_interaction",
        "source": { "desc": card.source },
        "main_title": { "title": card.title },
        "sub_title_text": card.body,
        "task_id": card.card_id,
        "button_list": card
            .buttons
            .iter()
            .map(|b| json!({ "text": b.label, "style": 1, "key": b.key }))
            .collect::<Vec<_>>(),
    })
}

#[async_trait::async_trait]
impl ChatApi for WecomApi {
    fn platform(&self) -> &'static str {
        "wecom"
    }

    async fn send(
        &self,
        to: &str,
        message: &OutboundMessage,
        unique_text: bool,
    ) -> Result<Receipt, PlatformError> {
        let outbound = match message {
            OutboundMessage::Text { content } => Outbound::Text {
                content: content.clone(),
            },
            OutboundMessage::Card(card) => Outbound::TemplateCard(card_body(card)),
        };
        // WeCom's duplicate check (same content within 30 minutes) is a
        // second guard behind our idempotency keys, for unique texts only.
        let receipt = WecomApi::send(self, to, &outbound, unique_text).await?;
        Ok(Receipt {
            message_id: receipt.msgid,
            card_ref: receipt.response_code,
            request: Some(Exchange::json(receipt.request)),
            response: Exchange::json(receipt.raw),
        })
    }

    async fn update_card(
        &self,
        to: &str,
        card_ref: &str,
        label: &str,
    ) -> Result<Receipt, PlatformError> {
        let raw = self.update_template_card(&[to], card_ref, label).await?;
        Ok(Receipt {
            message_id: None,
            card_ref: None,
            request: None,
            response: Exchange::json(raw),
        })
    }

    async fn fetch_media(&self, media_id: &str) -> Result<Media, PlatformError> {
        self.media_get(media_id).await
    }

    /// WeCom reports no read status for an app's messages: a notice's
    /// delivery is the send's receipt, never a read.
    fn read_window(&self) -> Option<std::time::Duration> {
        None
    }

    async fn read_status(&self, _message_id: &str) -> Result<ReadStatus, PlatformError> {
        Err(PlatformError::Permanent(
            "WeCom reports no read status for app messages".into(),
        ))
    }

    async fn punches(
        &self,
        users: &[String],
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<PunchRecord>, PlatformError> {
        self.checkin_data(users, from, to).await
    }

    async fn directory(&self) -> Result<Vec<Member>, PlatformError> {
        let departments: HashMap<i64, String> = self
            .departments()
            .await?
            .into_iter()
            .map(|d| (d.id, d.name))
            .collect();
        let mut seen = HashSet::new();
        Ok(self
            .users(ROOT_DEPARTMENT, true)
            .await?
            .into_iter()
            // A member of two departments may be listed twice.
            .filter(|u| !u.userid.is_empty() && seen.insert(u.userid.clone()))
            .map(|u| Member {
                department: u
                    .main_department
                    .or(u.department.first().copied())
                    .and_then(|id| departments.get(&id).cloned()),
                manager: u.direct_leader.first().cloned(),
                mobile: u.mobile.filter(|m| !m.is_empty()),
                email: u.email.filter(|e| !e.is_empty()),
                // 2 disabled, 5 left (1 active, 4 not yet activated).
                active: !matches!(u.status, Some(2 | 5)),
                user_id: u.userid,
                name: u.name,
            })
            .collect())
    }
}
