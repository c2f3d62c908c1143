//! Persistence behind one trait, so the pipeline never knows which database it
//! talks to. SQLite (embedded, WAL mode) is the default; a Postgres
//! implementation plugs in behind the same [`Store`] trait.

mod resources;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use sqlite::SqliteStore;

/// A store failure. The pipeline maps every variant to 503 without detail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The URL names a store this build does not support.
    #[error("unsupported store url: {0}")]
    Unsupported(String),
}

/// A gateway API key as stored (the secret itself never is).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    /// Short public id, also embedded in the key.
    pub id: String,
    /// SHA-256 of the full key.
    pub digest: Vec<u8>,
    /// Display name.
    pub name: Option<String>,
    /// User the key acts for.
    pub user: Option<String>,
    /// Team the key belongs to.
    pub team: Option<String>,
    /// Model globs; `None` = every configured model.
    pub models: Option<Vec<String>>,
    /// Endpoint groups; `None` = the provider's whole allowlist.
    pub endpoints: Option<Vec<String>>,
    /// Epoch ms after which the key is refused.
    pub expires_at: Option<i64>,
    /// Epoch ms at which the key was revoked.
    pub revoked_at: Option<i64>,
    /// Epoch ms.
    pub created_at: i64,
    /// Free-form JSON object.
    pub metadata: serde_json::Value,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<String>,
    /// `admin`, `team_admin` or `viewer` for an admin key; `None` for a client key.
    pub admin_role: Option<String>,
}

/// What authenticating with a gateway key needs of its record (the key
/// cache reads only these fields of a key it has not cached: name, metadata
/// and history are for the admin API).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyAuth {
    /// Short public id, also embedded in the key.
    pub id: String,
    /// SHA-256 of the full key.
    pub digest: Vec<u8>,
    /// User the key acts for.
    pub user: Option<String>,
    /// Team the key belongs to.
    pub team: Option<String>,
    /// Model globs; `None` = every configured model.
    pub models: Option<Vec<String>>,
    /// Endpoint groups; `None` = the provider's whole allowlist.
    pub endpoints: Option<Vec<String>>,
    /// Epoch ms after which the key is refused.
    pub expires_at: Option<i64>,
    /// Epoch ms at which the key was revoked.
    pub revoked_at: Option<i64>,
    /// `admin`, `team_admin` or `viewer` for an admin key; `None` for a client key.
    pub admin_role: Option<String>,
}

impl From<&ApiKeyRecord> for KeyAuth {
    fn from(k: &ApiKeyRecord) -> Self {
        KeyAuth {
            id: k.id.clone(),
            digest: k.digest.clone(),
            user: k.user.clone(),
            team: k.team.clone(),
            models: k.models.clone(),
            endpoints: k.endpoints.clone(),
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            admin_role: k.admin_role.clone(),
        }
    }
}

impl ApiKeyRecord {
    /// A client key with only its id and digest: no name, user, team, lists,
    /// expiry or history, empty metadata. The rest goes in by struct update.
    pub fn new(id: String, digest: Vec<u8>) -> Self {
        ApiKeyRecord {
            id,
            digest,
            name: None,
            user: None,
            team: None,
            models: None,
            endpoints: None,
            expires_at: None,
            revoked_at: None,
            created_at: 0,
            metadata: serde_json::json!({}),
            rotated_from: None,
            admin_role: None,
        }
    }
}

/// A partial update of a key; `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    /// New name.
    pub name: Option<Option<String>>,
    /// New user.
    pub user: Option<Option<String>>,
    /// New team.
    pub team: Option<Option<String>>,
    /// New model globs.
    pub models: Option<Option<Vec<String>>>,
    /// New endpoint groups.
    pub endpoints: Option<Option<Vec<String>>>,
    /// New expiry.
    pub expires_at: Option<Option<i64>>,
    /// New metadata.
    pub metadata: Option<serde_json::Value>,
    /// New admin role.
    pub admin_role: Option<Option<String>>,
}

impl KeyPatch {
    /// Applies the patch to a record.
    pub fn apply(&self, k: &mut ApiKeyRecord) {
        if let Some(v) = &self.name {
            k.name.clone_from(v);
        }
        if let Some(v) = &self.user {
            k.user.clone_from(v);
        }
        if let Some(v) = &self.team {
            k.team.clone_from(v);
        }
        if let Some(v) = &self.models {
            k.models.clone_from(v);
        }
        if let Some(v) = &self.endpoints {
            k.endpoints.clone_from(v);
        }
        if let Some(v) = self.expires_at {
            k.expires_at = v;
        }
        if let Some(v) = &self.metadata {
            k.metadata = v.clone();
        }
        if let Some(v) = &self.admin_role {
            k.admin_role.clone_from(v);
        }
    }
}

/// One ledger row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Epoch ms at which the request arrived.
    pub ts: i64,
    /// The `x-request-id`.
    pub request_id: String,
    /// Gateway key id.
    pub key_id: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// Provider name.
    pub provider: Option<String>,
    /// Model (bare name as sent upstream).
    pub model: Option<String>,
    /// Endpoint group.
    pub endpoint: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Status sent to the client; 499 when the client went away first.
    pub status: u16,
    /// Prompt (input) tokens the provider reported.
    pub prompt_tokens: Option<u64>,
    /// Completion (output) tokens the provider reported.
    pub completion_tokens: Option<u64>,
    /// Whole request, ms.
    pub latency_ms: u64,
    /// Time to the first response byte, ms.
    pub ttfb_ms: Option<u64>,
    /// Error code for refusals and failures.
    pub error_code: Option<String>,
    /// What the request cost in micro-dollars (`None`: no price known).
    #[serde(default)]
    pub cost_micros: Option<i64>,
}

/// What `GET /admin/usage` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    /// Gateway key id.
    Key,
    /// User.
    User,
    /// Team.
    Team,
    /// Model.
    Model,
    /// Provider.
    Provider,
    /// Endpoint group.
    Endpoint,
    /// UTC day (`YYYY-MM-DD`) of the request's arrival.
    Day,
}

impl UsageGroup {
    fn column(self) -> &'static str {
        match self {
            UsageGroup::Day => "strftime('%Y-%m-%d', ts / 1000, 'unixepoch')",
            UsageGroup::Key => "key_id",
            UsageGroup::User => "user_id",
            UsageGroup::Team => "team_id",
            UsageGroup::Model => "model",
            UsageGroup::Provider => "provider",
            UsageGroup::Endpoint => "endpoint",
        }
    }
}

/// One row of a usage summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    /// The group's value (`null` for requests without one).
    pub group: Option<String>,
    /// Requests.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Requests answered with a status of 400 or more.
    pub errors: i64,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
    /// Cost in US dollars, as a decimal string.
    pub cost_usd: String,
}

/// A user known to the gateway (first seen through an identity-provider token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserRecord {
    /// `<issuer name>:<subject>`.
    pub id: String,
    /// Issuer name from the configuration.
    pub issuer: Option<String>,
    /// The token's user claim.
    pub subject: Option<String>,
    /// Team from the token, as last seen.
    pub team: Option<String>,
    /// Roles from the token, as last seen.
    pub roles: Vec<String>,
    /// A disabled user is refused (403) even with a valid token.
    pub disabled: bool,
    /// Epoch ms.
    pub first_seen: i64,
    /// Epoch ms.
    pub last_seen: i64,
}

/// An audit event: an authentication failure or lockout, or an admin change.
/// Never a credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Row id (set by the store).
    pub id: Option<i64>,
    /// Epoch ms.
    pub ts: i64,
    /// `authentication_failed`, `locked_out`, or an admin change: `key_created`,
    /// `key_updated`, `key_revoked`, `key_rotated`, `user_updated`, `config_reloaded`.
    pub kind: String,
    /// Why (e.g. `revoked key`, `bad signature`).
    pub reason: String,
    /// Client address as the gateway determined it.
    pub client_ip: Option<String>,
    /// `api_key`, `jwt`, `static_key`, `master_key`, `none`, ...
    pub credential_kind: Option<String>,
    /// Public id of the presented gateway key, when it had one.
    pub key_id: Option<String>,
    /// Issuer named by a presented token (unverified, truncated).
    pub issuer: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Request path (truncated).
    pub path: Option<String>,
    /// Who made an admin change: `master_key`, `key:<id>`, `user:<id>`, `sighup`.
    #[serde(default)]
    pub actor: Option<String>,
    /// What an admin change touched: `key:<id>`, `user:<id>`, `config`.
    #[serde(default)]
    pub target: Option<String>,
    /// The object before the change (as the admin API shows it).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The object after the change.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

/// A provider resource created through the gateway, and its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ResourceRecord {
    /// Insertion order (set by the store; 0 when inserting).
    pub seq: i64,
    /// Provider name.
    pub provider: String,
    /// Resource family (`file`, `batch`, `thread`, ...).
    pub family: String,
    /// The provider's id.
    pub id: String,
    /// `key:<id>`, `user:<id>`, `team:<id>` or `anonymous`.
    pub owner: String,
    /// The id of the resource it lives under (a message's thread, ...).
    pub parent: Option<String>,
    /// Epoch ms.
    pub created_at: i64,
}

/// Which resource records to list, in `seq` order.
#[derive(Debug, Clone, Default)]
pub struct ResourceQuery {
    /// Only this provider.
    pub provider: Option<String>,
    /// Only this family.
    pub family: Option<String>,
    /// Only these owners (`None`: any owner).
    pub owners: Option<Vec<String>>,
    /// Only records with `seq` above this.
    pub seq_above: Option<i64>,
    /// Only records with `seq` below this.
    pub seq_below: Option<i64>,
    /// Newest first.
    pub descending: bool,
    /// At most this many.
    pub limit: usize,
}

/// Own limits and a budget of a key, user or team (JSON as the admin API takes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitOverrideRecord {
    /// `key:<id>`, `user:<id>` or `team:<id>`.
    pub subject: String,
    /// JSON of a `LimitSet`, if any.
    pub limits: Option<String>,
    /// JSON of an own budget, if any.
    pub budget: Option<String>,
}

/// Everything the gateway persists.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Adds a key.
    async fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    /// A key by id.
    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// What authentication needs of the keys of these ids that exist, in no
    /// particular order (one read for many: the key cache loads its misses
    /// in batches).
    async fn get_key_auths(&self, ids: &[String]) -> Result<Vec<KeyAuth>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(self.get_key(id).await?.as_ref().map(KeyAuth::from));
        }
        Ok(found)
    }
    /// Keys ordered by id, after `after`, at most `limit`. With `team_scope`,
    /// only that team's client keys (no admin keys): what a team admin sees.
    async fn list_keys(
        &self,
        after: Option<&str>,
        limit: usize,
        team_scope: Option<&str>,
    ) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Applies a patch; `None` if there is no such key.
    async fn update_key(
        &self,
        id: &str,
        patch: &KeyPatch,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Marks a key revoked; false if there is no such (unrevoked) key.
    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError>;
    /// Inserts `new` and moves the old key's expiry to `old_expires_at` (if
    /// earlier), atomically; false if the old key does not exist or is revoked.
    async fn rotate_key(
        &self,
        old_id: &str,
        new: &ApiKeyRecord,
        old_expires_at: i64,
    ) -> Result<bool, StoreError>;
    /// A setting.
    async fn get_setting(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Stores a setting unless present; true if it was stored.
    async fn put_setting_if_absent(&self, name: &str, value: &str) -> Result<bool, StoreError>;
    /// Appends ledger records in one transaction.
    async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError>;
    /// Writes out whatever the store holds in memory for later (the SQLite
    /// store's pending daily spend), so a clean restart has nothing to catch
    /// up. Called once the ledger's last batch is in, at shutdown.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Sums the ledger by `group` over `[since, until)` (epoch ms); with
    /// `team`, only that team's requests.
    async fn usage_summary(
        &self,
        group: UsageGroup,
        since: Option<i64>,
        until: Option<i64>,
        team: Option<&str>,
    ) -> Result<Vec<UsageRow>, StoreError>;
    /// Records a user seen now: inserts it, or refreshes team, roles and
    /// `last_seen`; returns the stored row (with its `disabled` flag).
    async fn upsert_user(&self, user: &UserRecord) -> Result<UserRecord, StoreError>;
    /// A user by id.
    async fn get_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Users ordered by id, after `after`, at most `limit`; with `team`, only
    /// that team's.
    async fn list_users(
        &self,
        after: Option<&str>,
        limit: usize,
        team: Option<&str>,
    ) -> Result<Vec<UserRecord>, StoreError>;
    /// Enables or disables a user; `None` if there is no such user.
    async fn set_user_disabled(
        &self,
        id: &str,
        disabled: bool,
    ) -> Result<Option<UserRecord>, StoreError>;
    /// Appends audit events.
    async fn insert_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// Audit events in `[since, until)`, newest first, with id below `before` (paging), at most `limit`.
    async fn list_audit(
        &self,
        since: Option<i64>,
        until: Option<i64>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Records resources; an id already recorded keeps its first owner.
    async fn insert_resources(&self, records: &[ResourceRecord]) -> Result<(), StoreError>;
    /// The records of these `(family, id)` pairs at `provider` (missing ones are absent).
    async fn find_resources(
        &self,
        provider: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<ResourceRecord>, StoreError>;
    /// Removes a resource's record and those of everything under it; returns how many went.
    async fn delete_resource(
        &self,
        provider: &str,
        family: &str,
        id: &str,
    ) -> Result<u64, StoreError>;
    /// Resource records matching `query`.
    async fn list_resources(
        &self,
        query: &ResourceQuery,
    ) -> Result<Vec<ResourceRecord>, StoreError>;
    /// Spend in micro-dollars of a budget bucket (`team:<id>`, `user:<id>`,
    /// `key:<id>` or `anonymous`) in requests that arrived at or after `since_ms`.
    async fn spend_since(&self, bucket: &str, since_ms: i64) -> Result<i64, StoreError>;
    /// Every stored own limit and budget.
    async fn list_limit_overrides(&self) -> Result<Vec<LimitOverrideRecord>, StoreError>;
    /// Stores (or, with neither limits nor budget, removes) one subject's own limits and budget.
    async fn put_limit_override(
        &self,
        record: &LimitOverrideRecord,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Ledger records of one request id (for operators and tests).
    async fn usage_by_request(&self, request_id: &str) -> Result<Vec<UsageRecord>, StoreError>;
}

/// Shared handle to the store.
pub type SharedStore = Arc<dyn Store>;

/// Opens the store named by `url` and applies its migrations.
pub async fn open(url: &str) -> Result<SharedStore, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else {
        Err(StoreError::Unsupported(url.to_owned()))
    }
}
