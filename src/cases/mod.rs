//! Absence cases and the escalation ladder. [`decide`] is pure: given the
//! time, a case and the policy snapshotted onto it, it says which notices are
//! due. The caller turns each into an outbox row keyed
//! `notice:{case}:{step}:{recipient}:{channel}`, so a notice is never sent twice.

pub mod ladder;

pub use ladder::{
    Action, CaseState, CaseStatus, Channel, Policy, Recipient, Rung, Step, Trigger, decide,
};
