//! `rollcall employees import`: a CSV file of employees, checked as a whole
//! and written in one transaction (a bad row imports nothing).
//!
//! Columns (header required, any order): `user_id,name,department,
//! manager_user_id,role,phone,email,emergency_contact_name,
//! emergency_contact_phone,postal_address,hire_date,contract_end_date,
//! rest_days,site,shift`, and the delivery agreement's columns. Only
//! `user_id` and `name` must be there; a column left out of the header is left as it is on re-import, an empty cell is cleared.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use chrono::{NaiveDate, Utc};
use entity::employee;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sea_orm::{ActiveValue::Set, DbErr};

use super::{SealedColumn, mask, seal, upsert, user_ids};
use crate::attendance::calendar::RestDays;
use crate::db::Database;
use crate::sealed::DataKey;

/// The columns a file may have.
pub const COLUMNS: [&str; 20] = [
    "user_id",
    "name",
    "department",
    "manager_user_id",
    "role",
    "phone",
    "email",
    "emergency_contact_name",
    "emergency_contact_phone",
    "postal_address",
    "hire_date",
    "contract_end_date",
    "rest_days",
    "site",
    "shift",
    "delivery_clause",
    "delivery_agreed_on",
    "electronic_consent",
    "rules_version",
    "rules_acknowledged_on",
];

/// How many problems are listed before the rest are only counted.
pub const MAX_ERRORS: usize = 20;

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub added: usize,
    pub updated: usize,
    /// People already in the table who were not in this import (kept as they are).
    pub not_in_import: usize,
}

/// One problem in the file, at a line as numbered in the file (header = 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub column: Option<String>,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "line {}, column {c}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the file: {0}")]
    Read(String),
    #[error("nothing imported, the file has problems:\n{}", list(.errors, *.more))]
    Invalid {
        /// The first [`MAX_ERRORS`] problems.
        errors: Vec<RowError>,
        /// How many more there are.
        more: usize,
    },
    #[error("nothing imported: {0}")]
    Db(DbErr),
}

// By hand rather than `#[from]`: the message carries the cause already.
impl From<DbErr> for ImportError {
    fn from(e: DbErr) -> Self {
        ImportError::Db(e)
    }
}

fn list(errors: &[RowError], more: usize) -> String {
    let mut text: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    if more > 0 {
        text.push(format!("  … and {more} more"));
    }
    text.join("\n")
}

/// Collects problems, keeping the first [`MAX_ERRORS`].
#[derive(Default)]
struct Problems {
    errors: Vec<RowError>,
    more: usize,
}

impl Problems {
    fn add(&mut self, line: u64, column: Option<&str>, message: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(RowError {
                line,
                column: column.map(str::to_owned),
                message,
            });
        } else {
            self.more += 1;
        }
    }

    fn check(self) -> Result<(), ImportError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ImportError::Invalid {
                errors: self.errors,
                more: self.more,
            })
        }
    }
}

/// One checked row.
struct Row {
    line: u64,
    user_id: String,
    name: String,
    department: Option<String>,
    manager_user_id: Option<String>,
    role: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    emergency_contact_name: Option<String>,
    emergency_contact_phone: Option<String>,
    postal_address: Option<String>,
    hire_date: Option<NaiveDate>,
    contract_end_date: Option<NaiveDate>,
    rest_days: Option<String>,
    site: Option<String>,
    shift: Option<String>,
    delivery_clause: Option<String>,
    delivery_agreed_on: Option<NaiveDate>,
    electronic_consent: Option<bool>,
    rules_version: Option<String>,
    rules_acknowledged_on: Option<NaiveDate>,
}

/// `electronic_consent`: yes or no, in either language.
fn parse_consent(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "是" | "同意" => Some(true),
        "no" | "false" | "0" | "否" | "不同意" => Some(false),
        _ => None,
    }
}

fn is_phone(text: &str) -> bool {
    let rest = text.strip_prefix('+').unwrap_or(text);
    let digits = rest.chars().filter(char::is_ascii_digit).count();
    rest.chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
        && (5..=15).contains(&digits)
}

fn is_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !text.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// `YYYY-MM-DD` exactly (chrono alone also takes `2025-1-1`).
fn parse_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// Reads and checks the whole file.
fn parse(
    reader: impl Read,
    existing: &HashSet<String>,
) -> Result<(Vec<Row>, Vec<&'static str>), ImportError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let mut problems = Problems::default();
    let mut records = csv.records();

    let header = match records.next() {
        None => {
            return Err(ImportError::Read(
                "the file is empty (a header line is required)".into(),
            ));
        }
        Some(Err(e)) => return Err(read_error(e)),
        Some(Ok(h)) => h,
    };
    // Column index → known column name. (csv-core strips a UTF-8 BOM.)
    let mut columns: Vec<&'static str> = Vec::new();
    for name in header.iter() {
        match COLUMNS.iter().find(|c| **c == name) {
            Some(c) if columns.contains(c) => {
                problems.add(1, Some(c), "the column appears twice".into())
            }
            Some(c) => columns.push(c),
            None => {
                problems.add(
                    1,
                    Some(name),
                    format!("unknown column (the columns are {})", COLUMNS.join(",")),
                );
                columns.push("");
            }
        }
    }
    for required in ["user_id", "name"] {
        if !columns.contains(&required) {
            problems.add(1, Some(required), "the column is required".into());
        }
    }
    problems.check()?;
    let mut problems = Problems::default();

    let mut rows = Vec::new();
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => match e.kind() {
                csv::ErrorKind::Utf8 { pos: Some(pos), .. } => {
                    problems.add(pos.line(), None, "is not UTF-8 text".into());
                    continue;
                }
                _ => return Err(read_error(e)),
            },
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != columns.len() {
            problems.add(
                line,
                None,
                format!(
                    "has {} fields, the header has {}",
                    record.len(),
                    columns.len()
                ),
            );
            continue;
        }
        // A control character is no part of a name or an address, and
        // PostgreSQL refuses NUL in text (found by tests/fuzz.rs). Line
        // breaks and tabs may stand in a quoted cell (an address).
        if let Some((i, c)) = record.iter().enumerate().find_map(|(i, v)| {
            v.chars()
                .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
                .map(|c| (i, c))
        }) {
            problems.add(
                line,
                columns.get(i).copied().filter(|c| !c.is_empty()),
                format!("holds a control character (U+{:04X})", u32::from(c)),
            );
            continue;
        }
        let cell = |name: &str| -> Option<String> {
            columns
                .iter()
                .position(|c| *c == name)
                .map(|i| &record[i])
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let mut row = Row {
            line,
            user_id: cell("user_id").unwrap_or_default(),
            name: cell("name").unwrap_or_default(),
            department: cell("department"),
            manager_user_id: cell("manager_user_id"),
            role: cell("role"),
            phone: cell("phone"),
            email: cell("email"),
            emergency_contact_name: cell("emergency_contact_name"),
            emergency_contact_phone: cell("emergency_contact_phone"),
            postal_address: cell("postal_address"),
            hire_date: None,
            contract_end_date: None,
            rest_days: cell("rest_days"),
            site: cell("site"),
            shift: cell("shift"),
            delivery_clause: cell("delivery_clause"),
            delivery_agreed_on: None,
            electronic_consent: None,
            rules_version: cell("rules_version"),
            rules_acknowledged_on: None,
        };
        for required in ["user_id", "name"] {
            if cell(required).is_none() {
                problems.add(line, Some(required), "must not be empty".into());
            }
        }
        if let Some(role) = &row.role
            && super::parse_role(role).is_none()
        {
            problems.add(
                line,
                Some("role"),
                format!("{role:?} is not employee, manager or hr"),
            );
        }
        for column in ["phone", "emergency_contact_phone"] {
            if let Some(phone) = cell(column)
                && !is_phone(&phone)
            {
                // Never print a phone number whole, even a wrong one.
                problems.add(
                    line,
                    Some(column),
                    format!("\"{}\" is not a phone number", mask(&phone)),
                );
            }
        }
        if let Some(email) = &row.email
            && !is_email(email)
        {
            problems.add(
                line,
                Some("email"),
                format!("{email:?} is not an email address"),
            );
        }
        for column in ["hire_date", "contract_end_date"] {
            let Some(text) = cell(column) else { continue };
            match parse_date(&text) {
                Some(d) if column == "hire_date" => row.hire_date = Some(d),
                Some(d) => row.contract_end_date = Some(d),
                None => problems.add(
                    line,
                    Some(column),
                    format!("{text:?} is not a date (YYYY-MM-DD)"),
                ),
            }
        }
        for column in ["delivery_agreed_on", "rules_acknowledged_on"] {
            let Some(text) = cell(column) else { continue };
            match parse_date(&text) {
                Some(d) if column == "delivery_agreed_on" => row.delivery_agreed_on = Some(d),
                Some(d) => row.rules_acknowledged_on = Some(d),
                None => problems.add(
                    line,
                    Some(column),
                    format!("{text:?} is not a date (YYYY-MM-DD)"),
                ),
            }
        }
        if let Some(text) = cell("electronic_consent") {
            match parse_consent(&text) {
                Some(c) => row.electronic_consent = Some(c),
                None => problems.add(
                    line,
                    Some("electronic_consent"),
                    format!("{text:?} is not yes or no (是/否)"),
                ),
            }
        }
        // Consent counts only with where and when it was given.
        if row.electronic_consent == Some(true)
            && (row.delivery_clause.is_none() || cell("delivery_agreed_on").is_none())
        {
            problems.add(
                line,
                Some("electronic_consent"),
                "needs delivery_clause and delivery_agreed_on: where and when it was agreed".into(),
            );
        }
        if row.rules_acknowledged_on.is_some() && row.rules_version.is_none() {
            problems.add(
                line,
                Some("rules_version"),
                "rules_acknowledged_on needs the version acknowledged".into(),
            );
        }
        if let (Some(hire), Some(end)) = (row.hire_date, row.contract_end_date)
            && end < hire
        {
            problems.add(
                line,
                Some("contract_end_date"),
                format!("{end} is before the hire date {hire}"),
            );
        }
        if let Some(days) = &row.rest_days
            && let Err(e) = RestDays::parse(days)
        {
            problems.add(line, Some("rest_days"), format!("{days:?}: {e}"));
        }
        if row
            .manager_user_id
            .as_ref()
            .is_some_and(|m| *m == row.user_id && !m.is_empty())
        {
            problems.add(
                line,
                Some("manager_user_id"),
                "an employee cannot be their own manager".into(),
            );
            row.manager_user_id = None;
        }
        rows.push(row);
    }

    let mut first_line: HashMap<&str, u64> = HashMap::new();
    for row in &rows {
        if row.user_id.is_empty() {
            continue;
        }
        if let Some(first) = first_line.get(row.user_id.as_str()) {
            problems.add(
                row.line,
                Some("user_id"),
                format!("{:?} is also on line {first}", row.user_id),
            );
        } else {
            first_line.insert(&row.user_id, row.line);
        }
    }
    for row in &rows {
        if let Some(m) = &row.manager_user_id
            && !first_line.contains_key(m.as_str())
            && !existing.contains(m)
        {
            problems.add(
                row.line,
                Some("manager_user_id"),
                format!("{m:?} is neither in the file nor an existing employee"),
            );
        }
    }
    problems.errors.sort_by_key(|e| e.line);
    problems.check()?;
    Ok((rows, columns))
}

/// Checks a CSV file as [`import_csv`] would, writing nothing: the number of
/// people it holds, or every problem found. `existing` are the user ids
/// already in the table (managers may be among them).
pub fn check_csv(reader: impl Read, existing: &HashSet<String>) -> Result<usize, ImportError> {
    parse(reader, existing).map(|(rows, _)| rows.len())
}

fn read_error(e: csv::Error) -> ImportError {
    match e.position() {
        Some(p) => ImportError::Read(format!("line {}: {e}", p.line())),
        None => ImportError::Read(e.to_string()),
    }
}

/// Imports a CSV file of employees for `tenant`: everything is checked first,
/// then written in one transaction, inserting new people and updating the
/// others (nobody is deleted). With `progress`, a progress bar is drawn on
/// stderr.
pub async fn import_csv(
    db: &Database,
    key: &DataKey,
    tenant: &str,
    reader: impl Read,
    progress: bool,
) -> Result<ImportReport, ImportError> {
    let existing = user_ids(&db.orm, tenant).await?;
    let (rows, columns) = parse(reader, &existing)?;

    let bar = if progress {
        ProgressBar::with_draw_target(Some(rows.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} rows ({eta})") {
        bar.set_style(style);
    }
    bar.set_message("sealing");

    let now = Utc::now();
    let updated = rows
        .iter()
        .filter(|r| existing.contains(&r.user_id))
        .count();
    let report = ImportReport {
        added: rows.len() - updated,
        updated,
        not_in_import: existing.len() - updated,
    };
    let models: Vec<employee::ActiveModel> = rows
        .into_iter()
        .map(|r| {
            let sealed = |column, value: Option<String>| {
                value.map(|v| seal(key, column, tenant, &r.user_id, &v))
            };
            employee::ActiveModel {
                tenant_id: Set(tenant.to_owned()),
                phone_sealed: Set(sealed(SealedColumn::Phone, r.phone)),
                emergency_contact_name_sealed: Set(sealed(
                    SealedColumn::EmergencyContactName,
                    r.emergency_contact_name,
                )),
                emergency_contact_phone_sealed: Set(sealed(
                    SealedColumn::EmergencyContactPhone,
                    r.emergency_contact_phone,
                )),
                postal_address_sealed: Set(sealed(SealedColumn::PostalAddress, r.postal_address)),
                user_id: Set(r.user_id),
                name: Set(r.name),
                department: Set(r.department.unwrap_or_default()),
                manager_user_id: Set(r.manager_user_id),
                role: Set(r.role.unwrap_or_else(|| "employee".into())),
                email: Set(r.email),
                hire_date: Set(r.hire_date),
                contract_end_date: Set(r.contract_end_date),
                rest_days: Set(r.rest_days),
                site: Set(r.site),
                shift: Set(r.shift),
                delivery_clause: Set(r.delivery_clause),
                delivery_agreed_on: Set(r.delivery_agreed_on),
                electronic_consent: Set(r.electronic_consent),
                rules_version: Set(r.rules_version),
                rules_acknowledged_on: Set(r.rules_acknowledged_on),
                // The directory decides who has left; a file only adds people as active.
                active: Set(true),
                source: Set("csv".into()),
                updated_at: Set(now),
                ..Default::default()
            }
        })
        .collect();

    // Update what the file has columns for, and nothing else.
    use employee::Column as C;
    let mut update = vec![C::Source, C::UpdatedAt];
    for (name, column) in [
        ("name", C::Name),
        ("department", C::Department),
        ("manager_user_id", C::ManagerUserId),
        ("role", C::Role),
        ("phone", C::PhoneSealed),
        ("email", C::Email),
        ("emergency_contact_name", C::EmergencyContactNameSealed),
        ("emergency_contact_phone", C::EmergencyContactPhoneSealed),
        ("postal_address", C::PostalAddressSealed),
        ("hire_date", C::HireDate),
        ("contract_end_date", C::ContractEndDate),
        ("rest_days", C::RestDays),
        ("site", C::Site),
        ("shift", C::Shift),
        ("delivery_clause", C::DeliveryClause),
        ("delivery_agreed_on", C::DeliveryAgreedOn),
        ("electronic_consent", C::ElectronicConsent),
        ("rules_version", C::RulesVersion),
        ("rules_acknowledged_on", C::RulesAcknowledgedOn),
    ] {
        if columns.contains(&name) {
            update.push(column);
        }
    }

    bar.set_message("writing");
    let tx = db.write().await?;
    upsert(&tx, models, &update, |n| bar.inc(n as u64)).await?;
    tx.commit().await?;
    bar.finish_and_clear();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_emails_and_dates() {
        for ok in ["13812345678", "+86 138-1234-5678", "010-12345678"] {
            assert!(is_phone(ok), "{ok}");
        }
        for bad in [
            "1381234567x",
            "12",
            "++8613812345678",
            "138 1234 5678 9999 0000",
        ] {
            assert!(!is_phone(bad), "{bad}");
        }
        assert!(is_email("a@b.cn"));
        for bad in ["a.b.cn", "@b", "a@", "a b@c"] {
            assert!(!is_email(bad), "{bad}");
        }
        assert_eq!(
            parse_date("2025-01-31"),
            NaiveDate::from_ymd_opt(2025, 1, 31)
        );
        for bad in ["2025-1-31", "2025-13-01", "2025/01/31", "2025-02-30"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
