use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Leases: named locks held by one process until a time, so that several
/// `rollcall serve` processes on one database (or several processes on one
/// SQLite file) never run the same exclusive work at once (the absence
/// scan of a tenant). `until_ms` is Unix time in milliseconds by the
/// database's own clock, an integer so that both engines compare it alike.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Locks::Table)
                    .if_not_exists()
                    // What is locked, e.g. `scan:<tenant>`.
                    .col(text(Locks::Name).primary_key())
                    // Who holds it: one token per acquisition.
                    .col(text(Locks::Holder))
                    .col(big_integer(Locks::UntilMs))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Locks::Table).if_exists().to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Locks {
    Table,
    Name,
    Holder,
    UntilMs,
}
