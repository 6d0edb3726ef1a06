//! The self-departure (自离) process of one case: started by HR after the
//! formal notice's deadline, it drafts the termination notice, collects the
//! manager's and HR's confirmations and the union item, then sends it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "departures")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub case_id: i64,
    /// The employee concerned.
    pub user_id: String,
    /// collecting, halted (the employee came back) or terminated.
    pub state: String,
    pub started_at: DateTimeUtc,
    pub started_by: String,
    /// card or command.
    pub started_via: String,
    pub document_template: String,
    pub document_template_hash: String,
    /// The rendered blocks of the termination notice (JSON object).
    pub document: String,
    /// SHA-256 (hex) of the document's body.
    pub document_sha256: String,
    /// Who confirms as the manager; none on file: not required.
    pub manager_user_id: Option<String>,
    pub manager_confirmed_at: Option<DateTimeUtc>,
    pub manager_confirmed_by: Option<String>,
    pub hr_confirmed_at: Option<DateTimeUtc>,
    pub hr_confirmed_by: Option<String>,
    /// notified or no_union.
    pub union_status: Option<String>,
    pub union_note: Option<String>,
    pub union_recorded_at: Option<DateTimeUtc>,
    pub union_recorded_by: Option<String>,
    pub returned_at: Option<DateTimeUtc>,
    pub terminated_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
