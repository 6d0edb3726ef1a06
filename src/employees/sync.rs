//! `rollcall employees sync`: the same upsert from the chat platform's
//! directory (WeCom's address book, …; see [`ChatApi::directory`]).
//!
//! The directory owns name, department, manager, phone, email and whether
//! someone still works there (disabled or left → inactive). What
//! it does not know (emergency contact, postal address, hire and contract
//! dates, rest days, site) is left as a CSV import set it, and so are a
//! manager, phone or email the directory leaves empty (直属上级 is often not
//! filled in; mobile and email are hidden from some apps). A member who leads
//! someone becomes a manager unless already hr; sync never demotes.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use entity::employee;
use sea_orm::{ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter};

use super::{ImportReport, SealedColumn, seal, upsert};
use crate::db::Database;
use crate::platform::{ChatApi, PlatformError};
use crate::sealed::DataKey;

/// Why a sync wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading the directory: {0}")]
    Platform(PlatformError),
    #[error("nothing synced: {0}")]
    Db(DbErr),
}

// By hand rather than `#[from]`: the message already carries the cause, and a
// source would print it twice.
impl From<PlatformError> for SyncError {
    fn from(e: PlatformError) -> Self {
        SyncError::Platform(e)
    }
}

impl From<DbErr> for SyncError {
    fn from(e: DbErr) -> Self {
        SyncError::Db(e)
    }
}

/// Upserts the tenant's employees from its platform's directory, in one
/// transaction.
pub async fn sync_directory(
    db: &Database,
    key: &DataKey,
    tenant: &str,
    api: &dyn ChatApi,
) -> Result<ImportReport, SyncError> {
    let users = api.directory().await?;
    let leaders: HashSet<&str> = users.iter().filter_map(|u| u.manager.as_deref()).collect();

    let existing: HashMap<String, employee::Model> = employee::Entity::find()
        .filter(employee::Column::TenantId.eq(tenant))
        .all(&db.orm)
        .await?
        .into_iter()
        .map(|m| (m.user_id.clone(), m))
        .collect();

    let now = Utc::now();
    let updated = users
        .iter()
        .filter(|u| existing.contains_key(&u.user_id))
        .count();
    let report = ImportReport {
        added: users.len() - updated,
        updated,
        not_in_import: existing.len() - updated,
    };
    let models: Vec<employee::ActiveModel> = users
        .iter()
        .map(|u| {
            let before = existing.get(&u.user_id);
            let role = match before.map(|m| m.role.as_str()) {
                Some("hr") => "hr",
                _ if leaders.contains(u.user_id.as_str()) => "manager",
                Some(other) => other,
                None => "employee",
            };
            let department = u
                .department
                .clone()
                .or_else(|| before.map(|m| m.department.clone()))
                .unwrap_or_default();
            // Many companies never fill in 直属上级: keep the file's manager.
            let manager = u
                .manager
                .clone()
                .or_else(|| before.and_then(|m| m.manager_user_id.clone()));
            // Platforms leave out mobile and email for apps not allowed to
            // read them: keep what we have rather than wipe it.
            let phone = match u.mobile.as_deref().filter(|m| !m.is_empty()) {
                Some(m) => Some(seal(key, SealedColumn::Phone, tenant, &u.user_id, m)),
                None => before.and_then(|m| m.phone_sealed.clone()),
            };
            let email = u
                .email
                .clone()
                .filter(|e| !e.is_empty())
                .or_else(|| before.and_then(|m| m.email.clone()));
            employee::ActiveModel {
                tenant_id: Set(tenant.to_owned()),
                user_id: Set(u.user_id.clone()),
                name: Set(u.name.clone()),
                department: Set(department),
                manager_user_id: Set(manager),
                role: Set(role.to_owned()),
                phone_sealed: Set(phone),
                email: Set(email),
                emergency_contact_name_sealed: Set(None),
                emergency_contact_phone_sealed: Set(None),
                postal_address_sealed: Set(None),
                hire_date: Set(None),
                contract_end_date: Set(None),
                rest_days: Set(None),
                site: Set(None),
                active: Set(u.active),
                source: Set("directory".into()),
                updated_at: Set(now),
                ..Default::default()
            }
        })
        .collect();

    use employee::Column as C;
    let update = [
        C::Name,
        C::Department,
        C::ManagerUserId,
        C::Role,
        C::PhoneSealed,
        C::Email,
        C::Active,
        C::Source,
        C::UpdatedAt,
    ];
    let tx = db.write().await?;
    upsert(&tx, models, &update, |_| {}).await?;
    tx.commit().await?;
    Ok(report)
}
