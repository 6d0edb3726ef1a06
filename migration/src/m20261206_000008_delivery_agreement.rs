use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Where an employee agreed to the delivery addresses (contract clause and
/// version, date), consent to electronic delivery, and the attendance rules
/// acknowledged (version, date).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(Employees::DeliveryClause)
                .text()
                .null()
                .to_owned(),
            ColumnDef::new(Employees::DeliveryAgreedOn)
                .date()
                .null()
                .to_owned(),
            ColumnDef::new(Employees::ElectronicConsent)
                .boolean()
                .null()
                .to_owned(),
            ColumnDef::new(Employees::RulesVersion)
                .text()
                .null()
                .to_owned(),
            ColumnDef::new(Employees::RulesAcknowledgedOn)
                .date()
                .null()
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Employees::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Employees::RulesAcknowledgedOn,
            Employees::RulesVersion,
            Employees::ElectronicConsent,
            Employees::DeliveryAgreedOn,
            Employees::DeliveryClause,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Employees::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Employees {
    Table,
    DeliveryClause,
    DeliveryAgreedOn,
    ElectronicConsent,
    RulesVersion,
    RulesAcknowledgedOn,
}
