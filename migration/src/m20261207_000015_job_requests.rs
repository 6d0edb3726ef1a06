use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Jobs asked for and not yet handed to the job queue: a caller writes its
/// request in its own transaction (so the job is committed with the rows
/// that called for it, or not at all), and the relay in `workers` pushes it
/// through apalis' API and deletes it. A request whose queue and key are
/// already waiting is not added again.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(JobRequests::Table)
                    .if_not_exists()
                    // The relay takes requests in this order.
                    .col(big_pk_auto(JobRequests::Id))
                    // apalis' queue name, e.g. `rollcall.scan`.
                    .col(text(JobRequests::Queue))
                    // The job's idempotency key, e.g. `scan:<tenant>:<day>`.
                    .col(text(JobRequests::IdempotencyKey))
                    // The job's payload as the queue stores it (JSON).
                    .col(blob(JobRequests::Args))
                    // Not before this time.
                    .col(timestamp_with_time_zone(JobRequests::RunAt))
                    .col(timestamp_with_time_zone(JobRequests::CreatedAt))
                    .to_owned(),
            )
            .await?;
        let mut ux = Index::create();
        ux.name("ux_job_requests_queue_key")
            .table(JobRequests::Table)
            .unique()
            .if_not_exists()
            .col(JobRequests::Queue)
            .col(JobRequests::IdempotencyKey);
        manager.create_index(ux.to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(JobRequests::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum JobRequests {
    Table,
    Id,
    Queue,
    IdempotencyKey,
    Args,
    RunAt,
    CreatedAt,
}
