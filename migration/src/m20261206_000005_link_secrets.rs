use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A message's secret (a one-time download token) kept sealed apart from
/// its text, which holds a mark in its place, until the message is sent;
/// and the lease of a download being served, so that a transfer cut off
/// halfway can be fetched again.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .add_column(ColumnDef::new(Outbox::SecretSealed).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ExportDownloads::Table)
                    .add_column(
                        ColumnDef::new(ExportDownloads::ServingUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Which transfer holds the lease: only it may end it.
        manager
            .alter_table(
                Table::alter()
                    .table(ExportDownloads::Table)
                    .add_column(ColumnDef::new(ExportDownloads::ServingLease).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [ExportDownloads::ServingLease, ExportDownloads::ServingUntil] {
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
                    .table(Outbox::Table)
                    .drop_column(Outbox::SecretSealed)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    SecretSealed,
}

#[derive(DeriveIden)]
enum ExportDownloads {
    Table,
    ServingUntil,
    ServingLease,
}
