//! What an evidence leaf says about an outbox row: whom the message
//! concerns, and the row's identity (shared by delivery and read checks).

use entity::{absence_case, outbox};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait};

use crate::evidence::NewLeaf;

/// The employee a message concerns: its case's, else its recipient.
pub(super) async fn subject_of<C: ConnectionTrait>(
    conn: &C,
    case_id: Option<i64>,
    recipient: &str,
) -> Result<String, DbErr> {
    if let Some(id) = case_id
        && let Some(case) = absence_case::Entity::find_by_id(id).one(conn).await?
    {
        return Ok(case.user_id);
    }
    Ok(recipient.to_owned())
}

/// A leaf about outbox row `row` (an attempt, its receipt, its end).
pub(super) async fn message_leaf<C: ConnectionTrait>(
    conn: &C,
    kind: &str,
    row: &outbox::Model,
) -> Result<NewLeaf, DbErr> {
    let subject = subject_of(conn, row.case_id, &row.recipient).await?;
    Ok(NewLeaf::new(kind)
        .case(row.case_id)
        .subject(Some(&subject))
        .channel(&row.channel)
        .template(&row.template, &row.template_hash)
        .id("idem_key", row.idem_key.clone())
        .source("outbox", row.id))
}
