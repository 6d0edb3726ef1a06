use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A person's risk score crossing the tenant's threshold (issue 13): one
/// row per crossing, closed when the score falls back below, so that HR
/// gets one card per crossing.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RiskAlerts::Table)
                    .if_not_exists()
                    .col(big_pk_auto(RiskAlerts::Id))
                    .col(string(RiskAlerts::TenantId))
                    .col(string(RiskAlerts::UserId))
                    .col(timestamp_with_time_zone(RiskAlerts::CrossedAt))
                    .col(big_integer(RiskAlerts::Score))
                    // The factors as computed then (JSON).
                    .col(text(RiskAlerts::Factors))
                    // When the score fell back below the threshold.
                    .col(timestamp_with_time_zone_null(RiskAlerts::ClearedAt))
                    .col(string_null(RiskAlerts::SeenBy))
                    .col(timestamp_with_time_zone_null(RiskAlerts::SeenAt))
                    .to_owned(),
            )
            .await?;
        let mut ix = Index::create();
        ix.name("ix_risk_alerts_user")
            .table(RiskAlerts::Table)
            .if_not_exists()
            .col(RiskAlerts::TenantId)
            .col(RiskAlerts::UserId);
        manager.create_index(ix.to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(RiskAlerts::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum RiskAlerts {
    Table,
    Id,
    TenantId,
    UserId,
    CrossedAt,
    Score,
    Factors,
    ClearedAt,
    SeenBy,
    SeenAt,
}
