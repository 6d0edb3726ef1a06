use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A case package asked for in chat (`/export`), served once through
        // a link with a one-time token (only its SHA-256 is stored).
        manager
            .create_table(
                Table::create()
                    .table(ExportDownloads::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ExportDownloads::Id))
                    .col(string(ExportDownloads::TenantId))
                    .col(string(ExportDownloads::Employee))
                    .col(big_integer_null(ExportDownloads::CaseId))
                    .col(string(ExportDownloads::RequestedBy))
                    .col(big_integer(ExportDownloads::InboundEventId))
                    // pending, ready, downloaded, expired or failed.
                    .col(string(ExportDownloads::Status))
                    .col(string_len_null(ExportDownloads::TokenSha256, 64))
                    .col(blob_null(ExportDownloads::Bytes))
                    .col(string_len_null(ExportDownloads::ManifestSha256, 64))
                    .col(text_null(ExportDownloads::Error))
                    .col(timestamp_with_time_zone(ExportDownloads::CreatedAt))
                    .col(timestamp_with_time_zone_null(ExportDownloads::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ExportDownloads::DownloadedAt))
                    .to_owned(),
            )
            .await?;
        let mut ux = Index::create();
        ux.name("ux_export_downloads_token")
            .table(ExportDownloads::Table)
            .unique()
            .if_not_exists()
            .col(ExportDownloads::TokenSha256);
        manager.create_index(ux.to_owned()).await?;
        // One export per asking message: a re-run job finds it.
        let mut ux = Index::create();
        ux.name("ux_export_downloads_event")
            .table(ExportDownloads::Table)
            .unique()
            .if_not_exists()
            .col(ExportDownloads::InboundEventId);
        manager.create_index(ux.to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(ExportDownloads::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum ExportDownloads {
    Table,
    Id,
    TenantId,
    Employee,
    CaseId,
    RequestedBy,
    InboundEventId,
    Status,
    TokenSha256,
    Bytes,
    ManifestSha256,
    Error,
    CreatedAt,
    ExpiresAt,
    DownloadedAt,
}
