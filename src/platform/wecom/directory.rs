//! WeCom's address book (通讯录) as the API returns it: departments and users.

use serde::{Deserialize, Serialize};

use super::api::WecomApi;
use crate::platform::PlatformError;

/// One department (`department/list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub parentid: Option<i64>,
}

/// One member (`user/list`). WeCom returns `mobile` and `email` only to apps
/// allowed to read them; both are optional here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUser {
    pub userid: String,
    pub name: String,
    #[serde(default)]
    pub department: Vec<i64>,
    #[serde(default)]
    pub main_department: Option<i64>,
    #[serde(default)]
    pub position: Option<String>,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// The user ids of the member's direct leaders (直属上级).
    #[serde(default)]
    pub direct_leader: Vec<String>,
    /// 1 active, 2 disabled, 4 not yet activated, 5 left.
    #[serde(default)]
    pub status: Option<i64>,
}

impl WecomApi {
    /// All departments the app can see (`department/list`).
    pub async fn departments(&self) -> Result<Vec<Department>, PlatformError> {
        let (value, _) = self.get_json("/cgi-bin/department/list", &[]).await?;
        field(value, "department")
    }

    /// The members of a department (`user/list`), with those of its
    /// sub-departments when `fetch_child`.
    pub async fn users(
        &self,
        department_id: i64,
        fetch_child: bool,
    ) -> Result<Vec<DirectoryUser>, PlatformError> {
        let id = department_id.to_string();
        let child = if fetch_child { "1" } else { "0" };
        let (value, _) = self
            .get_json(
                "/cgi-bin/user/list",
                &[("department_id", id.as_str()), ("fetch_child", child)],
            )
            .await?;
        field(value, "userlist")
    }
}

/// The list under `name` in an answer; an answer without it is not one we
/// understand, and asking again will not change that.
fn field<T: serde::de::DeserializeOwned>(
    mut value: serde_json::Value,
    name: &str,
) -> Result<Vec<T>, PlatformError> {
    match value.get_mut(name).map(serde_json::Value::take) {
        Some(list) => serde_json::from_value(list)
            .map_err(|e| PlatformError::Permanent(format!("unreadable `{name}` ({e})"))),
        None => Err(PlatformError::Permanent(format!(
            "the answer has no `{name}`"
        ))),
    }
}
