//! A file in a person's archive (contract, signed handbook, reward or
//! punishment, attendance report); its bytes are in `media`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "documents")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub user_id: String,
    /// 合同, 员工手册, 奖惩 or 考勤报表.
    pub tag: String,
    pub note: String,
    /// image, file, video or voice.
    pub media_kind: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub size: i64,
    pub sha256: String,
    pub filed_by: String,
    pub inbound_event_id: i64,
    pub filed_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
