//! Who is who in a tenant's directory: an employee's row, the tenant's HR
//! people, and a person with the sealed fields a message needs opened.

use entity::employee;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};

use super::SealedColumn;
use crate::runtime::Runtime;

/// A person with their sealed fields opened (only when needed to send).
#[derive(Debug, Clone)]
pub struct Person {
    pub row: employee::Model,
    pub phone: Option<String>,
    pub emergency_name: Option<String>,
    pub emergency_phone: Option<String>,
}

fn open(
    rt: &Runtime,
    row: &employee::Model,
    column: SealedColumn,
    value: &Option<String>,
) -> Option<String> {
    let sealed = value.as_deref()?;
    match rt
        .key
        .open(sealed, &column.context(&row.tenant_id, &row.user_id))
    {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(tenant = %row.tenant_id, user = %row.user_id, column = column.name(), error = %e, "a sealed field does not open");
            None
        }
    }
}

pub async fn employee_row<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<employee::Model>, DbErr> {
    employee::Entity::find()
        .filter(employee::Column::TenantId.eq(tenant_id))
        .filter(employee::Column::UserId.eq(user_id))
        .one(conn)
        .await
}

/// Which sealed fields to open: only what the message at hand needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unseal {
    pub phone: bool,
    pub emergency_contact: bool,
}

pub async fn person<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant_id: &str,
    user_id: &str,
    unseal: Unseal,
) -> Result<Option<Person>, DbErr> {
    Ok(employee_row(conn, tenant_id, user_id)
        .await?
        .map(|row| Person {
            phone: unseal
                .phone
                .then(|| open(rt, &row, SealedColumn::Phone, &row.phone_sealed))
                .flatten(),
            emergency_name: unseal
                .emergency_contact
                .then(|| {
                    open(
                        rt,
                        &row,
                        SealedColumn::EmergencyContactName,
                        &row.emergency_contact_name_sealed,
                    )
                })
                .flatten(),
            emergency_phone: unseal
                .emergency_contact
                .then(|| {
                    open(
                        rt,
                        &row,
                        SealedColumn::EmergencyContactPhone,
                        &row.emergency_contact_phone_sealed,
                    )
                })
                .flatten(),
            row,
        }))
}

/// The phone number of `user_id`, unsealed (to send an SMS, nothing else).
pub async fn phone_of<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<String>, DbErr> {
    let unseal = Unseal {
        phone: true,
        emergency_contact: false,
    };
    Ok(person(rt, conn, tenant_id, user_id, unseal)
        .await?
        .and_then(|p| p.phone))
}

/// The tenant's HR people (active, role hr).
pub async fn hr_people<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
) -> Result<Vec<employee::Model>, DbErr> {
    employee::Entity::find()
        .filter(employee::Column::TenantId.eq(tenant_id))
        .filter(employee::Column::Role.eq("hr"))
        .filter(employee::Column::Active.eq(true))
        .order_by_asc(employee::Column::UserId)
        .all(conn)
        .await
}
