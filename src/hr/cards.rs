//! What HR's reminder cards (contracts, follow-ups after departure, risk)
//! share: rendering a card from a template and sending it to each person in
//! HR under a key that names the row it is about, and finding that row
//! again from a press (the card's message key).

use chrono::{DateTime, Utc};
use entity::{employee, outbox};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait};
use serde_json::Value;

use crate::conversation::turn::HandleError;
use crate::employees::directory::employee_row;
use crate::outbox::{Button, NewMessage, Payload, enqueue};
use crate::runtime::{Runtime, Tenant};

/// A card to HR about `subject`.
pub(crate) struct HrCard<'a> {
    /// The template, with blocks `title`, `body` and `button_<action>`.
    pub template: &'a str,
    pub context: &'a Value,
    pub actions: &'a [&'a str],
    /// The message key's prefix: the key is `<kind>:<id>:…:<hr user>`.
    pub kind: &'a str,
    pub id: i64,
    /// Between the id and the HR user in the key (a round, say), if any.
    pub round: Option<i32>,
    pub subject: &'a str,
    /// The message's step (`outbox.step`, the demo's timeline).
    pub step: &'a str,
}

/// Renders `card` and sends it to everyone in `hr` but its subject;
/// returns whom it went to.
pub(crate) async fn send<'h, C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    hr: &'h [employee::Model],
    card: &HrCard<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<&'h str>, HandleError> {
    let config = &tenant.config;
    let labels: Vec<String> = card.actions.iter().map(|a| format!("button_{a}")).collect();
    let mut blocks = vec!["title", "body"];
    blocks.extend(labels.iter().map(String::as_str));
    let rendered = rt.templates.render(card.template, card.context, &blocks)?;
    let round = card.round.map(|r| format!(":{r}")).unwrap_or_default();
    let mut sent = Vec::new();
    for h in hr.iter().filter(|h| h.user_id != card.subject) {
        let payload = Payload::Card {
            source: config.name.clone(),
            title: rendered.block("title").to_owned(),
            body: rendered.block("body").to_owned(),
            card_id: format!("rc-{}-{}{round}-{}", card.kind, card.id, ulid::Ulid::new()),
            buttons: card
                .actions
                .iter()
                .map(|a| Button {
                    action: (*a).to_owned(),
                    label: rendered.block(&format!("button_{a}")).to_owned(),
                    key: String::new(),
                })
                .collect(),
        };
        enqueue(
            conn,
            NewMessage {
                secret: None,
                tenant_id: config.id.clone(),
                idem_key: format!("{}:{}{round}:{}", card.kind, card.id, h.user_id),
                case_id: None,
                fence: None,
                step: Some(card.step.to_owned()),
                recipient: h.user_id.clone(),
                template: rendered.template.clone(),
                template_hash: rendered.hash.clone(),
                payload,
            },
            now,
        )
        .await?;
        sent.push(h.user_id.as_str());
    }
    Ok(sent)
}

/// The id a card's message key names (`<kind>:<id>:…`).
pub(crate) fn id_in(key: &str, kind: &str) -> Option<i64> {
    key.strip_prefix(kind)?
        .strip_prefix(':')?
        .split(':')
        .next()?
        .parse()
        .ok()
}

/// The id of the row the card pressed (sent in message `outbox_id`) is
/// about, if it is a `kind` card.
pub(crate) async fn pressed_id<C: ConnectionTrait>(
    conn: &C,
    outbox_id: i64,
    kind: &str,
) -> Result<Option<i64>, DbErr> {
    Ok(outbox::Entity::find_by_id(outbox_id)
        .one(conn)
        .await?
        .and_then(|m| id_in(&m.idem_key, kind)))
}

/// `user`'s name, or the id itself for someone no longer listed.
pub(crate) async fn name_of<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    user: &str,
) -> Result<String, DbErr> {
    Ok(employee_row(conn, tenant, user)
        .await?
        .map_or_else(|| user.to_owned(), |e| e.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_row() {
        assert_eq!(id_in("contract:42:2:wangmin", "contract"), Some(42));
        assert_eq!(id_in("leaver:7:wangmin", "leaver"), Some(7));
        assert_eq!(id_in("leaver:7:wangmin", "risk"), None);
        assert_eq!(id_in("contractx:7:wangmin", "contract"), None);
        assert_eq!(id_in("reply:42", "contract"), None);
    }
}
