use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The RFC 3161 time-stamp of a checkpoint (`evidence.tsa_url`) and the
/// time its authority put in it.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EvidenceCheckpoints::Table)
                    .add_column(ColumnDef::new(EvidenceCheckpoints::Tsr).blob().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EvidenceCheckpoints::Table)
                    .add_column(
                        ColumnDef::new(EvidenceCheckpoints::StampedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [EvidenceCheckpoints::StampedAt, EvidenceCheckpoints::Tsr] {
            manager
                .alter_table(
                    Table::alter()
                        .table(EvidenceCheckpoints::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum EvidenceCheckpoints {
    Table,
    Tsr,
    StampedAt,
}
