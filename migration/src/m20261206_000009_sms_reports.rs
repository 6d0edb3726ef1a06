use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// SMS delivery reports on outbox rows: what the gateway last said of the
/// text (`delivered`, `failed`, or `unknown` while rollcall does not know
/// whether the gateway took it), the handset's receive time from the
/// report, the report exactly as received, and when the gateway was last
/// asked (so a poll asks each row at most every few minutes).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(Outbox::DeliveryStatus)
                .string()
                .null()
                .to_owned(),
            ColumnDef::new(Outbox::DeliveredAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Outbox::DeliveryReport)
                .text()
                .null()
                .to_owned(),
            ColumnDef::new(Outbox::ReportCheckedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        ];
        // One column per statement: SQLite adds one at a time.
        for column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Outbox::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Outbox::ReportCheckedAt,
            Outbox::DeliveryReport,
            Outbox::DeliveredAt,
            Outbox::DeliveryStatus,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Outbox::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    DeliveryStatus,
    DeliveredAt,
    DeliveryReport,
    ReportCheckedAt,
}
