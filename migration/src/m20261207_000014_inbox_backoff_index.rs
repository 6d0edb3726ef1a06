use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Each claim first asks which senders wait after a failure
/// (`not_before` in the future): without an index it read every
/// unprocessed event, so a backlog of 100,000 cost a scan per batch. Partial
/// like the queue's indexes: only unprocessed events with a back-off.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS ix_inbound_events_backing_off ON inbound_events (not_before) WHERE processed_at IS NULL AND not_before IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS ix_inbound_events_backing_off")
            .await?;
        Ok(())
    }
}
