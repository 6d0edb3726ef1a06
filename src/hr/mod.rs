//! HR's toolkit beside the absence ladder, all from chat: contract expiry
//! reminders, follow-ups after departure, the risk score, the archive and
//! a person's history, and the onboarding dialog. The monthly sheet and
//! shifts are attendance's (`attendance::sheet`, `attendance::shift`).

pub mod archive;
pub(crate) mod cards;
pub mod contracts;
pub mod history;
pub mod leavers;
pub mod onboarding;
pub mod risk;

/// HR's daily work, with each scan job of a tenant (daily, then hourly):
/// contract reminders, follow-ups after departure, onboarding of new hires
/// and risk scores. Each is idempotent; one that fails is logged, does not
/// stop the others, and is tried again with the next hour's scan.
pub async fn daily(rt: &crate::runtime::Runtime, tenant: &crate::runtime::Tenant) {
    fn logged<T: std::fmt::Debug + PartialEq + Default>(
        tenant: &str,
        what: &str,
        done: Result<T, crate::conversation::turn::HandleError>,
    ) {
        match done {
            Ok(r) if r != T::default() => tracing::info!(tenant, report = ?r, "{what}"),
            Ok(_) => {}
            Err(e) => tracing::warn!(tenant, error = %e, "{what} failed"),
        }
    }
    let id = tenant.config.id.as_str();
    let now = rt.clock.now();
    logged(
        id,
        "contract reminders",
        contracts::remind(rt, tenant, now).await,
    );
    logged(
        id,
        "after-departure follow-ups",
        leavers::follow_up(rt, tenant, now).await,
    );
    logged(
        id,
        "onboarding of new hires",
        onboarding::start_new_hires(rt, tenant, now, NEW_HIRE_DAYS).await,
    );
    logged(id, "risk scores", risk::alert(rt, tenant, now).await);
}

/// How recent a hire date makes someone a new hire whose onboarding dialog
/// starts by itself.
pub const NEW_HIRE_DAYS: i64 = 7;
