//! HR, manager and employee chat commands: one enum is the parser and the
//! exhaustive `match`; permissions are a pure function of the sender's role
//! and the command's subject. Handlers are in [`handle`]; the help text and
//! the answers are rendered from `bot-templates/command.j2`. The caption
//! `#证据 <who> <说明>` that precedes evidence files is parsed here too.

pub mod handle;

use chrono::NaiveDate;

use crate::attendance::sheet::Month;
use crate::cases::departure::UnionNotice;
use crate::cases::post::{LetterKind, tracking_number};
use crate::employees::Role;

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
    /// the employee's answer and found no reason to stop); a self-departure
    /// process halted by the employee's check-in goes on (HR decided).
    Resume { case: String },
    /// `/depart <who>`, `/自离`: HR starts the self-departure process once the
    /// formal notice's deadline has passed.
    Depart { who: String },
    /// `/evidence <who>`, `/证据`: the files filed on that person's case.
    Evidence { who: String },
    /// `/union <who> <已通知|无工会> [note]`, `/工会`: HR records that the
    /// union was told the reasons before the termination (劳动合同法 art. 43),
    /// or that there is no union.
    Union {
        who: String,
        notice: UnionNotice,
        note: Option<String>,
    },
    /// `/export <who> [case]`, `/导出`: HR gets that person's evidence
    /// package (of one case, or of everything) through a one-time link.
    Export { who: String, case: Option<String> },
    /// `/announce <who> <date> <where…>`, `/公告`: HR records that the formal
    /// notice was published (公告送达) on that date, where (a newspaper, the
    /// site's notice board, a link), when every channel failed; it counts as
    /// delivered 30 days later. The photo or scan goes in with `#证据`.
    Announce {
        who: String,
        published_on: NaiveDate,
        place: String,
    },
    /// `/post …`, `/邮政`: HR records a notice sent by registered mail (see
    /// [`PostAction`]).
    Post(PostAction),
    /// `/report 考勤 [YYYY-MM]`, `/报表`: HR gets the month's attendance
    /// sheet (default: this month so far) through a one-time link.
    Report { month: Option<Month> },
    /// `/reasons`, `/离职原因`: HR sees why people left, by reason,
    /// department and month.
    Reasons,
    /// `/docs <who> [tag]`, `/档案`: the documents archived for a person
    /// (with `#合同`, `#员工手册`, `#奖惩`, `#考勤报表`).
    Docs { who: String, tag: Option<String> },
    /// `/history <who>`, `/履历`: a person's history (attendance anomalies
    /// by month, cases, rewards and punishments, documents) as a message,
    /// and as a printable page through a one-time link.
    History { who: String },
    /// `/risk`, `/风险`: HR sees the highest risk scores, every factor shown.
    Risk,
    /// `/onboard <who>`, `/入职`: HR starts (or starts again) a person's
    /// onboarding dialog.
    Onboard { who: String },
}

/// What `/post` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostAction {
    /// `/post 邮寄 <who> <单号> [返岗|解除]`: the letter (the formal notice,
    /// or with 解除 the termination notice) went out under that number.
    Mailed {
        who: String,
        tracking_no: String,
        kind: LetterKind,
    },
    /// `/post 签收 <单号> <date>`: the addressee signed for it that day.
    Signed { tracking_no: String, on: NaiveDate },
    /// `/post 退回 <单号> <date> [why]`: it came back undelivered.
    Returned {
        tracking_no: String,
        on: NaiveDate,
        note: Option<String>,
    },
}

/// The words `/post` takes for its <action>.
pub const POST_ACTIONS: &[&str] = &["邮寄", "签收", "退回"];

/// The words `/post 邮寄` takes for the letter, first the default.
pub const LETTER_CHOICES: &[(&str, LetterKind)] = &[
    ("返岗", LetterKind::FormalNotice),
    ("解除", LetterKind::TerminationNotice),
];

/// The commands, their names and Chinese aliases, for parsing and help.
pub const COMMANDS: &[(&str, &str)] = &[
    ("help", "帮助"),
    ("status", "状态"),
    ("cases", "案件"),
    ("leave", "请假"),
    ("resolve", "结案"),
    ("resume", "继续"),
    ("depart", "自离"),
    ("evidence", "证据"),
    ("union", "工会"),
    ("export", "导出"),
    ("announce", "公告"),
    ("post", "邮政"),
    ("report", "报表"),
    ("reasons", "离职原因"),
    ("docs", "档案"),
    ("history", "履历"),
    ("risk", "风险"),
    ("onboard", "入职"),
];

/// The words `/report` takes for its <kind>.
pub const REPORT_KINDS: &[&str] = &["考勤", "attendance"];

/// The words `/union` takes for its <notice>, first the ones help shows.
pub const UNION_CHOICES: &[(&str, UnionNotice)] = &[
    ("已通知", UnionNotice::Notified),
    ("无工会", UnionNotice::NoUnion),
    ("通知", UnionNotice::Notified),
    ("无", UnionNotice::NoUnion),
    ("notified", UnionNotice::Notified),
    ("none", UnionNotice::NoUnion),
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
    #[error("`{0}` is not a month (use YYYY-MM)")]
    BadMonth(String),
    #[error("`{0}` is not a tracking number (5 to 40 letters, digits or -)")]
    BadTracking(String),
    #[error("`/{command}` <{argument}> cannot be `{text}`")]
    BadChoice {
        command: &'static str,
        argument: &'static str,
        text: String,
    },
}

/// `#证据 <who> [说明]`: the files its sender sends next are filed on that
/// person's case with this caption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caption {
    pub who: String,
    pub text: String,
}

/// The tag that starts a caption, after `#` (or the full-width `＃`).
pub const CAPTION_TAG: &str = "证据";

/// `#合同 <who> [说明]` (or another archive tag): the files its sender sends
/// next are that person's documents with the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveCaption {
    pub tag: &'static str,
    pub who: String,
    pub note: String,
}

/// The archive tags with their `#`, as errors name them.
const ARCHIVE_HASHTAGS: [&str; 4] = ["#合同", "#员工手册", "#奖惩", "#考勤报表"];

/// Parses an archive caption: `None` if the text does not start with one
/// of the tags followed by a space or its end.
pub fn parse_archive_caption(text: &str) -> Option<Result<ArchiveCaption, ParseError>> {
    let text = text.trim();
    let body = text.strip_prefix('#').or_else(|| text.strip_prefix('＃'))?;
    let (i, tag) = crate::hr::archive::TAGS.iter().enumerate().find(|(_, t)| {
        body.strip_prefix(**t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
    })?;
    let rest = body[tag.len()..].trim();
    if rest.is_empty() {
        return Some(Err(ParseError::Missing {
            command: ARCHIVE_HASHTAGS[i],
            argument: "who",
        }));
    }
    let (who, note) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    Some(Ok(ArchiveCaption {
        tag,
        who: who.to_owned(),
        note: note.trim().to_owned(),
    }))
}

/// Parses a caption. `None` if the text is not one (it does not start with
/// `#证据` followed by a space or its end), so "#证据材料" stays a message.
pub fn parse_caption(text: &str) -> Option<Result<Caption, ParseError>> {
    let text = text.trim();
    let rest = text
        .strip_prefix('#')
        .or_else(|| text.strip_prefix('＃'))?
        .strip_prefix(CAPTION_TAG)?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim();
    if rest.is_empty() {
        return Some(Err(ParseError::Missing {
            command: "#证据",
            argument: "who",
        }));
    }
    let (who, caption) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    Some(Ok(Caption {
        who: who.to_owned(),
        text: caption.trim().to_owned(),
    }))
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
        "depart" => Command::Depart {
            who: need("who")?.to_owned(),
        },
        "evidence" => Command::Evidence {
            who: need("who")?.to_owned(),
        },
        "union" => {
            let who = need("who")?.to_owned();
            let word = need("notice")?;
            let notice = UNION_CHOICES
                .iter()
                .find(|(w, _)| word.eq_ignore_ascii_case(w))
                .map(|(_, n)| *n)
                .ok_or_else(|| ParseError::BadChoice {
                    command: "union",
                    argument: "notice",
                    text: word.to_owned(),
                })?;
            let rest: Vec<&str> = words.collect();
            Command::Union {
                who,
                notice,
                note: (!rest.is_empty()).then(|| rest.join(" ")),
            }
        }
        "export" => Command::Export {
            who: need("who")?.to_owned(),
            case: words.next().map(str::to_owned),
        },
        "announce" => {
            let who = need("who")?.to_owned();
            let published_on = date(need("date")?)?;
            let place = need("where")?.to_owned();
            let rest: Vec<&str> = words.collect();
            let place = if rest.is_empty() {
                place
            } else {
                format!("{place} {}", rest.join(" "))
            };
            Command::Announce {
                who,
                published_on,
                place,
            }
        }
        "post" => {
            let action = need("action")?;
            let tracking = |words: &mut std::str::SplitWhitespace<'_>| {
                let text = words.next().ok_or(ParseError::Missing {
                    command: "post",
                    argument: "tracking_no",
                })?;
                tracking_number(text).ok_or_else(|| ParseError::BadTracking(text.to_owned()))
            };
            match action {
                "邮寄" | "mailed" => {
                    let who = words
                        .next()
                        .ok_or(ParseError::Missing {
                            command: "post",
                            argument: "who",
                        })?
                        .to_owned();
                    let tracking_no = tracking(&mut words)?;
                    let kind = match words.next() {
                        None => LetterKind::FormalNotice,
                        Some(word) => LETTER_CHOICES
                            .iter()
                            .find(|(w, _)| *w == word)
                            .map(|(_, k)| *k)
                            .ok_or_else(|| ParseError::BadChoice {
                                command: "post",
                                argument: "letter",
                                text: word.to_owned(),
                            })?,
                    };
                    Command::Post(PostAction::Mailed {
                        who,
                        tracking_no,
                        kind,
                    })
                }
                "签收" | "signed" | "退回" | "returned" => {
                    let tracking_no = tracking(&mut words)?;
                    let on = date(words.next().ok_or(ParseError::Missing {
                        command: "post",
                        argument: "date",
                    })?)?;
                    let rest: Vec<&str> = words.collect();
                    if matches!(action, "签收" | "signed") {
                        Command::Post(PostAction::Signed { tracking_no, on })
                    } else {
                        Command::Post(PostAction::Returned {
                            tracking_no,
                            on,
                            note: (!rest.is_empty()).then(|| rest.join(" ")),
                        })
                    }
                }
                other => {
                    return Err(ParseError::BadChoice {
                        command: "post",
                        argument: "action",
                        text: other.to_owned(),
                    });
                }
            }
        }
        "report" => {
            let kind = need("kind")?;
            if !REPORT_KINDS.iter().any(|k| kind.eq_ignore_ascii_case(k)) {
                return Err(ParseError::BadChoice {
                    command: "report",
                    argument: "kind",
                    text: kind.to_owned(),
                });
            }
            let month = match words.next() {
                None => None,
                Some(text) => {
                    Some(Month::parse(text).ok_or_else(|| ParseError::BadMonth(text.to_owned()))?)
                }
            };
            Command::Report { month }
        }
        "reasons" => Command::Reasons,
        "risk" => Command::Risk,
        "onboard" => Command::Onboard {
            who: need("who")?.to_owned(),
        },
        "docs" => {
            let who = need("who")?.to_owned();
            let tag = match words.next() {
                None => None,
                Some(t) => {
                    let t = t.trim_start_matches(['#', '＃']);
                    if !crate::hr::archive::TAGS.contains(&t) {
                        return Err(ParseError::BadChoice {
                            command: "docs",
                            argument: "tag",
                            text: t.to_owned(),
                        });
                    }
                    Some(t.to_owned())
                }
            };
            Command::Docs { who, tag }
        }
        "history" => Command::History {
            who: need("who")?.to_owned(),
        },
        _ => unreachable!("every name in COMMANDS has an arm"),
    };
    Ok(command)
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
/// `/help`, `/cases` for their reports) except the self-departure decisions
/// (`/depart`, `/union`), which are HR's; an employee, `/help` and `/status`
/// for themself. Everyone else gets a polite refusal.
pub fn allowed(role: Role, command: &Command, subject: Subject) -> bool {
    match role {
        // Never about their own case or leave: someone else in HR decides.
        Role::Hr => {
            !(subject == Subject::Themself
                && matches!(
                    command,
                    Command::Leave { .. }
                        | Command::Resolve { .. }
                        | Command::Resume { .. }
                        | Command::Depart { .. }
                        | Command::Union { .. }
                        | Command::Announce { .. }
                        | Command::Post(_)
                ))
        }
        Role::Manager => match command {
            Command::Help | Command::Cases => true,
            Command::Status { .. } => matches!(subject, Subject::Themself | Subject::Report),
            // Never about their own case or leave: that is HR's.
            Command::Leave { .. }
            | Command::Resolve { .. }
            | Command::Resume { .. }
            | Command::Evidence { .. } => subject == Subject::Report,
            // A package holds a person's whole file: HR's to hand out.
            Command::Depart { .. }
            | Command::Union { .. }
            | Command::Export { .. }
            | Command::Announce { .. }
            | Command::Post(_)
            // Everyone's month, everyone's reasons: HR's.
            | Command::Report { .. }
            | Command::Reasons
            | Command::Risk
            | Command::Onboard { .. } => false,
            // A report's file and history, as for `/evidence`.
            Command::Docs { .. } | Command::History { .. } => subject == Subject::Report,
        },
        Role::Employee => match command {
            Command::Help => true,
            Command::Status { .. } => subject == Subject::Themself,
            Command::Cases
            | Command::Leave { .. }
            | Command::Resolve { .. }
            | Command::Resume { .. }
            | Command::Depart { .. }
            | Command::Evidence { .. }
            | Command::Union { .. }
            | Command::Export { .. }
            | Command::Announce { .. }
            | Command::Post(_)
            | Command::Report { .. }
            | Command::Reasons
            | Command::Risk
            | Command::Onboard { .. }
            | Command::Docs { .. }
            | Command::History { .. } => false,
        },
    }
}

/// Who may file evidence on a person's case with `#证据`: HR, or the
/// person's manager.
pub fn may_file_evidence(role: Role, subject: Subject) -> bool {
    match role {
        Role::Hr => true,
        Role::Manager => subject == Subject::Report,
        Role::Employee => false,
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
    #[case("/自离 张三", Command::Depart { who: "张三".into() })]
    #[case("/depart zhangsan", Command::Depart { who: "zhangsan".into() })]
    #[case("／自离 张三 多余", Command::Depart { who: "张三".into() })]
    #[case("/证据 张三", Command::Evidence { who: "张三".into() })]
    #[case("/导出 张三", Command::Export { who: "张三".into(), case: None })]
    #[case("/export zhangsan RC-000002", Command::Export { who: "zhangsan".into(), case: Some("RC-000002".into()) })]
    #[case("/EVIDENCE zhangsan", Command::Evidence { who: "zhangsan".into() })]
    #[case("/工会 张三 已通知 书面通知工会主席 李某", Command::Union { who: "张三".into(), notice: UnionNotice::Notified, note: Some("书面通知工会主席 李某".into()) })]
    #[case("/union zhangsan none", Command::Union { who: "zhangsan".into(), notice: UnionNotice::NoUnion, note: None })]
    #[case("/工会 张三 无工会", Command::Union { who: "张三".into(), notice: UnionNotice::NoUnion, note: None })]
    #[case("/公告 张三 2026-12-10 《新民晚报》第 8 版", Command::Announce { who: "张三".into(), published_on: NaiveDate::from_ymd_opt(2026, 12, 10).unwrap(), place: "《新民晚报》第 8 版".into() })]
    #[case("/union 张三 Notified 2026-12-08", Command::Union { who: "张三".into(), notice: UnionNotice::Notified, note: Some("2026-12-08".into()) })]
    #[case("/post 邮寄 张三 ea123456789cn", Command::Post(PostAction::Mailed { who: "张三".into(), tracking_no: "EA123456789CN".into(), kind: LetterKind::FormalNotice }))]
    #[case("/邮政 邮寄 张三 1234567890123 解除", Command::Post(PostAction::Mailed { who: "张三".into(), tracking_no: "1234567890123".into(), kind: LetterKind::TerminationNotice }))]
    #[case("/post 签收 EA123456789CN 2026/12/10", Command::Post(PostAction::Signed { tracking_no: "EA123456789CN".into(), on: d("2026-12-10") }))]
    #[case("/post 退回 EA123456789CN 2026-12-10 查无此人", Command::Post(PostAction::Returned { tracking_no: "EA123456789CN".into(), on: d("2026-12-10"), note: Some("查无此人".into()) }))]
    #[case("/report 考勤 2026-12", Command::Report { month: Month::parse("2026-12") })]
    #[case("/报表 考勤", Command::Report { month: None })]
    #[case("/离职原因", Command::Reasons)]
    #[case("/风险", Command::Risk)]
    #[case("/入职 张三", Command::Onboard { who: "张三".into() })]
    #[case("/档案 张三", Command::Docs { who: "张三".into(), tag: None })]
    #[case("/docs zhangsan #合同", Command::Docs { who: "zhangsan".into(), tag: Some("合同".into()) })]
    #[case("/履历 张三", Command::History { who: "张三".into() })]
    #[case("/reasons", Command::Reasons)]
    #[case("/REPORT attendance 2026/1", Command::Report { month: Month::parse("2026-01") })]
    fn parses(#[case] text: &str, #[case] expected: Command) {
        assert_eq!(parse(text), Ok(expected));
    }

    #[rstest]
    #[case("/post", ParseError::Missing { command: "post", argument: "action" })]
    #[case("/post 寄出 张三 EA123456789CN", ParseError::BadChoice { command: "post", argument: "action", text: "寄出".into() })]
    #[case("/post 邮寄 张三", ParseError::Missing { command: "post", argument: "tracking_no" })]
    #[case("/post 邮寄 张三 EA1", ParseError::BadTracking("EA1".into()))]
    #[case("/post 邮寄 张三 EA123456789CN 通知", ParseError::BadChoice { command: "post", argument: "letter", text: "通知".into() })]
    #[case("/post 签收 EA123456789CN", ParseError::Missing { command: "post", argument: "date" })]
    #[case("/post 签收 EA123456789CN 昨天", ParseError::BadDate("昨天".into()))]
    #[case("/report", ParseError::Missing { command: "report", argument: "kind" })]
    #[case("/报表 工资 2026-12", ParseError::BadChoice { command: "report", argument: "kind", text: "工资".into() })]
    #[case("/报表 考勤 十二月", ParseError::BadMonth("十二月".into()))]
    #[case("我在请假", ParseError::NotACommand)]
    #[case("打卡", ParseError::NotACommand)]
    #[case("/", ParseError::NotACommand)]
    #[case("/打卡", ParseError::Unknown("打卡".into()))]
    #[case("/请假 张三 2026-11-26", ParseError::Missing { command: "leave", argument: "to" })]
    #[case("/请假 张三 2026-11-26 2026-11-27", ParseError::Missing { command: "leave", argument: "reason" })]
    #[case("/请假 张三 明天 后天 病假", ParseError::BadDate("明天".into()))]
    #[case("/请假 张三 2026-11-27 2026-11-26 病假", ParseError::DateOrder { from: d("2026-11-27"), to: d("2026-11-26") })]
    #[case("/结案 C-42", ParseError::Missing { command: "resolve", argument: "reason" })]
    #[case("/自离", ParseError::Missing { command: "depart", argument: "who" })]
    #[case("/证据", ParseError::Missing { command: "evidence", argument: "who" })]
    #[case("/导出", ParseError::Missing { command: "export", argument: "who" })]
    #[case("/工会 张三", ParseError::Missing { command: "union", argument: "notice" })]
    #[case("/工会 张三 也许", ParseError::BadChoice { command: "union", argument: "notice", text: "也许".into() })]
    #[case("/公告 张三 2026-12-10", ParseError::Missing { command: "announce", argument: "where" })]
    #[case("/公告 张三 明天 报纸", ParseError::BadDate("明天".into()))]
    #[case("/depart", ParseError::Missing { command: "depart", argument: "who" })]
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
    #[case(Role::Hr, "/自离 张三", Subject::Other, true)]
    #[case(Role::Manager, "/自离 张三", Subject::Report, false)]
    #[case(Role::Employee, "/自离 张三", Subject::Themself, false)]
    #[case(Role::Employee, "/自离 李四", Subject::Other, false)]
    #[case(Role::Hr, "/工会 张三 无工会", Subject::Other, true)]
    #[case(Role::Manager, "/工会 张三 已通知", Subject::Report, false)]
    #[case(Role::Hr, "/公告 张三 2026-12-10 公告栏", Subject::Other, true)]
    #[case(Role::Hr, "/公告 张三 2026-12-10 公告栏", Subject::Themself, false)]
    #[case(Role::Manager, "/公告 张三 2026-12-10 公告栏", Subject::Report, false)]
    #[case(Role::Hr, "/证据 张三", Subject::Other, true)]
    #[case(Role::Manager, "/证据 张三", Subject::Report, true)]
    #[case(Role::Manager, "/证据 王敏", Subject::Other, false)]
    #[case(Role::Employee, "/证据 张三", Subject::Themself, false)]
    fn permissions(
        #[case] role: Role,
        #[case] text: &str,
        #[case] subject: Subject,
        #[case] ok: bool,
    ) {
        assert_eq!(allowed(role, &parse(text).unwrap(), subject), ok);
    }

    #[rstest]
    #[case("#证据 张三 现场说明", Some(Ok(("张三", "现场说明"))))]
    #[case("＃证据 张三 宿舍 已搬空", Some(Ok(("张三", "宿舍 已搬空"))))]
    #[case("  #证据 zhangsan  ", Some(Ok(("zhangsan", ""))))]
    #[case("#证据\t张三\t打卡机记录", Some(Ok(("张三", "打卡机记录"))))]
    #[case("#证据", Some(Err(ParseError::Missing { command: "#证据", argument: "who" })))]
    #[case("#证据材料 张三", None)]
    #[case("证据 张三", None)]
    #[case("#打卡", None)]
    #[case("/证据 张三", None)]
    fn captions(#[case] text: &str, #[case] expected: Option<Result<(&str, &str), ParseError>>) {
        let got = parse_caption(text).map(|r| r.map(|c| (c.who, c.text)));
        let expected = expected.map(|r| r.map(|(w, t)| (w.to_owned(), t.to_owned())));
        assert_eq!(got, expected);
    }

    #[rstest]
    #[case("#合同 张三 2026版 三年期", Some(Ok(("合同", "张三", "2026版 三年期"))))]
    #[case("＃奖惩 lisi 警告 迟到三次", Some(Ok(("奖惩", "lisi", "警告 迟到三次"))))]
    #[case("#员工手册 王五", Some(Ok(("员工手册", "王五", ""))))]
    #[case("#考勤报表\t张三\t十一月", Some(Ok(("考勤报表", "张三", "十一月"))))]
    #[case("#合同", Some(Err(ParseError::Missing { command: "#合同", argument: "who" })))]
    #[case("#合同书 张三", None)]
    #[case("#证据 张三", None)]
    #[case("合同 张三", None)]
    fn archive_captions(
        #[case] text: &str,
        #[case] expected: Option<Result<(&str, &str, &str), ParseError>>,
    ) {
        let got = parse_archive_caption(text).map(|r| r.map(|c| (c.tag.to_owned(), c.who, c.note)));
        let expected =
            expected.map(|r| r.map(|(t, w, n)| (t.to_owned(), w.to_owned(), n.to_owned())));
        assert_eq!(got, expected);
    }

    #[rstest]
    #[case(Role::Hr, Subject::Other, true)]
    #[case(Role::Manager, Subject::Report, true)]
    #[case(Role::Manager, Subject::Other, false)]
    #[case(Role::Manager, Subject::Themself, false)]
    #[case(Role::Employee, Subject::Themself, false)]
    fn evidence_filers(#[case] role: Role, #[case] subject: Subject, #[case] ok: bool) {
        assert_eq!(may_file_evidence(role, subject), ok);
    }
}
