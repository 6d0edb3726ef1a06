use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// People who left (issue 13's follow-up): by the self-departure process,
/// by a contract HR chose not to renew, or by leaving the platform's
/// directory; HR is reminded a month later to record why, with a card.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Leavers::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Leavers::Id))
                    .col(string(Leavers::TenantId))
                    .col(string(Leavers::UserId))
                    // The department when they left (the sheet of reasons groups by it).
                    .col(string(Leavers::Department))
                    .col(date(Leavers::LeftOn))
                    // self_departure, contract_end or directory.
                    .col(string(Leavers::How))
                    // HR's reminder is due on this day.
                    .col(date(Leavers::FollowUpOn))
                    .col(timestamp_with_time_zone_null(Leavers::RemindedAt))
                    // pay, workload, family, conditions or other; NULL until HR says.
                    .col(string_null(Leavers::Reason))
                    .col(string_null(Leavers::RecordedBy))
                    .col(timestamp_with_time_zone_null(Leavers::RecordedAt))
                    .to_owned(),
            )
            .await?;
        let mut ux = Index::create();
        ux.name("ux_leavers")
            .table(Leavers::Table)
            .unique()
            .if_not_exists()
            .col(Leavers::TenantId)
            .col(Leavers::UserId)
            .col(Leavers::LeftOn);
        manager.create_index(ux.to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Leavers::Table).if_exists().to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Leavers {
    Table,
    Id,
    TenantId,
    UserId,
    Department,
    LeftOn,
    How,
    FollowUpOn,
    RemindedAt,
    Reason,
    RecordedBy,
    RecordedAt,
}
