//! An absence case: consecutive missed workdays and the ladder's progress.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "absence_cases")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub user_id: String,
    /// open, paused or resolved.
    pub status: String,
    pub opened_at: DateTimeUtc,
    pub first_missed: Date,
    pub last_missed: Date,
    pub missed_workdays: i32,
    /// The last day the scan judged for this case.
    pub scanned_through: Date,
    /// JSON array of the steps issued.
    pub steps_done: String,
    /// The fencing token: a job carrying another value exits.
    pub fence: i64,
    /// The ladder policy snapshotted when the case opened (JSON).
    pub policy: String,
    /// When the formal notice was issued (queued).
    pub formal_notice_at: Option<DateTimeUtc>,
    /// The deadline, once a receipt is proven.
    pub deadline_at: Option<DateTimeUtc>,
    pub acknowledged_at: Option<DateTimeUtc>,
    /// When the employee's copy of the formal notice was first proven
    /// received (the deadline runs from it), and by what.
    pub receipt_at: Option<DateTimeUtc>,
    pub receipt_via: Option<String>,
    pub resolved_at: Option<DateTimeUtc>,
    pub resolution: Option<String>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
