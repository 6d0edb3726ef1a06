//! The states a case's self-departure process is stored with (the
//! `departures.state` column): shared by the case store, which ends a
//! process when it closes a case, and by the process itself.

/// Waiting for the confirmations and the union item.
pub const COLLECTING: &str = "collecting";
/// The employee checked in: nothing goes out until HR decides.
pub const HALTED: &str = "halted";
/// The termination notice went out; the case is closed.
pub const TERMINATED: &str = "terminated";
/// The case was closed otherwise (`/resolve`, leave): nothing went out.
pub const CANCELLED: &str = "cancelled";
