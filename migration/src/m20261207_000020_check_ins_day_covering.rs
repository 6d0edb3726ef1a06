use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The index of a tenant's check-ins by day holds what the monthly sheet
/// and the risk score read of them (direction, minutes off, shift), so that
/// a month of a large tenant is read from the index alone. It replaces the
/// narrower one (one index either way on the path of every check-in).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_check_ins_day")
                    .table(CheckIns::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_check_ins_day_punch")
                    .table(CheckIns::Table)
                    .if_not_exists()
                    .col(CheckIns::TenantId)
                    .col(CheckIns::WorkDate)
                    .col(CheckIns::UserId)
                    .col(CheckIns::Direction)
                    .col(CheckIns::MinutesOff)
                    .col(CheckIns::Shift)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_check_ins_day_punch")
                    .table(CheckIns::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_check_ins_day")
                    .table(CheckIns::Table)
                    .if_not_exists()
                    .col(CheckIns::TenantId)
                    .col(CheckIns::WorkDate)
                    .col(CheckIns::UserId)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum CheckIns {
    Table,
    TenantId,
    WorkDate,
    UserId,
    Direction,
    MinutesOff,
    Shift,
}
