//! A person of a tenant, from a CSV import or the platform directory.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "employees")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    /// The platform user id.
    pub user_id: String,
    pub name: String,
    pub department: String,
    pub manager_user_id: Option<String>,
    /// employee, manager or hr.
    pub role: String,
    /// Sealed (AES-256-GCM), see `rollcall::sealed`.
    pub phone_sealed: Option<String>,
    pub email: Option<String>,
    pub emergency_contact_name_sealed: Option<String>,
    pub emergency_contact_phone_sealed: Option<String>,
    pub postal_address_sealed: Option<String>,
    pub hire_date: Option<Date>,
    pub contract_end_date: Option<Date>,
    /// Weekly rest days overriding the tenant's (e.g. `sun` or `sat,sun`).
    pub rest_days: Option<String>,
    pub site: Option<String>,
    /// The person's own shift (a name from the tenant's `[[tenants.shifts]]`),
    /// over their site's and the tenant's.
    pub shift: Option<String>,
    /// Where the delivery addresses (chat account, phone, email, postal
    /// address) were agreed: the contract clause and its version.
    pub delivery_clause: Option<String>,
    pub delivery_agreed_on: Option<Date>,
    /// Consent to electronic delivery at the agreed addresses: a notice
    /// delivered there counts as received (plus the policy's
    /// `expected_receipt_days`).
    pub electronic_consent: Option<bool>,
    /// The attendance rules the employee acknowledged, and when.
    pub rules_version: Option<String>,
    pub rules_acknowledged_on: Option<Date>,
    pub active: bool,
    /// csv or directory.
    pub source: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
