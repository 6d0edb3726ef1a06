//! The states a case and its self-departure process are stored with (the
//! `absence_cases.status` and `departures.state` columns): shared by the
//! ladder, the case store, the scan and the self-departure process. The
//! database keeps the words (`as_str`, and `parse` back); Rust code
//! compares these enums.

use entity::{absence_case, departure};
use serde::{Deserialize, Serialize};

/// Where a case stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The status of a stored case (`None`: a word rollcall does not write).
    pub fn of(case: &absence_case::Model) -> Option<CaseStatus> {
        case.status.parse().ok()
    }
}

/// Where a self-departure process stands.
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
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The state of a stored process (`None`: a word rollcall does not write).
    pub fn of(process: &departure::Model) -> Option<DepartureState> {
        process.state.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn the_stored_words_read_back() {
        let words: Vec<&str> = CaseStatus::iter().map(CaseStatus::as_str).collect();
        assert_eq!(words, ["open", "paused", "departing", "resolved"]);
        for s in CaseStatus::iter() {
            assert_eq!(s.as_str().parse::<CaseStatus>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
            // The serde name is the stored word.
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let words: Vec<&str> = DepartureState::iter().map(DepartureState::as_str).collect();
        assert_eq!(words, ["collecting", "halted", "terminated", "cancelled"]);
        for s in DepartureState::iter() {
            assert_eq!(s.as_str().parse::<DepartureState>(), Ok(s));
        }
        assert!("Open".parse::<CaseStatus>().is_err());
        assert!("".parse::<DepartureState>().is_err());
    }
}
