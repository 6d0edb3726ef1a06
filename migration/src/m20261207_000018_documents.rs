use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The archive (issue 13): `#合同 <who>` (or `#员工手册`, `#奖惩`, `#考勤报表`)
/// opens a short window for its sender, like `#证据`; each file they send
/// in it is kept (bytes in `media`) as a document of that person with the
/// tag, and logged.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ArchiveWindows::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ArchiveWindows::Id))
                    .col(string(ArchiveWindows::TenantId))
                    .col(string(ArchiveWindows::Sender))
                    .col(string(ArchiveWindows::UserId))
                    .col(string(ArchiveWindows::Tag))
                    .col(text(ArchiveWindows::Note))
                    .col(big_integer(ArchiveWindows::InboundEventId))
                    .col(timestamp_with_time_zone(ArchiveWindows::OpenedAt))
                    .col(timestamp_with_time_zone(ArchiveWindows::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        let mut ix = Index::create();
        ix.name("ix_archive_windows_sender")
            .table(ArchiveWindows::Table)
            .if_not_exists()
            .col(ArchiveWindows::TenantId)
            .col(ArchiveWindows::Sender)
            .col(ArchiveWindows::ExpiresAt);
        manager.create_index(ix.to_owned()).await?;
        manager
            .create_table(
                Table::create()
                    .table(Documents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Documents::Id))
                    .col(string(Documents::TenantId))
                    // Whose file it is.
                    .col(string(Documents::UserId))
                    // 合同, 员工手册, 奖惩 or 考勤报表.
                    .col(string(Documents::Tag))
                    .col(text(Documents::Note))
                    // image, file, video or voice.
                    .col(string(Documents::MediaKind))
                    .col(string_null(Documents::FileName))
                    .col(string_null(Documents::ContentType))
                    .col(big_integer(Documents::Size))
                    // The bytes are in `media` under this hash.
                    .col(string(Documents::Sha256))
                    .col(string(Documents::FiledBy))
                    .col(big_integer(Documents::InboundEventId))
                    .col(timestamp_with_time_zone(Documents::FiledAt))
                    .to_owned(),
            )
            .await?;
        let mut ux = Index::create();
        ux.name("ux_documents_event")
            .table(Documents::Table)
            .unique()
            .if_not_exists()
            .col(Documents::InboundEventId);
        manager.create_index(ux.to_owned()).await?;
        let mut ix = Index::create();
        ix.name("ix_documents_user")
            .table(Documents::Table)
            .if_not_exists()
            .col(Documents::TenantId)
            .col(Documents::UserId)
            .col(Documents::Tag);
        manager.create_index(ix.to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Documents::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(ArchiveWindows::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum ArchiveWindows {
    Table,
    Id,
    TenantId,
    Sender,
    UserId,
    Tag,
    Note,
    InboundEventId,
    OpenedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Documents {
    Table,
    Id,
    TenantId,
    UserId,
    Tag,
    Note,
    MediaKind,
    FileName,
    ContentType,
    Size,
    Sha256,
    FiledBy,
    InboundEventId,
    FiledAt,
}
