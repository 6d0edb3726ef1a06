use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Shifts (issue 13): a check-in row says whether it is the start (`in`) or
/// the end (`out`) of a day's work, the shift it was judged against, and by
/// how many minutes it was late (in) or early (out); an employee may have
/// their own shift. Contract reminders: one row per contract end date of a
/// person, with HR's choice on the card. A one-time link may serve a
/// monthly attendance sheet as well as a case package.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CheckIns::Table)
                    .add_column(
                        ColumnDef::new(CheckIns::Direction)
                            .string()
                            .not_null()
                            .default("in"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(CheckIns::Table)
                    .add_column(ColumnDef::new(CheckIns::Shift).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(CheckIns::Table)
                    .add_column(ColumnDef::new(CheckIns::MinutesOff).integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Employees::Table)
                    .add_column(ColumnDef::new(Employees::Shift).string().null())
                    .to_owned(),
            )
            .await?;
        // A one-time link serves a case package or a monthly sheet.
        manager
            .alter_table(
                Table::alter()
                    .table(ExportDownloads::Table)
                    .add_column(
                        ColumnDef::new(ExportDownloads::Kind)
                            .string()
                            .not_null()
                            .default("package"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ExportDownloads::Table)
                    .add_column(ColumnDef::new(ExportDownloads::Period).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ContractReminders::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ContractReminders::Id))
                    .col(string(ContractReminders::TenantId))
                    .col(string(ContractReminders::UserId))
                    // The contract end date reminded of: a new date is a new contract.
                    .col(date(ContractReminders::ContractEnd))
                    .col(timestamp_with_time_zone(ContractReminders::RemindedAt))
                    // renew, not_renew; NULL while undecided.
                    .col(string_null(ContractReminders::Decision))
                    .col(string_null(ContractReminders::DecidedBy))
                    .col(timestamp_with_time_zone_null(ContractReminders::DecidedAt))
                    // 稍后提醒: the card comes again on this day.
                    .col(date_null(ContractReminders::RemindAgainOn))
                    // How many cards went out (the first, and one per 稍后提醒).
                    .col(integer(ContractReminders::Rounds))
                    .to_owned(),
            )
            .await?;
        let mut ux = Index::create();
        ux.name("ux_contract_reminders")
            .table(ContractReminders::Table)
            .unique()
            .if_not_exists()
            .col(ContractReminders::TenantId)
            .col(ContractReminders::UserId)
            .col(ContractReminders::ContractEnd);
        manager.create_index(ux.to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(ContractReminders::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        for column in [ExportDownloads::Period, ExportDownloads::Kind] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ExportDownloads::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Employees::Table)
                    .drop_column(Employees::Shift)
                    .to_owned(),
            )
            .await?;
        for column in [CheckIns::MinutesOff, CheckIns::Shift, CheckIns::Direction] {
            manager
                .alter_table(
                    Table::alter()
                        .table(CheckIns::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum CheckIns {
    Table,
    Direction,
    Shift,
    MinutesOff,
}

#[derive(DeriveIden)]
enum Employees {
    Table,
    Shift,
}

#[derive(DeriveIden)]
enum ExportDownloads {
    Table,
    Kind,
    Period,
}

#[derive(DeriveIden)]
enum ContractReminders {
    Table,
    Id,
    TenantId,
    UserId,
    ContractEnd,
    RemindedAt,
    Decision,
    DecidedBy,
    DecidedAt,
    RemindAgainOn,
    Rounds,
}
