//! Authentication: headers → [`Principal`] (client) or [`Admin`] (master key).
//!
//! Deny by default: [`layer`] wraps every route; only [`PUBLIC_ROUTES`] pass
//! without a credential. A credential comes from exactly one of
//! `Authorization: Bearer`, `x-api-key`, `api-key` or `x-goog-api-key`; two
//! different ones, or one in the query string, are refused.

pub mod keys;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use moka::sync::Cache;

use crate::AppState;
use crate::clock::SharedClock;
use crate::error::ApiError;
use crate::secret::Secret;
use crate::store::{ApiKeyRecord, SharedStore};

/// Routes that need no credential. Everything else is authenticated.
pub const PUBLIC_ROUTES: &[&str] = &["/healthz", "/readyz"];

/// Headers a credential may arrive in.
pub const CREDENTIAL_HEADERS: &[&str] =
    &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// Query parameters that look like credentials; a request carrying one is refused.
const CREDENTIAL_QUERY_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "api-key",
    "apikey",
    "access_token",
    "token",
    "x-api-key",
    "x-goog-api-key",
    "authorization",
];

/// Who is calling: built only by this module, required by everything after it.
#[derive(Debug, Clone)]
pub struct Principal {
    key: Arc<ApiKeyRecord>,
}

impl Principal {
    /// The gateway key's public id.
    pub fn key_id(&self) -> &str {
        &self.key.id
    }
    /// The user the key acts for.
    pub fn user(&self) -> Option<&str> {
        self.key.user.as_deref()
    }
    /// The team.
    pub fn team(&self) -> Option<&str> {
        self.key.team.as_deref()
    }
    /// The key's model globs, if restricted.
    pub fn models(&self) -> Option<&[String]> {
        self.key.models.as_deref()
    }
    /// The key's endpoint groups, if restricted.
    pub fn endpoints(&self) -> Option<&[String]> {
        self.key.endpoints.as_deref()
    }
}

/// Proof that the request carried the master key.
#[derive(Debug, Clone, Copy)]
pub struct Admin(());

/// Checks credentials against the key cache and the store.
pub struct Authenticator {
    store: SharedStore,
    clock: SharedClock,
    /// id → record, or `None` for ids the store does not know (negative cache).
    cache: Cache<String, Option<Arc<ApiKeyRecord>>>,
    master_digest: [u8; 32],
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// A new authenticator; `master` is the admin key.
    pub fn new(store: SharedStore, clock: SharedClock, master: &Secret) -> Self {
        Self::with_master_digest(store, clock, keys::digest(master.expose()))
    }

    /// A new authenticator from the master key's digest.
    pub fn with_master_digest(
        store: SharedStore,
        clock: SharedClock,
        master_digest: [u8; 32],
    ) -> Self {
        Authenticator {
            store,
            clock,
            cache: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
            master_digest,
        }
    }

    /// Drops a key from the cache so the next request sees the store's state.
    pub fn invalidate(&self, id: &str) {
        self.cache.invalidate(id);
    }

    /// Authenticates a client request.
    pub async fn client(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Principal, ApiError> {
        let token = credential(headers, query)?.ok_or(ApiError::InvalidApiKey("no credential"))?;
        let id = keys::parse(token).map_err(|e| match e {
            keys::KeyFormatError::Malformed => ApiError::InvalidApiKey("malformed key"),
            keys::KeyFormatError::Checksum => ApiError::InvalidApiKey("bad checksum"),
        })?;
        let record = match self.cache.get(id) {
            Some(hit) => hit,
            None => {
                let found = self
                    .store
                    .get_key(id)
                    .await
                    .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?
                    .map(Arc::new);
                self.cache.insert(id.to_owned(), found.clone());
                found
            }
        };
        let record = record.ok_or(ApiError::InvalidApiKey("unknown key"))?;
        if !keys::verify(token, &record.digest) {
            return Err(ApiError::InvalidApiKey("digest mismatch"));
        }
        if record.revoked_at.is_some() {
            return Err(ApiError::InvalidApiKey("revoked key"));
        }
        if record.expires_at.is_some_and(|t| self.clock.now_ms() >= t) {
            return Err(ApiError::InvalidApiKey("expired key"));
        }
        Ok(Principal { key: record })
    }

    /// Authenticates an admin request (master key only).
    pub fn admin(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Admin, ApiError> {
        let token =
            credential(headers, query)?.ok_or(ApiError::AdminUnauthorized("no credential"))?;
        if keys::verify(token, &self.master_digest) {
            Ok(Admin(()))
        } else {
            Err(ApiError::AdminUnauthorized("not the master key"))
        }
    }
}

/// Finds the one credential in a request, refusing two different ones and any in the query.
pub fn credential<'a>(
    headers: &'a HeaderMap,
    query: Option<&str>,
) -> Result<Option<&'a str>, ApiError> {
    if let Some(q) = query
        && query_has_credential(q)
    {
        return Err(ApiError::CredentialInQuery);
    }
    let mut found: Option<&str> = None;
    for name in CREDENTIAL_HEADERS {
        for value in headers.get_all(*name) {
            let v = value
                .to_str()
                .map_err(|_| ApiError::InvalidApiKey("non-ascii credential"))?
                .trim();
            let token = if *name == "authorization" {
                let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(ApiError::InvalidApiKey("unsupported authorization scheme"));
                }
                rest.trim()
            } else {
                v
            };
            if token.is_empty() {
                continue;
            }
            match found {
                Some(prev) if prev != token => return Err(ApiError::MultipleCredentials),
                _ => found = Some(token),
            }
        }
    }
    Ok(found)
}

/// Checks every pair both as sent and percent-decoded, so `k%65y=...` (which a
/// provider would decode to `key`) is caught like `key=...`.
fn query_has_credential(q: &str) -> bool {
    let looks_like = |name: &str, value: &str| {
        let lname = name.trim().to_ascii_lowercase();
        let value = value.trim_start();
        CREDENTIAL_QUERY_PARAMS.contains(&lname.as_str())
            || value.starts_with(keys::KEY_PREFIX)
            || value.starts_with(keys::MASTER_PREFIX)
            || value.starts_with("sk-")
    };
    q.split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        looks_like(name, value)
    }) || serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .is_ok_and(|pairs| pairs.iter().any(|(n, v)| looks_like(n, v)))
}

/// The authentication layer around every route.
pub async fn layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if PUBLIC_ROUTES.contains(&path) {
        return next.run(req).await;
    }
    let query = req.uri().query();
    let result = if path == "/admin" || path.starts_with("/admin/") {
        state.authn.admin(req.headers(), query).map(|a| {
            req.extensions_mut().insert(a);
        })
    } else {
        state.authn.client(req.headers(), query).await.map(|p| {
            req.extensions_mut().insert(p);
        })
    };
    match result {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let rid = crate::request_id_of(&req);
            tracing::info!(request_id = %rid, path = %req.uri().path(), cause = %e, status = e.status().as_u16(), "authentication refused");
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

    #[test]
    fn one_credential_only() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(credential(&h, None).unwrap(), Some("abc"));
        h.insert("x-api-key", HeaderValue::from_static("abc"));
        assert_eq!(credential(&h, None).unwrap(), Some("abc"));
        h.insert("api-key", HeaderValue::from_static("def"));
        assert!(matches!(
            credential(&h, None),
            Err(ApiError::MultipleCredentials)
        ));
    }

    #[test]
    fn query_credentials_are_refused() {
        let h = HeaderMap::new();
        assert!(matches!(
            credential(&h, Some("key=abc")),
            Err(ApiError::CredentialInQuery)
        ));
        assert!(matches!(
            credential(&h, Some("a=1&API_KEY=x")),
            Err(ApiError::CredentialInQuery)
        ));
        assert!(matches!(
            credential(&h, Some("x=pcs_abc")),
            Err(ApiError::CredentialInQuery)
        ));
        assert!(matches!(
            credential(&h, Some("k%65y=AIza123")),
            Err(ApiError::CredentialInQuery)
        ));
        assert!(matches!(
            credential(&h, Some("x=pcs%5Fabc")),
            Err(ApiError::CredentialInQuery)
        ));
        assert!(
            credential(&h, Some("limit=10&after=file-1"))
                .unwrap()
                .is_none()
        );
    }
}
