//! Which platform a tenant uses: [`build`], the one place that matches on a
//! platform's name.

use std::sync::Arc;
use std::time::Duration;

use super::{Platform, dingtalk, feishu, wecom};
use crate::config::TenantConfig;

/// Bot text a platform itself answers with (rendered from the templates).
#[derive(Debug, Clone, Default)]
pub struct PlatformTexts {
    /// The toast a card press is answered with, where the platform shows
    /// one (Feishu).
    pub card_toast: Option<String>,
}

/// [`build_with`] without bot text (for commands that only call the API).
pub fn build(tenant: &TenantConfig, timeout: Duration) -> Result<Option<Platform>, String> {
    build_with(tenant, timeout, &PlatformTexts::default())
}

/// `tenant`'s chat platform, or `None` when it has none configured (then
/// chat messages fail as permanent and the other channels still go out).
/// `timeout` bounds every API request. The one place that matches on a
/// platform's name.
pub fn build_with(
    tenant: &TenantConfig,
    timeout: Duration,
    texts: &PlatformTexts,
) -> Result<Option<Platform>, String> {
    let named = |e: &dyn std::fmt::Display| format!("tenant {}: {e}", tenant.id);
    if let Some(w) = &tenant.wecom {
        let callbacks = wecom::callbacks::WecomCallbacks::new(w).map_err(|e| named(&e))?;
        return Ok(Some(Platform {
            api: Arc::new(wecom::api::WecomApi::new(
                &w.api_base,
                &w.corp_id,
                w.secret.clone(),
                w.agent_id,
                timeout,
            )),
            callbacks: Some(Arc::new(callbacks)),
            listener: None,
        }));
    }
    if let Some(d) = &tenant.dingtalk {
        return dingtalk::platform(d, timeout)
            .map(Some)
            .map_err(|e| named(&e));
    }
    if let Some(f) = &tenant.feishu {
        return Ok(Some(feishu::platform(f, timeout, texts.card_toast.clone())));
    }
    Ok(None)
}
