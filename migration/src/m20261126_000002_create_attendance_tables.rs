use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Employees::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Employees::Id))
                    .col(string(Employees::TenantId))
                    .col(string(Employees::UserId))
                    .col(string(Employees::Name))
                    .col(string(Employees::Department))
                    .col(string_null(Employees::ManagerUserId))
                    .col(string(Employees::Role))
                    // Sealed with AES-256-GCM (see src/sealed.rs): never plain.
                    .col(text_null(Employees::PhoneSealed))
                    .col(string_null(Employees::Email))
                    .col(text_null(Employees::EmergencyContactNameSealed))
                    .col(text_null(Employees::EmergencyContactPhoneSealed))
                    .col(text_null(Employees::PostalAddressSealed))
                    .col(date_null(Employees::HireDate))
                    .col(date_null(Employees::ContractEndDate))
                    .col(string_null(Employees::RestDays))
                    .col(string_null(Employees::Site))
                    .col(boolean(Employees::Active))
                    .col(string(Employees::Source))
                    .col(timestamp_with_time_zone(Employees::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        unique(
            manager,
            "ux_employees_user",
            Employees::Table,
            &[Employees::TenantId, Employees::UserId],
        )
        .await?;
        // Notices look up the tenant's HR people for every case.
        index(
            manager,
            "ix_employees_role",
            Employees::Table,
            &[Employees::TenantId, Employees::Role, Employees::UserId],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(CheckIns::Table)
                    .if_not_exists()
                    .col(big_pk_auto(CheckIns::Id))
                    .col(string(CheckIns::TenantId))
                    .col(string(CheckIns::UserId))
                    // The day it counts for, in the tenant's zone.
                    .col(date(CheckIns::WorkDate))
                    // The platform's message time.
                    .col(timestamp_with_time_zone(CheckIns::CheckedAt))
                    .col(timestamp_with_time_zone(CheckIns::RecordedAt))
                    .col(string(CheckIns::Source))
                    .col(big_integer(CheckIns::InboundEventId))
                    .col(string_null(CheckIns::Site))
                    .col(boolean(CheckIns::Flagged))
                    .col(double_null(CheckIns::Latitude))
                    .col(double_null(CheckIns::Longitude))
                    .col(string_null(CheckIns::Label))
                    .col(double_null(CheckIns::DistanceM))
                    .col(string_null(CheckIns::MediaSha256))
                    .to_owned(),
            )
            .await?;
        // One check-in per inbound event: a re-run job adds nothing.
        unique(
            manager,
            "ux_check_ins_event",
            CheckIns::Table,
            &[CheckIns::InboundEventId],
        )
        .await?;
        index(
            manager,
            "ix_check_ins_day",
            CheckIns::Table,
            &[CheckIns::TenantId, CheckIns::WorkDate, CheckIns::UserId],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Media::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Media::Id))
                    .col(string(Media::TenantId))
                    .col(string(Media::Sha256))
                    .col(string_null(Media::ContentType))
                    .col(big_integer(Media::Size))
                    .col(blob(Media::Bytes))
                    .col(string_null(Media::PlatformMediaId))
                    .col(timestamp_with_time_zone(Media::CreatedAt))
                    .to_owned(),
            )
            .await?;
        unique(
            manager,
            "ux_media_hash",
            Media::Table,
            &[Media::TenantId, Media::Sha256],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Leaves::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Leaves::Id))
                    .col(string(Leaves::TenantId))
                    .col(string(Leaves::UserId))
                    .col(date(Leaves::FromDate))
                    .col(date(Leaves::ToDate))
                    .col(text(Leaves::Reason))
                    .col(string(Leaves::ApprovedBy))
                    .col(timestamp_with_time_zone(Leaves::CreatedAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_leaves_user",
            Leaves::Table,
            &[Leaves::TenantId, Leaves::UserId],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(AbsenceCases::Table)
                    .if_not_exists()
                    .col(big_pk_auto(AbsenceCases::Id))
                    .col(string(AbsenceCases::TenantId))
                    .col(string(AbsenceCases::UserId))
                    .col(string(AbsenceCases::Status))
                    .col(timestamp_with_time_zone(AbsenceCases::OpenedAt))
                    .col(date(AbsenceCases::FirstMissed))
                    .col(date(AbsenceCases::LastMissed))
                    .col(integer(AbsenceCases::MissedWorkdays))
                    .col(date(AbsenceCases::ScannedThrough))
                    // JSON array of the steps issued.
                    .col(text(AbsenceCases::StepsDone))
                    // Changed whenever the ladder stops or restarts: a job
                    // carrying an older value exits.
                    .col(big_integer(AbsenceCases::Fence))
                    // The ladder policy in force when the case opened (JSON).
                    .col(text(AbsenceCases::Policy))
                    .col(timestamp_with_time_zone_null(AbsenceCases::FormalNoticeAt))
                    .col(timestamp_with_time_zone_null(AbsenceCases::DeadlineAt))
                    .col(timestamp_with_time_zone_null(AbsenceCases::AcknowledgedAt))
                    .col(timestamp_with_time_zone_null(AbsenceCases::ResolvedAt))
                    .col(text_null(AbsenceCases::Resolution))
                    .col(timestamp_with_time_zone(AbsenceCases::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // At most one unresolved case per employee. A partial index, which
        // both SQLite and PostgreSQL support with this syntax.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS ux_absence_cases_open \
                 ON absence_cases (tenant_id, user_id) WHERE status <> 'resolved'",
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CaseEvents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(CaseEvents::Id))
                    .col(string(CaseEvents::TenantId))
                    .col(big_integer_null(CaseEvents::CaseId))
                    .col(string_null(CaseEvents::UserId))
                    .col(string(CaseEvents::Kind))
                    .col(string_null(CaseEvents::Actor))
                    .col(text(CaseEvents::Detail))
                    .col(big_integer_null(CaseEvents::InboundEventId))
                    .col(timestamp_with_time_zone(CaseEvents::At))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_case_events_case",
            CaseEvents::Table,
            &[CaseEvents::CaseId],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Outbox::Id))
                    .col(string(Outbox::TenantId))
                    // notice:{case}:{step}:{recipient}:{channel}, reply:{event}, …
                    .col(string(Outbox::IdemKey))
                    .col(big_integer_null(Outbox::CaseId))
                    .col(big_integer_null(Outbox::Fence))
                    .col(string_null(Outbox::Step))
                    .col(string(Outbox::Recipient))
                    .col(string(Outbox::Channel))
                    .col(string(Outbox::Template))
                    .col(string(Outbox::TemplateHash))
                    // The rendered message exactly as it will be sent (JSON).
                    .col(text(Outbox::Payload))
                    .col(string(Outbox::Status))
                    .col(integer(Outbox::Attempts))
                    .col(timestamp_with_time_zone(Outbox::NotBefore))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    // When the current attempt was claimed: a `sending` row
                    // whose claim is old was cut off and may be retried.
                    .col(timestamp_with_time_zone_null(Outbox::ClaimedAt))
                    .col(timestamp_with_time_zone_null(Outbox::SentAt))
                    .col(string_null(Outbox::ReceiptId))
                    .col(text_null(Outbox::Receipt))
                    .col(string_null(Outbox::ResponseCode))
                    .col(text_null(Outbox::Error))
                    .to_owned(),
            )
            .await?;
        unique(manager, "ux_outbox_key", Outbox::Table, &[Outbox::IdemKey]).await?;
        index(
            manager,
            "ix_outbox_due",
            Outbox::Table,
            &[Outbox::Status, Outbox::NotBefore],
        )
        .await?;
        index(manager, "ix_outbox_case", Outbox::Table, &[Outbox::CaseId]).await?;
        // The per-member budget of every chat message.
        index(
            manager,
            "ix_outbox_member",
            Outbox::Table,
            &[
                Outbox::TenantId,
                Outbox::Recipient,
                Outbox::Channel,
                Outbox::SentAt,
            ],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(CardActions::Table)
                    .if_not_exists()
                    .col(big_pk_auto(CardActions::Id))
                    .col(string(CardActions::TenantId))
                    // The opaque button key.
                    .col(string(CardActions::Token))
                    .col(big_integer_null(CardActions::CaseId))
                    .col(big_integer(CardActions::OutboxId))
                    .col(string(CardActions::Action))
                    .col(string(CardActions::ForUser))
                    .col(timestamp_with_time_zone_null(CardActions::PressedAt))
                    .to_owned(),
            )
            .await?;
        unique(
            manager,
            "ux_card_actions_token",
            CardActions::Table,
            &[CardActions::Token],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            CardActions::Table.into_iden(),
            Outbox::Table.into_iden(),
            CaseEvents::Table.into_iden(),
            AbsenceCases::Table.into_iden(),
            Leaves::Table.into_iden(),
            Media::Table.into_iden(),
            CheckIns::Table.into_iden(),
            Employees::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
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
enum Employees {
    Table,
    Id,
    TenantId,
    UserId,
    Name,
    Department,
    ManagerUserId,
    Role,
    PhoneSealed,
    Email,
    EmergencyContactNameSealed,
    EmergencyContactPhoneSealed,
    PostalAddressSealed,
    HireDate,
    ContractEndDate,
    RestDays,
    Site,
    Active,
    Source,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum CheckIns {
    Table,
    Id,
    TenantId,
    UserId,
    WorkDate,
    CheckedAt,
    RecordedAt,
    Source,
    InboundEventId,
    Site,
    Flagged,
    Latitude,
    Longitude,
    Label,
    DistanceM,
    MediaSha256,
}

#[derive(DeriveIden, Clone, Copy)]
enum Media {
    Table,
    Id,
    TenantId,
    Sha256,
    ContentType,
    Size,
    Bytes,
    PlatformMediaId,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Leaves {
    Table,
    Id,
    TenantId,
    UserId,
    FromDate,
    ToDate,
    Reason,
    ApprovedBy,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum AbsenceCases {
    Table,
    Id,
    TenantId,
    UserId,
    Status,
    OpenedAt,
    FirstMissed,
    LastMissed,
    MissedWorkdays,
    ScannedThrough,
    StepsDone,
    Fence,
    Policy,
    FormalNoticeAt,
    DeadlineAt,
    AcknowledgedAt,
    ResolvedAt,
    Resolution,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum CaseEvents {
    Table,
    Id,
    TenantId,
    CaseId,
    UserId,
    Kind,
    Actor,
    Detail,
    InboundEventId,
    At,
}

#[derive(DeriveIden, Clone, Copy)]
enum Outbox {
    Table,
    Id,
    TenantId,
    IdemKey,
    CaseId,
    Fence,
    Step,
    Recipient,
    Channel,
    Template,
    TemplateHash,
    Payload,
    Status,
    Attempts,
    NotBefore,
    CreatedAt,
    ClaimedAt,
    SentAt,
    ReceiptId,
    Receipt,
    ResponseCode,
    Error,
}

#[derive(DeriveIden, Clone, Copy)]
enum CardActions {
    Table,
    Id,
    TenantId,
    Token,
    CaseId,
    OutboxId,
    Action,
    ForUser,
    PressedAt,
}
