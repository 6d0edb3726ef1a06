//! A check-in: a keyword text, a location, a site photo or the card button.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "check_ins")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub user_id: String,
    /// The day it counts for, in the tenant's zone.
    pub work_date: Date,
    /// The platform's message time.
    pub checked_at: DateTimeUtc,
    pub recorded_at: DateTimeUtc,
    /// text, location, image or card.
    pub source: String,
    pub inbound_event_id: i64,
    /// The site a location matched.
    pub site: Option<String>,
    /// A location outside every site.
    pub flagged: bool,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub label: Option<String>,
    /// Distance to the nearest site, for a location.
    pub distance_m: Option<f64>,
    /// The photo, for an image check-in.
    pub media_sha256: Option<String>,
    /// in (the start of the day's work) or out (下班, its end).
    pub direction: String,
    /// The shift it was judged against, if the person has one.
    pub shift: Option<String>,
    /// Minutes late (in) or early (out) against the shift; `None` when on
    /// time or without a shift.
    pub minutes_off: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
