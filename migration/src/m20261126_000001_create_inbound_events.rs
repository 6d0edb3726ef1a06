use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(InboundEvents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(InboundEvents::Id))
                    .col(string(InboundEvents::TenantId))
                    .col(string(InboundEvents::Platform))
                    .col(string(InboundEvents::MsgKey))
                    .col(string(InboundEvents::Kind))
                    .col(string(InboundEvents::FromUser))
                    .col(text_null(InboundEvents::Content))
                    .col(text(InboundEvents::Fields))
                    .col(big_integer(InboundEvents::PlatformTime))
                    .col(text(InboundEvents::RawQuery))
                    .col(text(InboundEvents::RawBody))
                    .col(text(InboundEvents::Plaintext))
                    .col(timestamp_with_time_zone(InboundEvents::ReceivedAt))
                    .col(timestamp_with_time_zone_null(InboundEvents::ProcessedAt))
                    .col(string_null(InboundEvents::Classification))
                    .to_owned(),
            )
            .await?;
        // A platform retry of the same delivery must not add a row.
        manager
            .create_index(
                Index::create()
                    .name("ux_inbound_events_delivery")
                    .table(InboundEvents::Table)
                    .col(InboundEvents::TenantId)
                    .col(InboundEvents::Platform)
                    .col(InboundEvents::MsgKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The recovery sweep looks for rows not yet processed.
        manager
            .create_index(
                Index::create()
                    .name("ix_inbound_events_unprocessed")
                    .table(InboundEvents::Table)
                    .col(InboundEvents::ProcessedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(InboundEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum InboundEvents {
    Table,
    Id,
    TenantId,
    Platform,
    MsgKey,
    Kind,
    FromUser,
    Content,
    Fields,
    PlatformTime,
    RawQuery,
    RawBody,
    Plaintext,
    ReceivedAt,
    ProcessedAt,
    Classification,
}
