use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The platform seam: what updating a sent card takes is a neutral card
/// reference (WeCom's `response_code`, another platform's own), not a
/// WeCom column. A rename keeps the values already stored.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .rename_column(Outbox::ResponseCode, Outbox::CardRef)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .rename_column(Outbox::CardRef, Outbox::ResponseCode)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    ResponseCode,
    CardRef,
}
