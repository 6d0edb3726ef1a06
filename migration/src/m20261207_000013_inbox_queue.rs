use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The inbox is the queue of inbound work (no job row per callback): a
/// failed attempt is counted on the event itself, with the time before which
/// it is not tried again and the error it met; and two partial indexes serve
/// the claim, which takes the oldest unprocessed events whose sender has no
/// earlier one still waiting.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(InboundEvents::Attempts)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(InboundEvents::NotBefore)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(InboundEvents::LastError)
                .text()
                .null()
                .to_owned(),
        ];
        // One column per statement: SQLite adds one at a time.
        for column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(InboundEvents::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        // Partial indexes are written by hand: sea-query's index builder
        // has no WHERE clause for both engines. Both engines read this SQL.
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_inbound_events_queue ON inbound_events (id) WHERE processed_at IS NULL",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_inbound_events_sender_queue ON inbound_events (tenant_id, from_user, id) WHERE processed_at IS NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS ix_inbound_events_sender_queue")
            .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS ix_inbound_events_queue")
            .await?;
        for column in [
            InboundEvents::LastError,
            InboundEvents::NotBefore,
            InboundEvents::Attempts,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(InboundEvents::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum InboundEvents {
    Table,
    Attempts,
    NotBefore,
    LastError,
}
