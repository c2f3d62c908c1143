//! Authentication: headers → [`Principal`] (client) or [`Admin`] (master key).
//!
//! Deny by default: [`layer`] wraps every route; only `auth.public_paths`
//! (default [`PUBLIC_ROUTES`]) pass without a credential. A credential comes
//! from exactly one of `Authorization: Bearer`, `x-api-key`, `api-key` or
//! `x-goog-api-key`; two different ones, or one in the query string, are
//! refused. A bearer credential is a gateway key if it has the gateway key's
//! prefix, a shared key if it equals one (constant-time), and otherwise
//! refused — never several kinds tried blindly.
//!
//! A request without a credential header is authenticated by its connection's
//! verified TLS client certificate, when `tls.client_ca` is configured (see
//! [`crate::tls`]); a credential header, when present, wins over the
//! certificate. Client certificates never open the admin API.
//!
//! Before any credential is examined, an address that failed too often is
//! answered 429 ([`lockout`]); every failure is written to the audit log
//! ([`audit`]) without the credential.

pub mod admin;
pub mod audit;
pub mod jwt;
mod key_cache;
pub mod keys;
pub mod lockout;
mod principal;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use moka::sync::Cache;
use subtle::ConstantTimeEq;

pub use admin::{Admin, AdminRole};
pub use principal::{CredentialKind, Principal};

use crate::AppState;
use crate::clock::SharedClock;
use crate::config::{AdminConfig, AuthConfig};
use crate::error::ApiError;
use crate::store::{AuditEvent, SharedStore, UserRecord};
use crate::tls::{ClientCert, PeerCertificate};
use audit::AuditLog;
use jwt::{AppCheckVerifier, JwtError, JwtVerifier};
use lockout::Lockout;

/// Paths that need no credential by default (`auth.public_paths` replaces them).
pub const PUBLIC_ROUTES: &[&str] = crate::config::DEFAULT_PUBLIC_PATHS;

/// Headers a credential may arrive in.
/// (Named once: a `&str` name is parsed and hashed anew on every lookup.)
pub const CREDENTIAL_HEADERS: [http::HeaderName; 4] = [
    http::header::AUTHORIZATION,
    http::HeaderName::from_static("x-api-key"),
    http::HeaderName::from_static("api-key"),
    http::HeaderName::from_static("x-goog-api-key"),
];

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

/// Why authentication failed, for the audit log (never the credential).
#[derive(Debug)]
pub struct Refusal {
    /// What the client gets.
    pub error: ApiError,
    /// What kind of credential it was (`api_key`, `jwt`, `none`, ...).
    pub credential_kind: &'static str,
    /// The public id of a presented gateway key.
    pub key_id: Option<String>,
    /// The configured issuer a refused token claimed.
    pub issuer: Option<String>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal {
            error,
            credential_kind: "unknown",
            key_id: None,
            issuer: None,
        }
    }
}

#[derive(Debug)]
struct StaticEntry {
    digest: [u8; 32],
    principal: Principal,
}

/// Checks credentials against the key cache, the store and the configuration.
pub struct Authenticator {
    store: SharedStore,
    clock: SharedClock,
    /// Gateway keys by id, read through from the store in batches.
    keys: key_cache::KeyCache,
    master_digest: [u8; 32],
    statics: Vec<StaticEntry>,
    disabled: bool,
    public_paths: Vec<String>,
    anonymous: Principal,
    lockout: Option<Lockout>,
    trusted_proxies: Vec<ipnet::IpNet>,
    audit: AuditLog,
    /// user id → disabled flag, for identity-provider users.
    users: Cache<String, bool>,
    jwt: JwtVerifier,
    app_check: Option<AppCheckVerifier>,
    /// Requests whose App Check token was missing or invalid while App Check is optional.
    app_check_failures: std::sync::atomic::AtomicU64,
    /// Admin role mapping and address allowlist; replaced on reload.
    admin: arc_swap::ArcSwap<AdminConfig>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// A new authenticator.
    pub fn new(
        store: SharedStore,
        clock: SharedClock,
        master_digest: [u8; 32],
        auth: &AuthConfig,
        admin: &AdminConfig,
        audit: AuditLog,
    ) -> Self {
        let statics = auth
            .static_keys
            .iter()
            .map(|k| StaticEntry {
                digest: keys::digest(k.key.expose()),
                principal: Principal::static_key(&k.name, k.user.clone(), k.team.clone()),
            })
            .collect();
        Authenticator {
            keys: key_cache::KeyCache::new(store.clone()),
            store,
            master_digest,
            statics,
            disabled: auth.disabled,
            public_paths: auth.public_paths.clone(),
            anonymous: Principal::anonymous(),
            lockout: auth.lockout.map(|c| Lockout::new(c, clock.clone())),
            trusted_proxies: auth.trusted_proxies.clone(),
            audit,
            users: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            jwt: JwtVerifier::new(auth.jwt.clone(), clock.clone()),
            app_check: auth
                .app_check
                .clone()
                .map(|c| AppCheckVerifier::new(c, clock.clone())),
            app_check_failures: std::sync::atomic::AtomicU64::new(0),
            admin: arc_swap::ArcSwap::from_pointee(admin.clone()),
            clock,
        }
    }

    /// Fetches every identity provider's key set once (failures are logged, not fatal).
    pub async fn prefetch(&self) {
        self.jwt.prefetch().await;
        if let Some(a) = &self.app_check {
            a.prefetch().await;
        }
    }

    /// Requests let through without a valid App Check token (App Check optional).
    pub fn app_check_failures(&self) -> u64 {
        self.app_check_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets a user's cached state so the next request sees the store's.
    pub fn invalidate_user(&self, id: &str) {
        self.users.invalidate(id);
    }

    /// Swaps in a reloaded `admin:` section (roles, allowed addresses).
    pub fn set_admin_config(&self, admin: &AdminConfig) {
        self.admin.store(Arc::new(admin.clone()));
    }

    /// Drops a key from the cache so the next request sees the store's state.
    pub fn invalidate(&self, id: &str) {
        self.keys.invalidate(id);
    }

    /// The lockout, when enabled.
    pub fn lockout(&self) -> Option<&Lockout> {
        self.lockout.as_ref()
    }

    /// Authenticates a client request by its headers alone.
    pub async fn client(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Principal, Refusal> {
        self.client_with_cert(headers, query, None).await
    }

    /// Authenticates a client request: a credential header wins when present
    /// (and is then the only thing checked); otherwise the TLS client
    /// certificate of the connection, if one was verified.
    pub async fn client_with_cert(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        cert: Option<&PeerCertificate>,
    ) -> Result<Principal, Refusal> {
        let Some(token) = credential(headers, query)? else {
            return match cert {
                Some(PeerCertificate::Verified(c)) => {
                    self.app_check(headers).await?;
                    self.cert_user(c).await
                }
                Some(PeerCertificate::Refused) => Err(Refusal {
                    error: ApiError::InvalidApiKey("client certificate not accepted"),
                    credential_kind: "client_cert",
                    key_id: None,
                    issuer: None,
                }),
                None => Err(Refusal {
                    error: ApiError::InvalidApiKey("no credential"),
                    credential_kind: "none",
                    key_id: None,
                    issuer: None,
                }),
            };
        };
        self.app_check(headers).await?;
        if token.starts_with(keys::KEY_PREFIX) {
            return self.api_key(token).await;
        }
        if let Some(p) = self.static_key(token) {
            return Ok(p);
        }
        if !self.jwt.is_empty() && JwtVerifier::looks_like_jwt(token) {
            return self.jwt_user(token).await;
        }
        Err(Refusal {
            error: ApiError::InvalidApiKey("not a gateway key, shared key or JWT"),
            credential_kind: "unknown",
            key_id: None,
            issuer: None,
        })
    }

    /// Firebase App Check: with `required`, a missing or invalid
    /// `X-Firebase-AppCheck` token is 401; otherwise it is logged and counted.
    async fn app_check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(verifier) = &self.app_check else {
            return Ok(());
        };
        let token = headers
            .get(http::HeaderName::from_static("x-firebase-appcheck"))
            .and_then(|v| v.to_str().ok());
        let result = match token {
            None => Err("app check token missing"),
            Some(t) => match verifier.verify(t).await {
                Ok(_) => Ok(()),
                Err(JwtError::Invalid(why)) => Err(why),
                Err(JwtError::KeySetUnavailable(e)) => {
                    if verifier.required() {
                        return Err(Refusal::from(ApiError::IdentityProviderUnavailable(e)));
                    }
                    Err("app check key set unavailable")
                }
            },
        };
        match result {
            Ok(()) => Ok(()),
            Err(why) if verifier.required() => Err(Refusal {
                error: ApiError::InvalidApiKey(why),
                credential_kind: "app_check",
                key_id: None,
                issuer: None,
            }),
            Err(why) => {
                self.app_check_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    reason = why,
                    "request without a valid App Check token let through (app_check.required is false)"
                );
                Ok(())
            }
        }
    }

    async fn jwt_user(&self, token: &str) -> Result<Principal, Refusal> {
        let id = match self.jwt.verify(token).await {
            Ok(id) => id,
            Err(JwtError::Invalid(why)) => {
                return Err(Refusal {
                    error: ApiError::InvalidApiKey(why),
                    credential_kind: "jwt",
                    key_id: None,
                    issuer: self.jwt.claimed_issuer(token).map(str::to_owned),
                });
            }
            Err(JwtError::KeySetUnavailable(e)) => {
                return Err(Refusal {
                    error: ApiError::IdentityProviderUnavailable(e),
                    credential_kind: "jwt",
                    key_id: None,
                    issuer: self.jwt.claimed_issuer(token).map(str::to_owned),
                });
            }
        };
        let disabled = self
            .user_disabled(
                &id.user,
                &id.issuer_name,
                &id.subject,
                id.team.as_ref(),
                &id.roles,
            )
            .await?;
        if disabled {
            return Err(Refusal {
                error: ApiError::UserDisabled,
                credential_kind: "jwt",
                key_id: None,
                issuer: Some(id.issuer_name),
            });
        }
        Ok(Principal::jwt(id.issuer_name, id.user, id.team, id.roles))
    }

    /// Whether an identity-provider or certificate user is disabled; a user
    /// seen for the first time becomes a user record.
    async fn user_disabled(
        &self,
        user: &str,
        issuer: &str,
        subject: &str,
        team: Option<&String>,
        roles: &[String],
    ) -> Result<bool, Refusal> {
        if let Some(d) = self.users.get(user) {
            return Ok(d);
        }
        let now = self.clock.now_ms();
        let stored = self
            .store
            .upsert_user(&UserRecord {
                id: user.to_owned(),
                issuer: Some(issuer.to_owned()),
                subject: Some(subject.to_owned()),
                team: team.cloned(),
                roles: roles.to_vec(),
                disabled: false,
                first_seen: now,
                last_seen: now,
            })
            .await
            .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
        self.users.insert(user.to_owned(), stored.disabled);
        Ok(stored.disabled)
    }

    /// The principal of a verified client certificate. Its user is a user
    /// record like a JWT user's (issuer `client_cert`), so it can be disabled.
    async fn cert_user(&self, cert: &ClientCert) -> Result<Principal, Refusal> {
        let key_id = format!("cert:{}", cert.fingerprint.get(..16).unwrap_or(""));
        let refuse = |error| Refusal {
            error,
            credential_kind: "client_cert",
            key_id: Some(key_id.clone()),
            issuer: None,
        };
        let Some(user) = &cert.identity else {
            return Err(refuse(ApiError::InvalidApiKey(
                "client certificate has no usable identity",
            )));
        };
        if self
            .user_disabled(user, "client_cert", user, None, &[])
            .await?
        {
            return Err(refuse(ApiError::UserDisabled));
        }
        Ok(Principal::client_cert(&cert.fingerprint, user.clone()))
    }

    async fn api_key(&self, token: &str) -> Result<Principal, Refusal> {
        let entry = self.key_entry(token).await?;
        if entry.admin_role().is_some() {
            return Err(Refusal {
                error: ApiError::InvalidApiKey("an admin key cannot call models"),
                credential_kind: "api_key",
                key_id: entry.principal().key_id().map(str::to_owned),
                issuer: None,
            });
        }
        Ok(entry.principal().clone())
    }

    /// A valid (known, matching, unrevoked, unexpired) gateway key's cache entry.
    async fn key_entry(&self, token: &str) -> Result<key_cache::KeyEntry, Refusal> {
        let refuse = |reason, key_id: Option<&str>| Refusal {
            error: ApiError::InvalidApiKey(reason),
            credential_kind: "api_key",
            key_id: key_id.map(str::to_owned),
            issuer: None,
        };
        let id = keys::parse(token).map_err(|e| match e {
            keys::KeyFormatError::Malformed => refuse("malformed key", None),
            keys::KeyFormatError::Checksum => refuse("bad checksum", None),
        })?;
        let entry = self
            .keys
            .get(id)
            .await
            .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?
            .ok_or_else(|| refuse("unknown key", Some(id)))?;
        if !entry.matches(token) {
            return Err(refuse("digest mismatch", Some(id)));
        }
        if entry.revoked() {
            return Err(refuse("revoked key", Some(id)));
        }
        if entry.expired(self.clock.now_ms()) {
            return Err(refuse("expired key", Some(id)));
        }
        Ok(entry)
    }

    /// Compares against every shared key in constant time (all are compared).
    fn static_key(&self, token: &str) -> Option<Principal> {
        let d = keys::digest(token);
        let mut found = None;
        for s in &self.statics {
            if bool::from(s.digest.ct_eq(&d)) {
                found = Some(s.principal.clone());
            }
        }
        found
    }

    /// Authenticates an admin request: the master key, a gateway key with an
    /// `admin_role`, or an identity token whose roles map through
    /// `admin.roles`. Any other credential is refused (401): a client key never
    /// opens the admin API.
    pub async fn admin(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Admin, Refusal> {
        let refuse = |reason, kind| Refusal {
            error: ApiError::AdminUnauthorized(reason),
            credential_kind: kind,
            key_id: None,
            issuer: None,
        };
        let token = credential(headers, query)?.ok_or_else(|| refuse("no credential", "none"))?;
        if keys::verify(token, &self.master_digest) {
            return Ok(Admin::master());
        }
        if token.starts_with(keys::MASTER_PREFIX) {
            return Err(refuse("not the master key", "master_key"));
        }
        if token.starts_with(keys::KEY_PREFIX) {
            let entry = self.key_entry(token).await.map_err(|r| Refusal {
                error: match r.error {
                    ApiError::InvalidApiKey(why) => ApiError::AdminUnauthorized(why),
                    other => other,
                },
                ..r
            })?;
            let key = entry.principal();
            let id = key.key_id().unwrap_or("");
            let not_admin = |why| Refusal {
                error: ApiError::AdminUnauthorized(why),
                credential_kind: "api_key",
                key_id: Some(id.to_owned()),
                issuer: None,
            };
            let role = entry
                .admin_role()
                .and_then(AdminRole::parse)
                .ok_or_else(|| not_admin("a client key cannot open the admin API"))?;
            if role == AdminRole::TeamAdmin && key.team().is_none() {
                return Err(not_admin("a team_admin key without a team"));
            }
            return Ok(Admin::new(
                role,
                key.team().map(str::to_owned),
                format!("key:{id}"),
            ));
        }
        let roles = self.admin.load();
        if !roles.roles.is_empty() && !self.jwt.is_empty() && JwtVerifier::looks_like_jwt(token) {
            let p = self.jwt_user(token).await?;
            let not_admin = |why| Refusal {
                error: ApiError::AdminUnauthorized(why),
                credential_kind: "jwt",
                key_id: None,
                issuer: p.issuer().map(str::to_owned),
            };
            let role = roles
                .roles
                .role_of(p.roles())
                .ok_or_else(|| not_admin("the token carries no admin role"))?;
            if role == AdminRole::TeamAdmin && p.team().is_none() {
                return Err(not_admin("a team_admin token without a team"));
            }
            return Ok(Admin::new(
                role,
                p.team().map(str::to_owned),
                format!("user:{}", p.user().unwrap_or("")),
            ));
        }
        Err(refuse("not an admin credential", "unknown"))
    }

    /// True when `ip` may reach the admin API (`admin.allow_ips`, empty = anywhere).
    fn admin_address_allowed(&self, ip: IpAddr) -> bool {
        let admin = self.admin.load();
        admin.allow_ips.is_empty() || admin.allow_ips.iter().any(|n| n.contains(&ip))
    }

    fn is_public(&self, path: &str) -> bool {
        self.public_paths.iter().any(|p| p == path)
    }

    fn audit(
        &self,
        kind: &str,
        reason: String,
        ip: IpAddr,
        refusal: Option<&Refusal>,
        req: &Request,
    ) {
        let path: String = req.uri().path().chars().take(256).collect();
        self.audit.record(AuditEvent {
            id: None,
            ts: self.clock.now_ms(),
            kind: kind.to_owned(),
            reason,
            client_ip: Some(ip.to_string()),
            credential_kind: refusal.map(|r| r.credential_kind.to_owned()),
            key_id: refusal.and_then(|r| r.key_id.clone()),
            issuer: refusal.and_then(|r| r.issuer.clone()),
            request_id: Some(crate::request_id_of(req).to_string()),
            path: Some(path),
            ..AuditEvent::default()
        });
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
    for name in &CREDENTIAL_HEADERS {
        for value in headers.get_all(name) {
            let v = value
                .to_str()
                .map_err(|_| ApiError::InvalidApiKey("non-ascii credential"))?
                .trim();
            let token = if name == http::header::AUTHORIZATION {
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

/// Authentication around every route: the second half of the gateway's one
/// front step (see `crate::App`), after the request id is set. `next` is
/// where an authenticated request goes (the proxy or the route table).
pub async fn layer<N, F>(state: &AppState, mut req: Request, next: N) -> Response
where
    N: FnOnce(Request) -> F,
    F: Future<Output = Response>,
{
    let authn = &state.authn;
    if authn.is_public(req.uri().path()) {
        req.extensions_mut().insert(authn.anonymous.clone());
        return next(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let ip = lockout::client_ip(peer, req.headers(), &authn.trusted_proxies);
    if let Some(left) = authn.lockout.as_ref().and_then(|l| l.blocked(ip)) {
        return ApiError::LockedOut(left).into_response();
    }
    let path = req.uri().path();
    let query = req.uri().query();
    let result = if path == "/admin" || path.starts_with("/admin/") {
        if !authn.admin_address_allowed(ip) {
            tracing::info!(client_ip = %ip, path = %path, "admin API refused: address not in admin.allow_ips");
            return ApiError::AdminAddressNotAllowed.into_response();
        }
        let access = admin::access(req.method(), path);
        match authn.admin(req.headers(), query).await {
            Ok(a) if !access.admits(a.role()) => {
                tracing::info!(actor = a.actor(), role = a.role().as_str(), path = %path, "admin route refused: role does not cover it");
                return ApiError::AdminRoleInsufficient("route").into_response();
            }
            Ok(a) => {
                let rid = crate::request_id_of(&req);
                req.extensions_mut().insert(a.at(ip, rid));
                Ok(())
            }
            Err(r) => Err(r),
        }
    } else if authn.disabled {
        req.extensions_mut().insert(authn.anonymous.clone());
        Ok(())
    } else {
        let cert = req.extensions().get::<PeerCertificate>().cloned();
        authn
            .client_with_cert(req.headers(), query, cert.as_ref())
            .await
            .map(|p| {
                req.extensions_mut().insert(p);
            })
    };
    let refusal = match result {
        Ok(()) => return next(req).await,
        Err(r) => r,
    };
    let e = &refusal.error;
    let rid = crate::request_id_of(&req);
    tracing::info!(request_id = %rid, client_ip = %ip, path = %req.uri().path(), cause = %e, credential = refusal.credential_kind, key_id = refusal.key_id.as_deref().unwrap_or(""), status = e.status().as_u16(), "authentication refused");
    if matches!(
        e.status(),
        http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN
    ) {
        authn.audit(
            "authentication_failed",
            e.to_string(),
            ip,
            Some(&refusal),
            &req,
        );
        if let Some(block) = authn.lockout.as_ref().and_then(|l| l.failure(ip)) {
            tracing::warn!(client_ip = %ip, block_seconds = block.as_secs(), "too many failed authentications: address blocked");
            authn.audit(
                "locked_out",
                format!("blocked for {}s", block.as_secs()),
                ip,
                Some(&refusal),
                &req,
            );
        }
    }
    refusal.error.into_response()
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
