use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Evidence key hand-overs: each a signed note, signed by the retiring key
/// and by the key that follows it, naming the last checkpoint of every log
/// the retiring key signed. A checkpoint signed by an older key is believed
/// only through this chain.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KeyHandovers::Table)
                    .if_not_exists()
                    .col(big_pk_auto(KeyHandovers::Id))
                    // Verifier keys (public): `<name>+<id>+<key>`.
                    .col(text(KeyHandovers::OldKey).unique_key())
                    .col(text(KeyHandovers::NewKey).unique_key())
                    .col(text(KeyHandovers::Note))
                    .col(timestamp_with_time_zone(KeyHandovers::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(KeyHandovers::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum KeyHandovers {
    Table,
    Id,
    OldKey,
    NewKey,
    Note,
    CreatedAt,
}
