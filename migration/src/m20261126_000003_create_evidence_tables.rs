use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One append-only Merkle log per tenant: its size and right edge.
        manager
            .create_table(
                Table::create()
                    .table(EvidenceLogs::Table)
                    .if_not_exists()
                    .col(string(EvidenceLogs::TenantId).primary_key())
                    .col(string(EvidenceLogs::Origin))
                    .col(string(EvidenceLogs::Zone))
                    .col(big_integer(EvidenceLogs::Size))
                    // Hex of the perfect subtrees' roots, largest first.
                    .col(text(EvidenceLogs::Frontier))
                    .col(timestamp_with_time_zone(EvidenceLogs::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        // Rows are inserted, never updated, except that `privacy forget`
        // clears `content` (which holds the salt) and sets `erased_at`.
        manager
            .create_table(
                Table::create()
                    .table(EvidenceLeaves::Table)
                    .if_not_exists()
                    .col(string(EvidenceLeaves::TenantId))
                    .col(big_integer(EvidenceLeaves::Idx))
                    .col(string(EvidenceLeaves::Kind))
                    .col(big_integer_null(EvidenceLeaves::CaseId))
                    .col(string_null(EvidenceLeaves::Subject))
                    // The operational row it records (`table/id`), as in its data.
                    .col(string_null(EvidenceLeaves::Source))
                    .col(string_len(EvidenceLeaves::LeafHash, 64))
                    // The leaf data exactly as hashed: RFC 8785 JSON with its salt.
                    .col(text_null(EvidenceLeaves::Content))
                    .col(timestamp_with_time_zone(EvidenceLeaves::RecordedAt))
                    .col(timestamp_with_time_zone_null(EvidenceLeaves::ErasedAt))
                    .primary_key(
                        Index::create()
                            .col(EvidenceLeaves::TenantId)
                            .col(EvidenceLeaves::Idx),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_evidence_leaves_subject",
            EvidenceLeaves::Table,
            &[
                EvidenceLeaves::TenantId,
                EvidenceLeaves::Subject,
                EvidenceLeaves::Idx,
            ],
        )
        .await?;
        index(
            manager,
            "ix_evidence_leaves_source",
            EvidenceLeaves::Table,
            &[EvidenceLeaves::TenantId, EvidenceLeaves::Source],
        )
        .await?;
        index(
            manager,
            "ix_evidence_leaves_case",
            EvidenceLeaves::Table,
            &[EvidenceLeaves::TenantId, EvidenceLeaves::CaseId],
        )
        .await?;

        // Raw payloads (callback bodies, requests, responses), by SHA-256.
        manager
            .create_table(
                Table::create()
                    .table(EvidenceRaw::Table)
                    .if_not_exists()
                    .col(string(EvidenceRaw::TenantId))
                    .col(string_len(EvidenceRaw::Sha256, 64))
                    .col(string(EvidenceRaw::MediaType))
                    .col(big_integer(EvidenceRaw::Size))
                    .col(blob_null(EvidenceRaw::Bytes))
                    .col(timestamp_with_time_zone(EvidenceRaw::CreatedAt))
                    .col(timestamp_with_time_zone_null(EvidenceRaw::ErasedAt))
                    .primary_key(
                        Index::create()
                            .col(EvidenceRaw::TenantId)
                            .col(EvidenceRaw::Sha256),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EvidenceCheckpoints::Table)
                    .if_not_exists()
                    .col(big_pk_auto(EvidenceCheckpoints::Id))
                    .col(string(EvidenceCheckpoints::TenantId))
                    .col(big_integer(EvidenceCheckpoints::Size))
                    .col(string_len(EvidenceCheckpoints::Root, 64))
                    // The signed note exactly as signed.
                    .col(text(EvidenceCheckpoints::Note))
                    .col(timestamp_with_time_zone(EvidenceCheckpoints::CreatedAt))
                    .to_owned(),
            )
            .await?;
        let mut ux = Index::create();
        ux.name("ux_evidence_checkpoints_size")
            .table(EvidenceCheckpoints::Table)
            .unique()
            .if_not_exists()
            .col(EvidenceCheckpoints::TenantId)
            .col(EvidenceCheckpoints::Size);
        manager.create_index(ux.to_owned()).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            EvidenceCheckpoints::Table.into_iden(),
            EvidenceRaw::Table.into_iden(),
            EvidenceLeaves::Table.into_iden(),
            EvidenceLogs::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
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
enum EvidenceLogs {
    Table,
    TenantId,
    Origin,
    Zone,
    Size,
    Frontier,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum EvidenceLeaves {
    Table,
    TenantId,
    Idx,
    Kind,
    CaseId,
    Subject,
    Source,
    LeafHash,
    Content,
    RecordedAt,
    ErasedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum EvidenceRaw {
    Table,
    TenantId,
    Sha256,
    MediaType,
    Size,
    Bytes,
    CreatedAt,
    ErasedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum EvidenceCheckpoints {
    Table,
    Id,
    TenantId,
    Size,
    Root,
    Note,
    CreatedAt,
}
