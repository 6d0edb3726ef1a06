//! Absence cases and the escalation ladder. [`decide`] is pure: given the
//! time, a case and the policy snapshotted onto it, it says which notices are
//! due. [`notify`] turns each into outbox rows keyed
//! `notice:{case}:{step}:{recipient}:{channel}`, so a notice is never sent
//! twice; [`scan`] judges ended days; [`store`] keeps the cases.

pub mod ladder;
pub mod notify;
pub mod scan;
pub mod store;

pub use ladder::{
    Action, CaseState, CaseStatus, Channel, Policy, Recipient, Rung, Step, Trigger, decide,
};
