//! WeCom's address book (通讯录) as the API returns it: departments and users.

use serde::{Deserialize, Serialize};

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
