use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The check value of each key this database is bound to (the data key
/// that seals personal data, the evidence key that signs checkpoints), so
/// that a start with another key, or a lost key silently made anew, is
/// refused instead of sealing or signing with it.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KeyChecks::Table)
                    .if_not_exists()
                    // `data` or `evidence`.
                    .col(string_len(KeyChecks::Purpose, 16).primary_key())
                    .col(string(KeyChecks::KeyId))
                    .col(string(KeyChecks::CheckValue))
                    .col(timestamp_with_time_zone(KeyChecks::RecordedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(KeyChecks::Table).if_exists().to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum KeyChecks {
    Table,
    Purpose,
    KeyId,
    CheckValue,
    RecordedAt,
}
