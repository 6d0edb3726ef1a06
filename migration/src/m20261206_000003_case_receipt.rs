use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// When the employee's copy of the formal notice was first proven received
/// (`receipt_at`) and by what (`receipt_via`: `acknowledged`, `read:chat`):
/// the deadline runs from it, no longer from when the notice was queued.
///
/// Existing cases: an acknowledged notice counts as received when it was
/// acknowledged (its deadline kept); an open or paused case whose notice has
/// no proof of receipt loses its deadline until one comes (the conservative
/// reading: no 自离 on a notice nobody can prove arrived); departing and
/// resolved cases keep theirs, as the record of what happened.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AbsenceCases::Table)
                    .add_column(
                        ColumnDef::new(AbsenceCases::ReceiptAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AbsenceCases::Table)
                    .add_column(ColumnDef::new(AbsenceCases::ReceiptVia).string().null())
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE absence_cases SET receipt_at = acknowledged_at, receipt_via = 'acknowledged' \
             WHERE acknowledged_at IS NOT NULL",
        )
        .await?;
        // Only where the ladder still runs: a closed or departing case keeps
        // the record of what happened.
        db.execute_unprepared(
            "UPDATE absence_cases SET deadline_at = NULL \
             WHERE receipt_at IS NULL AND status IN ('open', 'paused')",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [AbsenceCases::ReceiptVia, AbsenceCases::ReceiptAt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AbsenceCases::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AbsenceCases {
    Table,
    ReceiptAt,
    ReceiptVia,
}
