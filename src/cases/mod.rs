//! Absence cases and the escalation ladder. [`decide`] is pure: given the
//! time, a case and the policy snapshotted onto it, it says which notices are
//! due. [`notify`] turns each into outbox rows keyed
//! `notice:{case}:{step}:{recipient}:{channel}`, so a notice is never sent
//! twice; [`scan`] judges ended days; [`store`] keeps the cases.
//! [`departure`] is the self-departure (自离) process after the deadline,
//! [`exhibits`] the files filed on a case, [`post`] the notices sent by
//! registered mail.

pub mod departure;
pub mod exhibits;
pub mod ladder;
pub mod notify;
pub mod post;
pub mod scan;
pub mod status;
pub mod store;

pub use ladder::{Action, CaseState, Channel, Policy, Recipient, Rung, Step, Trigger, decide};
pub use status::{CaseStatus, DepartureState};
