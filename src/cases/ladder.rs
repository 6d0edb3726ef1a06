//! The ladder policy and the pure decision function.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::status::CaseStatus;

/// The steps of the default ladder. Stored as strings, never as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Day 1: a reminder card to the employee.
    FirstReminder,
    /// Day 2: a second reminder, and a card to the manager.
    SecondReminder,
    /// Day 3: the formal return-to-work notice (返岗通知书).
    FormalNotice,
    /// The deadline of the formal notice has passed: HR is asked to decide.
    DeadlinePassed,
}

impl Step {
    /// The name used in idempotency keys and templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::FirstReminder => "first_reminder",
            Step::SecondReminder => "second_reminder",
            Step::FormalNotice => "formal_notice",
            Step::DeadlinePassed => "deadline_passed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    Employee,
    Manager,
    Hr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Chat,
    Sms,
    Email,
}

/// When a rung is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "when")]
pub enum Trigger {
    /// After this many consecutive missed workdays.
    MissedWorkdays { days: u32 },
    /// When the formal notice's deadline has passed.
    NoticeDeadline,
}

/// One rung: a step, when it is due, and who gets it on which channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    pub step: Step,
    pub trigger: Trigger,
    pub send: Vec<(Recipient, Channel)>,
}

/// The ladder in force. Snapshotted onto a case when it opens: later edits
/// apply to new cases only, and the case file shows the rules that applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Shown in notices and the case file ("the rule and its version").
    pub version: String,
    pub rungs: Vec<Rung>,
    /// Days from sending the formal notice until it is taken as received.
    pub expected_receipt_days: i64,
    /// Days after expected receipt to return or explain.
    pub deadline_days: i64,
}

impl Default for Policy {
    fn default() -> Self {
        use Channel::*;
        use Recipient::*;
        Policy {
            version: "default-1".into(),
            rungs: vec![
                Rung {
                    step: Step::FirstReminder,
                    trigger: Trigger::MissedWorkdays { days: 1 },
                    send: vec![(Employee, Chat)],
                },
                Rung {
                    step: Step::SecondReminder,
                    trigger: Trigger::MissedWorkdays { days: 2 },
                    send: vec![(Employee, Chat), (Manager, Chat)],
                },
                Rung {
                    step: Step::FormalNotice,
                    trigger: Trigger::MissedWorkdays { days: 3 },
                    send: vec![
                        (Employee, Chat),
                        (Employee, Sms),
                        (Employee, Email),
                        (Manager, Chat),
                        (Hr, Chat),
                    ],
                },
                Rung {
                    step: Step::DeadlinePassed,
                    trigger: Trigger::NoticeDeadline,
                    send: vec![(Hr, Chat)],
                },
            ],
            expected_receipt_days: 0,
            deadline_days: 3,
        }
    }
}

impl Policy {
    /// When a formal notice proven received at `received_at` must have been
    /// answered: `deadline_days` after, plus `expected_receipt_days` (meant
    /// for a notice deemed delivered to an agreed address, see
    /// `cases::store::establish_receipt`; 0 by default, and
    /// added to a proven receipt too, so a tenant that set it never gets a
    /// shorter deadline than it asked for).
    pub fn deadline(&self, received_at: DateTime<Utc>) -> DateTime<Utc> {
        received_at + Duration::days(self.expected_receipt_days + self.deadline_days)
    }
}

/// What `decide` needs to know about a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseState {
    pub status: CaseStatus,
    /// Consecutive missed workdays so far.
    pub missed_workdays: u32,
    /// Steps already issued (their outbox rows exist).
    pub steps_done: BTreeSet<Step>,
    /// When the employee's copy of the formal notice was first proven
    /// received (acknowledged, or read where the platform says): the
    /// deadline runs from it. A notice nobody can prove arrived starts no
    /// deadline, so no deadline card and no 自离.
    pub receipt_at: Option<DateTime<Utc>>,
    /// When the employee acknowledged the formal notice (saw it; this does
    /// not resolve the case).
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// A notice that is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Notify {
        step: Step,
        recipient: Recipient,
        channel: Channel,
    },
}

/// The notices due at `now` for `case` under `policy`: every rung whose
/// trigger holds and that was not issued yet, in ladder order. Nothing for a
/// paused or resolved case.
pub fn decide(now: DateTime<Utc>, case: &CaseState, policy: &Policy) -> Vec<Action> {
    if case.status != CaseStatus::Open {
        return Vec::new();
    }
    policy
        .rungs
        .iter()
        .filter(|rung| !case.steps_done.contains(&rung.step))
        .filter(|rung| match rung.trigger {
            Trigger::MissedWorkdays { days } => case.missed_workdays >= days,
            Trigger::NoticeDeadline => case
                .receipt_at
                .is_some_and(|received| now >= policy.deadline(received)),
        })
        .flat_map(|rung| {
            rung.send
                .iter()
                .map(|&(recipient, channel)| Action::Notify {
                    step: rung.step,
                    recipient,
                    channel,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Channel::*;
    use Recipient::*;
    use Step::*;
    use rstest::rstest;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn case(status: CaseStatus, missed: u32, done: &[Step], notice: Option<&str>) -> CaseState {
        CaseState {
            status,
            missed_workdays: missed,
            steps_done: done.iter().copied().collect(),
            receipt_at: notice.map(at),
            acknowledged_at: None,
        }
    }

    fn steps(actions: &[Action]) -> Vec<(Step, Recipient, Channel)> {
        actions
            .iter()
            .map(
                |Action::Notify {
                     step,
                     recipient,
                     channel,
                 }| (*step, *recipient, *channel),
            )
            .collect()
    }

    const NOW: &str = "2026-11-26T02:00:00Z";

    #[rstest]
    #[case::no_absence(CaseStatus::Open, 0, &[], None, &[])]
    #[case::day_one(CaseStatus::Open, 1, &[], None, &[(FirstReminder, Employee, Chat)])]
    #[case::day_one_again(CaseStatus::Open, 1, &[FirstReminder], None, &[])]
    #[case::day_two(CaseStatus::Open, 2, &[FirstReminder], None, &[(SecondReminder, Employee, Chat), (SecondReminder, Manager, Chat)])]
    #[case::day_three(CaseStatus::Open, 3, &[FirstReminder, SecondReminder], None, &[
        (FormalNotice, Employee, Chat), (FormalNotice, Employee, Sms), (FormalNotice, Employee, Email),
        (FormalNotice, Manager, Chat), (FormalNotice, Hr, Chat)])]
    // After downtime the scan may find three missed days at once: every rung due, in order.
    #[case::catch_up(CaseStatus::Open, 3, &[], None, &[
        (FirstReminder, Employee, Chat), (SecondReminder, Employee, Chat), (SecondReminder, Manager, Chat),
        (FormalNotice, Employee, Chat), (FormalNotice, Employee, Sms), (FormalNotice, Employee, Email),
        (FormalNotice, Manager, Chat), (FormalNotice, Hr, Chat)])]
    #[case::before_deadline(CaseStatus::Open, 4, &[FirstReminder, SecondReminder, FormalNotice], Some("2026-11-23T03:00:00Z"), &[])]
    #[case::deadline_passed(CaseStatus::Open, 5, &[FirstReminder, SecondReminder, FormalNotice], Some("2026-11-23T02:00:00Z"), &[(DeadlinePassed, Hr, Chat)])]
    // A notice nobody can prove arrived starts no deadline, however long ago it went out.
    #[case::notice_never_received(CaseStatus::Open, 9, &[FirstReminder, SecondReminder, FormalNotice], None, &[])]
    #[case::deadline_done(CaseStatus::Open, 6, &[FirstReminder, SecondReminder, FormalNotice, DeadlinePassed], Some("2026-11-20T02:00:00Z"), &[])]
    #[case::paused(CaseStatus::Paused, 3, &[FirstReminder], None, &[])]
    #[case::departing(CaseStatus::Departing, 6, &[FirstReminder, SecondReminder, FormalNotice, DeadlinePassed], Some("2026-11-20T02:00:00Z"), &[])]
    #[case::departing_before_the_deadline_card(CaseStatus::Departing, 6, &[FirstReminder, SecondReminder, FormalNotice], Some("2026-11-20T02:00:00Z"), &[])]
    #[case::resolved(CaseStatus::Resolved, 3, &[], None, &[])]
    #[case::resolved_after_deadline(CaseStatus::Resolved, 6, &[FirstReminder, SecondReminder, FormalNotice], Some("2026-11-20T02:00:00Z"), &[])]
    fn the_default_ladder(
        #[case] status: CaseStatus,
        #[case] missed: u32,
        #[case] done: &[Step],
        #[case] notice: Option<&str>,
        #[case] expected: &[(Step, Recipient, Channel)],
    ) {
        let got = decide(
            at(NOW),
            &case(status, missed, done, notice),
            &Policy::default(),
        );
        assert_eq!(steps(&got), expected);
    }

    #[test]
    fn acknowledging_does_not_stop_the_deadline() {
        let mut c = case(
            CaseStatus::Open,
            5,
            &[FirstReminder, SecondReminder, FormalNotice],
            Some("2026-11-20T02:00:00Z"),
        );
        c.acknowledged_at = Some(at("2026-11-20T05:00:00Z"));
        assert_eq!(
            steps(&decide(at(NOW), &c, &Policy::default())),
            [(DeadlinePassed, Hr, Chat)]
        );
    }

    #[test]
    fn the_deadline_counts_expected_receipt() {
        let policy = Policy {
            expected_receipt_days: 2,
            ..Policy::default()
        };
        let c = case(
            CaseStatus::Open,
            5,
            &[FirstReminder, SecondReminder, FormalNotice],
            Some("2026-11-22T02:00:00Z"),
        );
        assert!(
            decide(at(NOW), &c, &policy).is_empty(),
            "received 11-24, deadline 11-27"
        );
        assert_eq!(decide(at("2026-11-27T02:00:00Z"), &c, &policy).len(), 1);
    }

    #[test]
    fn a_policy_round_trips_through_json_for_the_snapshot() {
        let p = Policy::default();
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.contains("\"first_reminder\"") && json.contains("\"missed_workdays\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
    }
}
