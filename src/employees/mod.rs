//! The employee directory of a tenant: who works there, their manager and
//! role, and the personal data the ladder needs (phone for SMS, emergency
//! contact, postal address for a formal notice).
//!
//! Rows come from a CSV import (`import`) or the platform's directory (`sync`);
//! both upsert on (tenant_id, user_id) and never delete anyone.
//!
//! Personal data is sealed at rest with [`DataKey`]; each value is bound to
//! its row and column with the context `employees.<column>:<tenant>:<user_id>`
//! (e.g. `employees.phone_sealed:acme:zhangsan`), so a value copied to another
//! row or column does not open.

pub mod cli;
pub mod directory;
pub mod import;
pub mod sync;

use chrono::NaiveDate;
use entity::employee;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::db::Database;
use crate::sealed::{DataKey, OpenError};

pub use import::{ImportError, ImportReport, RowError, import_csv};
pub use sync::{SyncError, sync_directory};

/// A person's role in the tenant (what the commands they send may do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Employee,
    Manager,
    Hr,
}

/// The sealed columns of `employees`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedColumn {
    Phone,
    EmergencyContactName,
    EmergencyContactPhone,
    PostalAddress,
}

impl SealedColumn {
    /// The column's name in the table.
    pub fn name(self) -> &'static str {
        match self {
            SealedColumn::Phone => "phone_sealed",
            SealedColumn::EmergencyContactName => "emergency_contact_name_sealed",
            SealedColumn::EmergencyContactPhone => "emergency_contact_phone_sealed",
            SealedColumn::PostalAddress => "postal_address_sealed",
        }
    }

    /// The sealing context: `employees.<column>:<tenant>:<user_id>`.
    pub fn context(self, tenant: &str, user_id: &str) -> String {
        format!("employees.{}:{tenant}:{user_id}", self.name())
    }
}

/// Seals `value` for this column of this employee.
pub fn seal(
    key: &DataKey,
    column: SealedColumn,
    tenant: &str,
    user_id: &str,
    value: &str,
) -> String {
    key.seal(value, &column.context(tenant, user_id))
}

/// The role as stored (`employee`, `manager`, `hr`).
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Employee => "employee",
        Role::Manager => "manager",
        Role::Hr => "hr",
    }
}

/// Parses a stored role.
pub fn parse_role(text: &str) -> Option<Role> {
    match text {
        "employee" => Some(Role::Employee),
        "manager" => Some(Role::Manager),
        "hr" => Some(Role::Hr),
        _ => None,
    }
}

/// A phone number for messages and logs: `13812345678` → `138****5678`;
/// anything shorter than 8 characters is fully masked.
pub fn mask(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < 8 {
        return "*".repeat(chars.len().max(4));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// An employee with the sealed fields opened.
#[derive(Clone, PartialEq, Eq)]
pub struct Employee {
    pub tenant_id: String,
    pub user_id: String,
    pub name: String,
    pub department: String,
    pub manager_user_id: Option<String>,
    pub role: Role,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub emergency_contact_name: Option<String>,
    pub emergency_contact_phone: Option<String>,
    pub postal_address: Option<String>,
    pub hire_date: Option<NaiveDate>,
    pub contract_end_date: Option<NaiveDate>,
    /// Weekly rest days overriding the tenant's (see `RestDays::parse`).
    pub rest_days: Option<String>,
    pub site: Option<String>,
    pub active: bool,
    /// `csv` or `directory`: which last wrote the row.
    pub source: String,
}

/// Masks the personal data, so an `Employee` can be logged.
impl std::fmt::Debug for Employee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("Employee")
            .field("tenant_id", &self.tenant_id)
            .field("user_id", &self.user_id)
            .field("name", &self.name)
            .field("department", &self.department)
            .field("manager_user_id", &self.manager_user_id)
            .field("role", &self.role)
            .field("phone", &self.phone.as_deref().map(mask))
            .field("email", &self.email)
            .field(
                "emergency_contact_name",
                &hidden(&self.emergency_contact_name),
            )
            .field(
                "emergency_contact_phone",
                &self.emergency_contact_phone.as_deref().map(mask),
            )
            .field("postal_address", &hidden(&self.postal_address))
            .field("hire_date", &self.hire_date)
            .field("contract_end_date", &self.contract_end_date)
            .field("rest_days", &self.rest_days)
            .field("site", &self.site)
            .field("active", &self.active)
            .field("source", &self.source)
            .finish()
    }
}

/// Why an employee could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error("employee {user_id}: {column} does not open: {source}")]
    Sealed {
        user_id: String,
        column: &'static str,
        source: OpenError,
    },
    #[error("employee {user_id}: unknown role `{role}`")]
    Role { user_id: String, role: String },
}

impl Employee {
    /// Opens the sealed fields of a row.
    pub fn open(key: &DataKey, row: employee::Model) -> Result<Employee, LoadError> {
        let open = |column: SealedColumn, value: &Option<String>| -> Result<_, LoadError> {
            value
                .as_deref()
                .map(|v| key.open(v, &column.context(&row.tenant_id, &row.user_id)))
                .transpose()
                .map_err(|source| LoadError::Sealed {
                    user_id: row.user_id.clone(),
                    column: column.name(),
                    source,
                })
        };
        let phone = open(SealedColumn::Phone, &row.phone_sealed)?;
        let emergency_contact_name = open(
            SealedColumn::EmergencyContactName,
            &row.emergency_contact_name_sealed,
        )?;
        let emergency_contact_phone = open(
            SealedColumn::EmergencyContactPhone,
            &row.emergency_contact_phone_sealed,
        )?;
        let postal_address = open(SealedColumn::PostalAddress, &row.postal_address_sealed)?;
        let role = parse_role(&row.role).ok_or_else(|| LoadError::Role {
            user_id: row.user_id.clone(),
            role: row.role.clone(),
        })?;
        Ok(Employee {
            tenant_id: row.tenant_id,
            user_id: row.user_id,
            name: row.name,
            department: row.department,
            manager_user_id: row.manager_user_id,
            role,
            phone,
            email: row.email,
            emergency_contact_name,
            emergency_contact_phone,
            postal_address,
            hire_date: row.hire_date,
            contract_end_date: row.contract_end_date,
            rest_days: row.rest_days,
            site: row.site,
            active: row.active,
            source: row.source,
        })
    }
}

/// The row of one employee, sealed fields as stored.
pub async fn find(
    db: &Database,
    tenant: &str,
    user_id: &str,
) -> Result<Option<employee::Model>, DbErr> {
    employee::Entity::find()
        .filter(employee::Column::TenantId.eq(tenant))
        .filter(employee::Column::UserId.eq(user_id))
        .one(&db.orm)
        .await
}

/// One employee with the sealed fields opened.
pub async fn load(
    db: &Database,
    key: &DataKey,
    tenant: &str,
    user_id: &str,
) -> Result<Option<Employee>, LoadError> {
    find(db, tenant, user_id)
        .await?
        .map(|row| Employee::open(key, row))
        .transpose()
}

/// The tenant's active employees, by user id.
pub async fn active(db: &Database, tenant: &str) -> Result<Vec<employee::Model>, DbErr> {
    employee::Entity::find()
        .filter(employee::Column::TenantId.eq(tenant))
        .filter(employee::Column::Active.eq(true))
        .order_by_asc(employee::Column::UserId)
        .all(&db.orm)
        .await
}

/// All user ids of the tenant (for telling added from updated).
async fn user_ids<C: sea_orm::ConnectionTrait>(
    db: &C,
    tenant: &str,
) -> Result<std::collections::HashSet<String>, DbErr> {
    let ids: Vec<String> = employee::Entity::find()
        .select_only()
        .column(employee::Column::UserId)
        .filter(employee::Column::TenantId.eq(tenant))
        .into_tuple()
        .all(db)
        .await?;
    Ok(ids.into_iter().collect())
}

/// Rows per INSERT: 18 bound values each stays under SQLite's 32766 and
/// PostgreSQL's 65535 parameters.
const BATCH_ROWS: usize = 1000;

/// Inserts `rows`, or on (tenant_id, user_id) conflict updates `update` only,
/// in batches, calling `done(n)` after each batch.
async fn upsert<C: sea_orm::ConnectionTrait>(
    db: &C,
    rows: Vec<employee::ActiveModel>,
    update: &[employee::Column],
    mut done: impl FnMut(usize),
) -> Result<(), DbErr> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let batch: Vec<_> = rows.by_ref().take(BATCH_ROWS).collect();
        let n = batch.len();
        employee::Entity::insert_many(batch)
            .on_conflict(
                OnConflict::columns([employee::Column::TenantId, employee::Column::UserId])
                    .update_columns(update.iter().copied())
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
        done(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_the_ends() {
        assert_eq!(mask("13812345678"), "138****5678");
        assert_eq!(mask("+86 138 1234 5678"), "+86****5678");
        assert_eq!(mask("12345"), "*****");
        assert_eq!(mask(""), "****");
    }

    #[test]
    fn roles_round_trip() {
        for role in [Role::Employee, Role::Manager, Role::Hr] {
            assert_eq!(parse_role(role_name(role)), Some(role));
        }
        assert_eq!(parse_role("boss"), None);
    }
}
