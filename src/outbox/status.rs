//! Where an outbox row stands (the `outbox.status` column). The database
//! keeps the words; Rust code compares [`OutboxStatus`].

use std::fmt;
use std::str::FromStr;

use entity::outbox;

/// Where an outbox row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    /// Waiting for its delivery job.
    Pending,
    /// A delivery attempt claimed it (and may have died).
    Sending,
    /// Delivered, with its receipt.
    Sent,
    /// The platform says this recipient cannot receive it.
    Undeliverable,
    /// Given up for another reason.
    Failed,
    /// Not sent: the case changed or the person was forgotten.
    Cancelled,
}

impl OutboxStatus {
    /// The word stored in `outbox.status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Sending => "sending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Undeliverable => "undeliverable",
            OutboxStatus::Failed => "failed",
            OutboxStatus::Cancelled => "cancelled",
        }
    }

    /// The status of a stored row (`None`: a word rollcall does not write).
    pub fn of(row: &outbox::Model) -> Option<OutboxStatus> {
        row.status.parse().ok()
    }
}

/// A stored status that is none of the words rollcall writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown outbox status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for OutboxStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(OutboxStatus::Pending),
            "sending" => Ok(OutboxStatus::Sending),
            "sent" => Ok(OutboxStatus::Sent),
            "undeliverable" => Ok(OutboxStatus::Undeliverable),
            "failed" => Ok(OutboxStatus::Failed),
            "cancelled" => Ok(OutboxStatus::Cancelled),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

impl fmt::Display for OutboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_words_read_back() {
        for s in [
            OutboxStatus::Pending,
            OutboxStatus::Sending,
            OutboxStatus::Sent,
            OutboxStatus::Undeliverable,
            OutboxStatus::Failed,
            OutboxStatus::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<OutboxStatus>(), Ok(s));
        }
        assert!("queued".parse::<OutboxStatus>().is_err());
    }
}
