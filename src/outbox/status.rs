//! Where an outbox row stands (the `outbox.status` column). The database
//! keeps the words (`as_str`, and `parse` back); Rust code compares
//! [`OutboxStatus`].

use entity::outbox;

/// Where an outbox row stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum OutboxStatus {
    /// Waiting in the outbox's queue (from `not_before` on).
    Pending,
    /// A delivery attempt claimed it (and may have died).
    Sending,
    /// Delivered, with its receipt.
    Sent,
    /// Sent, maybe: the request may have reached the gateway and no answer
    /// came (an SMS timed out after connecting). Never sent again by
    /// itself: asked about (Aliyun), else left to HR.
    Unknown,
    /// The platform says this recipient cannot receive it.
    Undeliverable,
    /// Given up for another reason.
    Failed,
    /// Not sent: the case changed or the person was forgotten.
    Cancelled,
}

impl OutboxStatus {
    /// The word stored in `outbox.status`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The status of a stored row (`None`: a word rollcall does not write).
    pub fn of(row: &outbox::Model) -> Option<OutboxStatus> {
        row.status.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn the_stored_words_read_back() {
        let words: Vec<&str> = OutboxStatus::iter().map(OutboxStatus::as_str).collect();
        assert_eq!(
            words,
            [
                "pending",
                "sending",
                "sent",
                "unknown",
                "undeliverable",
                "failed",
                "cancelled"
            ]
        );
        for s in OutboxStatus::iter() {
            assert_eq!(s.as_str().parse::<OutboxStatus>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!("queued".parse::<OutboxStatus>().is_err());
    }
}
