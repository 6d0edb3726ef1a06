//! The states a case and its self-departure process are stored with (the
//! `absence_cases.status` and `departures.state` columns): shared by the
//! ladder, the case store, the scan and the self-departure process. The
//! database keeps the words; Rust code compares these enums.

use std::fmt;
use std::str::FromStr;

use entity::{absence_case, departure};
use serde::{Deserialize, Serialize};

/// A stored state that is none of the words rollcall writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state `{0}`")]
pub struct UnknownState(pub String);

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    Open,
    /// The employee replied: the ladder waits for HR.
    Paused,
    /// HR started the self-departure (自离) process: the ladder has stopped;
    /// the process (`cases::departure`) decides what is sent next.
    Departing,
    /// Back at work, on approved leave, closed by HR, or terminated.
    Resolved,
}

impl CaseStatus {
    /// The word stored in `absence_cases.status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Open => "open",
            CaseStatus::Paused => "paused",
            CaseStatus::Departing => "departing",
            CaseStatus::Resolved => "resolved",
        }
    }

    /// The status of a stored case (`None`: a word rollcall does not write).
    pub fn of(case: &absence_case::Model) -> Option<CaseStatus> {
        case.status.parse().ok()
    }
}

impl FromStr for CaseStatus {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(CaseStatus::Open),
            "paused" => Ok(CaseStatus::Paused),
            "departing" => Ok(CaseStatus::Departing),
            "resolved" => Ok(CaseStatus::Resolved),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

impl fmt::Display for CaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a self-departure process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepartureState {
    /// Waiting for the confirmations and the union item.
    Collecting,
    /// The employee checked in: nothing goes out until HR decides.
    Halted,
    /// The termination notice went out; the case is closed.
    Terminated,
    /// The case was closed otherwise (`/resolve`, leave): nothing went out.
    Cancelled,
}

impl DepartureState {
    /// The word stored in `departures.state`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DepartureState::Collecting => "collecting",
            DepartureState::Halted => "halted",
            DepartureState::Terminated => "terminated",
            DepartureState::Cancelled => "cancelled",
        }
    }

    /// The state of a stored process (`None`: a word rollcall does not write).
    pub fn of(process: &departure::Model) -> Option<DepartureState> {
        process.state.parse().ok()
    }
}

impl FromStr for DepartureState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "collecting" => Ok(DepartureState::Collecting),
            "halted" => Ok(DepartureState::Halted),
            "terminated" => Ok(DepartureState::Terminated),
            "cancelled" => Ok(DepartureState::Cancelled),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

impl fmt::Display for DepartureState {
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
            CaseStatus::Open,
            CaseStatus::Paused,
            CaseStatus::Departing,
            CaseStatus::Resolved,
        ] {
            assert_eq!(s.as_str().parse::<CaseStatus>(), Ok(s));
        }
        for s in [
            DepartureState::Collecting,
            DepartureState::Halted,
            DepartureState::Terminated,
            DepartureState::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<DepartureState>(), Ok(s));
        }
        assert!("closed".parse::<CaseStatus>().is_err());
    }
}
