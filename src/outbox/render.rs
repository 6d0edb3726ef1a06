//! Bot text from `bot-templates/` (minijinja). Each template holds named
//! blocks; a message is the blocks its channel needs, stored with the
//! template's name and the SHA-256 of its text.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use minijinja::Environment;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The templates compiled into the binary; a file of the same name in the
/// templates folder replaces one at start.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "card_pressed",
        include_str!("../../bot-templates/card_pressed.j2"),
    ),
    (
        "checkin_reply",
        include_str!("../../bot-templates/checkin_reply.j2"),
    ),
    ("command", include_str!("../../bot-templates/command.j2")),
    (
        "contract.hr",
        include_str!("../../bot-templates/contract.hr.j2"),
    ),
    (
        "leaver.hr",
        include_str!("../../bot-templates/leaver.hr.j2"),
    ),
    ("risk.hr", include_str!("../../bot-templates/risk.hr.j2")),
    (
        "onboarding",
        include_str!("../../bot-templates/onboarding.j2"),
    ),
    (
        "history.html",
        include_str!("../../bot-templates/history.html.j2"),
    ),
    ("export", include_str!("../../bot-templates/export.j2")),
    (
        "departure",
        include_str!("../../bot-templates/departure.j2"),
    ),
    (
        "deadline_passed.hr",
        include_str!("../../bot-templates/deadline_passed.hr.j2"),
    ),
    (
        "employee_replied.hr",
        include_str!("../../bot-templates/employee_replied.hr.j2"),
    ),
    (
        "first_reminder.employee",
        include_str!("../../bot-templates/first_reminder.employee.j2"),
    ),
    (
        "formal_notice.copy",
        include_str!("../../bot-templates/formal_notice.copy.j2"),
    ),
    (
        "formal_notice.employee",
        include_str!("../../bot-templates/formal_notice.employee.j2"),
    ),
    ("letter", include_str!("../../bot-templates/letter.j2")),
    (
        "report.html",
        include_str!("../../bot-templates/report.html.j2"),
    ),
    (
        "second_reminder.employee",
        include_str!("../../bot-templates/second_reminder.employee.j2"),
    ),
    (
        "second_reminder.manager",
        include_str!("../../bot-templates/second_reminder.manager.j2"),
    ),
    (
        "sms_unknown.hr",
        include_str!("../../bot-templates/sms_unknown.hr.j2"),
    ),
    (
        "termination_notice.copy",
        include_str!("../../bot-templates/termination_notice.copy.j2"),
    ),
    (
        "termination_notice.employee",
        include_str!("../../bot-templates/termination_notice.employee.j2"),
    ),
    (
        "undeliverable.hr",
        include_str!("../../bot-templates/undeliverable.hr.j2"),
    ),
    ("witness", include_str!("../../bot-templates/witness.j2")),
];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name}: {source}")]
    Syntax {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no template named {0}")]
    Unknown(String),
    #[error("rendering {name}#{block}: {source}")]
    Render {
        name: String,
        block: String,
        #[source]
        source: minijinja::Error,
    },
}

/// Rendered blocks of one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub template: String,
    /// SHA-256 (hex) of the template's text.
    pub hash: String,
    pub blocks: BTreeMap<String, String>,
}

impl Rendered {
    /// A rendered block (empty if it was not asked for).
    pub fn block(&self, name: &str) -> &str {
        self.blocks
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// The loaded templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    hashes: HashMap<String, String>,
}

impl Templates {
    /// The built-in templates, each replaced by `dir/<name>.j2` when that
    /// file exists. Every template is compiled now, so a syntax error stops
    /// the start instead of a notice.
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        let mut hashes = HashMap::new();
        for (name, built_in) in BUILT_IN {
            let source = match dir.map(|d| d.join(format!("{name}.j2"))) {
                Some(path) if path.exists() => {
                    std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                        path: path.display().to_string(),
                        source,
                    })?
                }
                _ => (*built_in).to_owned(),
            };
            hashes.insert((*name).to_owned(), hex(&Sha256::digest(source.as_bytes())));
            env.add_template_owned(*name, source)
                .map_err(|source| TemplateError::Syntax {
                    name: (*name).to_owned(),
                    source,
                })?;
        }
        Ok(Templates { env, hashes })
    }

    /// [`Templates::render`] for a tenant whose chat platform is
    /// `platform` (`wecom`, `dingtalk`, …, as the configuration names it):
    /// templates see it as `platform`, so that a notice names the app the
    /// employee actually uses.
    pub fn render_for(
        &self,
        platform: Option<&str>,
        name: &str,
        context: impl Serialize,
        blocks: &[&str],
    ) -> Result<Rendered, TemplateError> {
        let context = minijinja::context! {
            platform => platform,
            ..minijinja::Value::from(minijinja::value::Serde(&context))
        };
        self.render(name, context, blocks)
    }

    /// Renders `blocks` of template `name` with `context`. Surrounding
    /// whitespace of each block is trimmed.
    pub fn render(
        &self,
        name: &str,
        context: impl Serialize,
        blocks: &[&str],
    ) -> Result<Rendered, TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|_| TemplateError::Unknown(name.to_owned()))?;
        let render_err = |block: &str, source| TemplateError::Render {
            name: name.to_owned(),
            block: block.to_owned(),
            source,
        };
        let mut captured = template
            .render_captured(minijinja::Value::from(minijinja::value::Serde(&context)))
            .map_err(|e| render_err("", e))?;
        let mut out = BTreeMap::new();
        for block in blocks {
            let text = captured
                .with_state_mut(|state| state.render_block(block))
                .map_err(|e| render_err(block, e))?;
            out.insert((*block).to_owned(), text.trim().to_owned());
        }
        Ok(Rendered {
            template: name.to_owned(),
            hash: self.hashes.get(name).cloned().unwrap_or_default(),
            blocks: out,
        })
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn every_built_in_template_compiles() {
        let t = Templates::load(None).unwrap();
        assert_eq!(t.hashes.len(), BUILT_IN.len());
    }

    /// Every block of a template is rendered once whatever block is asked
    /// for, so one block reaching into a value another answer passes (an
    /// attribute of an undefined value) breaks every answer of that
    /// template. (The case report is one page, always rendered whole.)
    #[test]
    fn every_built_in_template_renders_without_a_context() {
        let t = Templates::load(None).unwrap();
        for (name, _) in BUILT_IN.iter().filter(|(n, _)| *n != "report.html") {
            if let Err(e) = t.render(name, context! {}, &[]) {
                panic!("{name}: {e:?}");
            }
        }
    }

    #[rstest::rstest]
    #[case(Some("dingtalk"), "钉钉")]
    #[case(Some("feishu"), "飞书")]
    #[case(Some("wecom"), "企业微信")]
    #[case(None, "企业微信")]
    fn a_notice_names_the_chat_app_the_tenant_uses(
        #[case] platform: Option<&str>,
        #[case] app: &str,
    ) {
        let t = Templates::load(None).unwrap();
        let r = t
            .render_for(
                platform,
                "formal_notice.copy",
                context! { case_no => "RC-7", name => "张三", department => "一号工地",
                first_missed => "2026-12-01", missed_days => 3, deadline_hours => 72,
                channels_used => vec!["chat", "sms", "email"],
                employer => "示例", today => "2026-12-04" },
                &["title", "body"],
            )
            .unwrap();
        let body = r.block("body");
        assert!(
            body.contains(&format!("发送渠道：{app}、短信、邮件")),
            "{r:?}"
        );
        assert!(body.contains("自本人收到通知之时起 72 小时"), "{r:?}");
        for other in ["钉钉", "飞书", "企业微信"]
            .into_iter()
            .filter(|o| *o != app)
        {
            assert!(!body.contains(other), "{r:?}");
        }
    }

    #[test]
    fn a_notice_names_its_case_step_and_date() {
        let t = Templates::load(None).unwrap();
        let r = t
            .render(
                "first_reminder.employee",
                context! { case_no => "RC-7", name => "张三", last_missed => "2026-12-01",
                employer => "示例", today => "2026-12-02" },
                &["title", "body", "button_arrived"],
            )
            .unwrap();
        assert!(r.block("title").contains("RC-7"), "{r:?}");
        assert!(r.block("body").contains("2026-12-01") && r.block("body").contains("2026-12-02"));
        assert_eq!(r.block("button_arrived"), "我已到岗");
        assert_eq!(r.hash.len(), 64);
    }

    #[test]
    fn the_termination_notice_states_the_facts_it_is_given() {
        let t = Templates::load(None).unwrap();
        let r = t
            .render(
                "termination_notice.employee",
                context! { case_no => "RC-7", name => "张三", department => "一号工地",
                first_missed => "2026-12-01", missed_days => 3,
                dates => vec!["2026-12-01", "2026-12-02", "2026-12-03"],
                formal_notice_at => "2026-12-04 10:00", deadline => "2026-12-07 10:00",
                receipts => vec![context! { channel => "sms", at => "2026-12-04 10:00", receipt => "BIZ-1" }],
                rule_version => "2026-01", policy_version => "default-1",
                employer => "示例", today => "2026-12-08" },
                &["title", "body", "sms"],
            )
            .unwrap();
        let body = r.block("body");
        for fact in [
            "2026-12-01、2026-12-02、2026-12-03",
            "短信 2026-12-04 10:00，回执 BIZ-1",
            "2026-12-07 10:00",
            "2026-01",
            "default-1",
        ] {
            assert!(body.contains(fact), "{fact} not in {body}");
        }
        assert!(r.block("title").contains("RC-7") && r.block("sms").contains("RC-7"));
    }

    #[test]
    fn a_caption_without_a_person_names_the_caption_tag() {
        let t = Templates::load(None).unwrap();
        let r = t
            .render(
                "command",
                context! { error => context! { code => "missing", command => "#证据", argument => "who" } },
                &["error"],
            )
            .unwrap();
        assert!(r.block("error").contains("#证据 缺少参数 <who>"), "{r:?}");
        assert!(!r.block("error").contains("/#证据"));
    }

    #[test]
    fn a_file_in_the_folder_replaces_the_built_in_one_and_changes_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let builtin = Templates::load(None).unwrap();
        std::fs::write(
            dir.path().join("checkin_reply.j2"),
            "{% block text %}OK {{ name }}{% endblock %}",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let r = t
            .render("checkin_reply", context! { name => "李四" }, &["text"])
            .unwrap();
        assert_eq!(r.block("text"), "OK 李四");
        assert_ne!(r.hash, builtin.hashes["checkin_reply"]);
    }

    #[test]
    fn a_broken_template_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("command.j2"),
            "{% block help %}{{ x {% endblock %}",
        )
        .unwrap();
        assert!(matches!(
            Templates::load(Some(dir.path())),
            Err(TemplateError::Syntax { .. })
        ));
    }
}
