use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The self-departure (自离) process of one case: who started it, the
        // document drafted for it, the confirmations and the union item.
        manager
            .create_table(
                Table::create()
                    .table(Departures::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Departures::Id))
                    .col(string(Departures::TenantId))
                    .col(big_integer(Departures::CaseId))
                    .col(string(Departures::UserId))
                    // collecting, halted or terminated.
                    .col(string(Departures::State))
                    .col(timestamp_with_time_zone(Departures::StartedAt))
                    .col(string(Departures::StartedBy))
                    // card or command.
                    .col(string(Departures::StartedVia))
                    .col(string(Departures::DocumentTemplate))
                    .col(string_len(Departures::DocumentTemplateHash, 64))
                    // The rendered blocks of the termination notice (JSON), as confirmed and sent.
                    .col(text(Departures::Document))
                    // SHA-256 of the document's body: what each confirmation names.
                    .col(string_len(Departures::DocumentSha256, 64))
                    // Who must confirm as the manager (none on file: not required).
                    .col(string_null(Departures::ManagerUserId))
                    .col(timestamp_with_time_zone_null(
                        Departures::ManagerConfirmedAt,
                    ))
                    .col(string_null(Departures::ManagerConfirmedBy))
                    .col(timestamp_with_time_zone_null(Departures::HrConfirmedAt))
                    .col(string_null(Departures::HrConfirmedBy))
                    // notified or no_union.
                    .col(string_null(Departures::UnionStatus))
                    .col(text_null(Departures::UnionNote))
                    .col(timestamp_with_time_zone_null(Departures::UnionRecordedAt))
                    .col(string_null(Departures::UnionRecordedBy))
                    // The employee checked in during the process: it halted.
                    .col(timestamp_with_time_zone_null(Departures::ReturnedAt))
                    .col(timestamp_with_time_zone_null(Departures::TerminatedAt))
                    .col(timestamp_with_time_zone(Departures::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        unique(
            manager,
            "ux_departures_case",
            Departures::Table,
            &[Departures::CaseId],
        )
        .await?;

        // Files and photos HR or a manager filed on a case, with their caption.
        manager
            .create_table(
                Table::create()
                    .table(Exhibits::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Exhibits::Id))
                    .col(string(Exhibits::TenantId))
                    .col(big_integer(Exhibits::CaseId))
                    .col(string(Exhibits::UserId))
                    .col(string(Exhibits::Sender))
                    // image, file, video or voice.
                    .col(string(Exhibits::MediaKind))
                    .col(string_null(Exhibits::FileName))
                    .col(string_null(Exhibits::ContentType))
                    .col(big_integer(Exhibits::Size))
                    // The bytes are in `media`, by this hash.
                    .col(string_len(Exhibits::Sha256, 64))
                    .col(text(Exhibits::Caption))
                    .col(string_null(Exhibits::PlatformMediaId))
                    .col(big_integer(Exhibits::InboundEventId))
                    // The platform's message time.
                    .col(timestamp_with_time_zone(Exhibits::ReceivedAt))
                    .col(timestamp_with_time_zone(Exhibits::RecordedAt))
                    .to_owned(),
            )
            .await?;
        // One exhibit per message: a re-run job adds nothing.
        unique(
            manager,
            "ux_exhibits_event",
            Exhibits::Table,
            &[Exhibits::InboundEventId],
        )
        .await?;
        index(
            manager,
            "ix_exhibits_case",
            Exhibits::Table,
            &[Exhibits::TenantId, Exhibits::CaseId],
        )
        .await?;

        // `#证据 <who> <caption>` opens one of these for its sender: files
        // sent before it expires are filed on that case with that caption.
        manager
            .create_table(
                Table::create()
                    .table(ExhibitWindows::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ExhibitWindows::Id))
                    .col(string(ExhibitWindows::TenantId))
                    .col(string(ExhibitWindows::Sender))
                    .col(big_integer(ExhibitWindows::CaseId))
                    .col(string(ExhibitWindows::UserId))
                    .col(text(ExhibitWindows::Caption))
                    .col(big_integer(ExhibitWindows::InboundEventId))
                    .col(timestamp_with_time_zone(ExhibitWindows::OpenedAt))
                    .col(timestamp_with_time_zone(ExhibitWindows::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_exhibit_windows_sender",
            ExhibitWindows::Table,
            &[
                ExhibitWindows::TenantId,
                ExhibitWindows::Sender,
                ExhibitWindows::ExpiresAt,
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ExhibitWindows::Table.into_iden(),
            Exhibits::Table.into_iden(),
            Departures::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

async fn unique<T: IntoIden + Copy, C: IntoIden + Copy>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: &[C],
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table).unique().if_not_exists();
    for &c in cols {
        index.col(c);
    }
    manager.create_index(index.to_owned()).await
}

async fn index<T: IntoIden + Copy, C: IntoIden + Copy>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: &[C],
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table).if_not_exists();
    for &c in cols {
        index.col(c);
    }
    manager.create_index(index.to_owned()).await
}

#[derive(DeriveIden, Clone, Copy)]
enum Departures {
    Table,
    Id,
    TenantId,
    CaseId,
    UserId,
    State,
    StartedAt,
    StartedBy,
    StartedVia,
    DocumentTemplate,
    DocumentTemplateHash,
    Document,
    DocumentSha256,
    ManagerUserId,
    ManagerConfirmedAt,
    ManagerConfirmedBy,
    HrConfirmedAt,
    HrConfirmedBy,
    UnionStatus,
    UnionNote,
    UnionRecordedAt,
    UnionRecordedBy,
    ReturnedAt,
    TerminatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Exhibits {
    Table,
    Id,
    TenantId,
    CaseId,
    UserId,
    Sender,
    MediaKind,
    FileName,
    ContentType,
    Size,
    Sha256,
    Caption,
    PlatformMediaId,
    InboundEventId,
    ReceivedAt,
    RecordedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ExhibitWindows {
    Table,
    Id,
    TenantId,
    Sender,
    CaseId,
    UserId,
    Caption,
    InboundEventId,
    OpenedAt,
    ExpiresAt,
}
