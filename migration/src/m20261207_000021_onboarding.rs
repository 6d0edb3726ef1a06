use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The onboarding dialog (issue 13): where a person stands in it, and their
/// answers so far, sealed (they are personal data until they are written
/// to the employee's record, sealed there too).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Onboardings::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Onboardings::Id))
                    .col(string(Onboardings::TenantId))
                    .col(string(Onboardings::UserId))
                    // The question waiting for an answer; `done` or `cancelled` at the end.
                    .col(string(Onboardings::Step))
                    // The answers so far (JSON), sealed with the data key.
                    .col(text(Onboardings::AnswersSealed))
                    // After a correction, the summary comes back instead of the next question.
                    .col(boolean(Onboardings::Correcting))
                    .col(string(Onboardings::StartedBy))
                    .col(timestamp_with_time_zone(Onboardings::StartedAt))
                    .col(timestamp_with_time_zone(Onboardings::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        let mut ux = Index::create();
        ux.name("ux_onboardings_user")
            .table(Onboardings::Table)
            .unique()
            .if_not_exists()
            .col(Onboardings::TenantId)
            .col(Onboardings::UserId);
        manager.create_index(ux.to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Onboardings::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Onboardings {
    Table,
    Id,
    TenantId,
    UserId,
    Step,
    AnswersSealed,
    Correcting,
    StartedBy,
    StartedAt,
    UpdatedAt,
}
