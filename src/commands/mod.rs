//! HR, manager and employee chat commands: one enum is the parser and the
//! exhaustive `match`; permissions are a pure function of the sender's role
//! and the command's subject. (Handlers and the help text, rendered from
//! `bot-templates/`, come with the ladder issue.)

pub mod handle;

use chrono::NaiveDate;

/// A command sent to the bot in chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/help`, `/帮助`
    Help,
    /// `/status <name|user_id>`, `/状态`: with no subject, the sender.
    Status { who: Option<String> },
    /// `/cases`, `/案件`: open cases.
    Cases,
    /// `/leave <who> <from> <to> <reason>`, `/请假`
    Leave {
        who: String,
        from: NaiveDate,
        to: NaiveDate,
        reason: String,
    },
    /// `/resolve <case> <reason>`, `/结案`
    Resolve { case: String, reason: String },
    /// `/resume <case>`, `/继续`: a paused case's ladder goes on (HR read
    /// the employee's answer and found no reason to stop).
    Resume { case: String },
}

/// The commands, their names and Chinese aliases, for parsing and help.
pub const COMMANDS: &[(&str, &str)] = &[
    ("help", "帮助"),
    ("status", "状态"),
    ("cases", "案件"),
    ("leave", "请假"),
    ("resolve", "结案"),
    ("resume", "继续"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a command")]
    NotACommand,
    #[error("unknown command `{0}`")]
    Unknown(String),
    #[error("`/{command}` needs <{argument}>")]
    Missing {
        command: &'static str,
        argument: &'static str,
    },
    #[error("`{0}` is not a date (use YYYY-MM-DD)")]
    BadDate(String),
    #[error("the leave ends ({to}) before it starts ({from})")]
    DateOrder { from: NaiveDate, to: NaiveDate },
}

fn date(text: &str) -> Result<NaiveDate, ParseError> {
    let normal = text.replace(['/', '.'], "-");
    NaiveDate::parse_from_str(&normal, "%Y-%m-%d").map_err(|_| ParseError::BadDate(text.to_owned()))
}

/// Parses a chat message. Only text starting with `/` (or the full-width
/// `／` of Chinese keyboards) is a command, so "我在请假" stays a message.
pub fn parse(text: &str) -> Result<Command, ParseError> {
    let text = text.trim();
    let body = text
        .strip_prefix('/')
        .or_else(|| text.strip_prefix('／'))
        .ok_or(ParseError::NotACommand)?;
    let mut words = body.split_whitespace();
    let name = words.next().ok_or(ParseError::NotACommand)?;
    let canonical = COMMANDS
        .iter()
        .find(|(en, zh)| name.eq_ignore_ascii_case(en) || name == *zh)
        .map(|(en, _)| *en)
        .ok_or_else(|| ParseError::Unknown(name.to_owned()))?;
    let mut need = |argument: &'static str| {
        words.next().ok_or(ParseError::Missing {
            command: canonical,
            argument,
        })
    };
    let command = match canonical {
        "help" => Command::Help,
        "status" => Command::Status {
            who: words.next().map(str::to_owned),
        },
        "cases" => Command::Cases,
        "leave" => {
            let who = need("who")?.to_owned();
            let from = date(need("from")?)?;
            let to = date(need("to")?)?;
            let reason = need("reason")?.to_owned();
            if to < from {
                return Err(ParseError::DateOrder { from, to });
            }
            let rest: Vec<&str> = words.collect();
            let reason = if rest.is_empty() {
                reason
            } else {
                format!("{reason} {}", rest.join(" "))
            };
            Command::Leave {
                who,
                from,
                to,
                reason,
            }
        }
        "resolve" => {
            let case = need("case")?.to_owned();
            let reason = need("reason")?.to_owned();
            let rest: Vec<&str> = words.collect();
            let reason = if rest.is_empty() {
                reason
            } else {
                format!("{reason} {}", rest.join(" "))
            };
            Command::Resolve { case, reason }
        }
        "resume" => Command::Resume {
            case: need("case")?.to_owned(),
        },
        _ => unreachable!("every name in COMMANDS has an arm"),
    };
    Ok(command)
}

/// The sender's role in the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Employee,
    Manager,
    Hr,
}

/// Who a command is about, relative to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// No one in particular (`/help`, `/cases`).
    None,
    /// The sender.
    Themself,
    /// One of the sender's reports.
    Report,
    /// Anyone else.
    Other,
}

/// HR may do everything; a manager, anything about their reports (and
/// `/help`, `/cases` for their reports); an employee, `/help` and `/status`
/// for themself. Everyone else gets a polite refusal.
pub fn allowed(role: Role, command: &Command, subject: Subject) -> bool {
    match role {
        Role::Hr => true,
        Role::Manager => match command {
            Command::Help | Command::Cases => true,
            Command::Status { .. } => matches!(subject, Subject::Themself | Subject::Report),
            // Never about their own case or leave: that is HR's.
            Command::Leave { .. } | Command::Resolve { .. } | Command::Resume { .. } => {
                subject == Subject::Report
            }
        },
        Role::Employee => match command {
            Command::Help => true,
            Command::Status { .. } => subject == Subject::Themself,
            Command::Cases
            | Command::Leave { .. }
            | Command::Resolve { .. }
            | Command::Resume { .. } => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[rstest]
    #[case("/help", Command::Help)]
    #[case("/帮助", Command::Help)]
    #[case("  /HELP ", Command::Help)]
    #[case("／帮助", Command::Help)]
    #[case("/status", Command::Status { who: None })]
    #[case("/状态 张三", Command::Status { who: Some("张三".into()) })]
    #[case("/cases", Command::Cases)]
    #[case("/案件", Command::Cases)]
    #[case("/请假 张三 2026-11-26 2026/11/27 病假", Command::Leave { who: "张三".into(), from: d("2026-11-26"), to: d("2026-11-27"), reason: "病假".into() })]
    #[case("/leave zhangsan 2026-11-26 2026-11-26 family matter", Command::Leave { who: "zhangsan".into(), from: d("2026-11-26"), to: d("2026-11-26"), reason: "family matter".into() })]
    #[case("/结案 C-42 已返岗", Command::Resolve { case: "C-42".into(), reason: "已返岗".into() })]
    #[case("/继续 RC-000042", Command::Resume { case: "RC-000042".into() })]
    #[case("/resume 42", Command::Resume { case: "42".into() })]
    fn parses(#[case] text: &str, #[case] expected: Command) {
        assert_eq!(parse(text), Ok(expected));
    }

    #[rstest]
    #[case("我在请假", ParseError::NotACommand)]
    #[case("打卡", ParseError::NotACommand)]
    #[case("/", ParseError::NotACommand)]
    #[case("/打卡", ParseError::Unknown("打卡".into()))]
    #[case("/请假 张三 2026-11-26", ParseError::Missing { command: "leave", argument: "to" })]
    #[case("/请假 张三 2026-11-26 2026-11-27", ParseError::Missing { command: "leave", argument: "reason" })]
    #[case("/请假 张三 明天 后天 病假", ParseError::BadDate("明天".into()))]
    #[case("/请假 张三 2026-11-27 2026-11-26 病假", ParseError::DateOrder { from: d("2026-11-27"), to: d("2026-11-26") })]
    #[case("/结案 C-42", ParseError::Missing { command: "resolve", argument: "reason" })]
    fn refuses(#[case] text: &str, #[case] expected: ParseError) {
        assert_eq!(parse(text), Err(expected));
    }

    #[rstest]
    #[case(Role::Hr, "/resolve C-1 ok", Subject::Other, true)]
    #[case(Role::Hr, "/leave x 2026-01-05 2026-01-05 y", Subject::Other, true)]
    #[case(Role::Manager, "/status", Subject::Report, true)]
    #[case(Role::Manager, "/status", Subject::Other, false)]
    #[case(
        Role::Manager,
        "/leave x 2026-01-05 2026-01-05 y",
        Subject::Report,
        true
    )]
    #[case(
        Role::Manager,
        "/leave x 2026-01-05 2026-01-05 y",
        Subject::Themself,
        false
    )]
    #[case(Role::Manager, "/resolve C-1 ok", Subject::Report, true)]
    #[case(Role::Manager, "/resolve C-1 ok", Subject::Other, false)]
    #[case(Role::Manager, "/cases", Subject::None, true)]
    #[case(Role::Employee, "/status", Subject::Themself, true)]
    #[case(Role::Employee, "/status 李四", Subject::Other, false)]
    #[case(Role::Employee, "/cases", Subject::None, false)]
    #[case(
        Role::Employee,
        "/leave x 2026-01-05 2026-01-05 y",
        Subject::Themself,
        false
    )]
    #[case(Role::Employee, "/help", Subject::None, true)]
    fn permissions(
        #[case] role: Role,
        #[case] text: &str,
        #[case] subject: Subject,
        #[case] ok: bool,
    ) {
        assert_eq!(allowed(role, &parse(text).unwrap(), subject), ok);
    }
}
