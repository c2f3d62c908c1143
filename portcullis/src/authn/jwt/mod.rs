//! JWTs from identity providers (OIDC ID tokens and access tokens) → a
//! [`JwtIdentity`].
//!
//! Verification is local, against each issuer's cached key set (see
//! [`CacheSettings`]); there is no remote call per request. Following RFC 8725:
//!
//! - the token selects its issuer by an exact match of its `iss`, and the
//!   issuer's configuration — never the token — says which algorithms are
//!   acceptable; the header's `alg` must be one of them *and* fit the key (type,
//!   curve, and the key's own `alg`), so HS/RS confusion cannot happen; `none`
//!   in any casing is refused;
//! - header members that carry or locate keys (`jwk`, `jku`, `x5u`, `x5c`) and
//!   any `crit` are refused, and nothing named in a token is ever fetched;
//! - `iss`, `aud` and `exp` are required and type-checked, `nbf` and `iat` are
//!   checked with the issuer's leeway, and absurd timestamps are refused
//!   (see [`MAX_NUMERIC_DATE`]);
//! - tokens over [`MAX_TOKEN_BYTES`] are refused before any parsing, and the
//!   header and payload must be JSON objects without duplicate members;
//! - the cheap claim checks run before the signature check, so an expired or
//!   misaddressed token costs no public-key operation and never causes a fetch.
//!
//! Signatures are checked by the `jsonwebtoken` crate (RustCrypto backend); the
//! parsing, key selection and claim checks around it are this module's.
//!
//! The same machinery verifies Firebase App Check tokens ([`AppCheckVerifier`]).

mod algorithm;
mod appcheck;
mod claims;
mod jwks;
mod jws;
mod presets;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use algorithm::{Algorithm, AlgorithmNameError, KeyFamily};
pub use appcheck::{
    APP_CHECK_JWKS_URL, AppCheckClaims, AppCheckConfig, AppCheckFile, AppCheckVerifier,
};
pub use claims::MAX_NUMERIC_DATE;
pub use jwks::CacheSettings;
pub use jws::MAX_TOKEN_BYTES;
pub use presets::Preset;

use crate::clock::SharedClock;
use crate::config::ConfigError;
use crate::secret::Secret;
use jwks::{KeySet, KeySetCache, Source};
use jws::UNKNOWN_KID;

/// Default `leeway_seconds`: clock skew tolerated on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// Largest `leeway_seconds` accepted.
pub const MAX_LEEWAY_SECONDS: u64 = 300;
/// Shortest `hs256_secret` accepted, in bytes (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// The `Retry-After` to send with [`JwtError::KeySetUnavailable`]: the default
/// back-off between failed key-set fetches.
pub const KEY_SET_RETRY_AFTER: Duration = Duration::from_secs(5);

/// One entry of `auth.jwt` as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerFile {
    /// Names the issuer; user ids become `<name>:<user claim>`.
    pub name: String,
    /// Expands `issuer`, `jwks_url`, `audiences` and `algorithms` for a known provider.
    pub preset: Option<Preset>,
    /// Supabase preset: the project reference (`<ref>.supabase.co`).
    pub project_ref: Option<String>,
    /// Firebase preset: the project id.
    pub project_id: Option<String>,
    /// Auth0, Clerk and Okta presets: the tenant's host name.
    pub domain: Option<String>,
    /// Preset audience (Auth0 API identifier, Cognito app client id, Entra/Google client id, …).
    pub audience: Option<String>,
    /// Cognito preset: the AWS region.
    pub region: Option<String>,
    /// Cognito preset: the user pool id.
    pub user_pool_id: Option<String>,
    /// Entra preset: the tenant id (or verified domain).
    pub tenant_id: Option<String>,
    /// Okta preset: the custom authorization server id (default `default`).
    pub authorization_server: Option<String>,
    /// The exact `iss` the tokens carry.
    pub issuer: Option<String>,
    /// Where the issuer publishes its JWK set.
    pub jwks_url: Option<String>,
    /// An OIDC discovery document (`…/.well-known/openid-configuration`) naming the JWK set.
    pub discovery_url: Option<String>,
    /// A shared HS256 secret (e.g. Supabase's legacy JWT secret), instead of a key set.
    pub hs256_secret: Option<Secret>,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Option<Vec<String>>,
    /// Accepted `alg` values.
    pub algorithms: Option<Vec<String>>,
    /// Claim holding the user id (default `sub`); dotted paths allowed.
    pub user_claim: Option<String>,
    /// Claim holding the team (dotted path, e.g. `app_metadata.team`).
    pub team_claim: Option<String>,
    /// Claim holding the roles: a string or an array of strings.
    pub roles_claim: Option<String>,
    /// Claims that must equal these values exactly (dotted paths allowed).
    pub required_claims: Option<BTreeMap<String, serde_json::Value>>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat` (default 30, at most 300).
    pub leeway_seconds: Option<u64>,
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// A JWK set URL.
    Jwks(String),
    /// An OIDC discovery document; its `jwks_uri` is used and its `issuer` must
    /// equal the configured issuer.
    Discovery(String),
    /// A shared HS256 secret.
    Hs256(Secret),
}

/// A validated issuer: preset expanded, every expanded value overridable by
/// the explicit fields.
#[derive(Debug, Clone)]
pub struct JwtIssuer {
    /// Names the issuer (`[A-Za-z0-9_.-]`, no `:`).
    pub name: String,
    /// The exact `iss`.
    pub issuer: String,
    /// Where the keys come from.
    pub key_source: KeySource,
    /// Accepted audiences (at least one).
    pub audiences: Vec<String>,
    /// Accepted algorithms (at least one; HS256 only with an `hs256_secret`, and
    /// then alone).
    pub algorithms: Vec<Algorithm>,
    /// Claim path of the user id (default `sub`).
    pub user_claim: String,
    /// Claim path of the team.
    pub team_claim: Option<String>,
    /// Claim path of the roles.
    pub roles_claim: Option<String>,
    /// Exact-match claims.
    pub required_claims: BTreeMap<String, serde_json::Value>,
    /// Clock skew tolerated (default [`DEFAULT_LEEWAY_SECONDS`]).
    pub leeway: Duration,
}

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtIdentity {
    /// The configured issuer's `name`.
    pub issuer_name: String,
    /// `<issuer name>:<user claim value>`, the principal's user id.
    pub user: String,
    /// The team claim, if configured and present.
    pub team: Option<String>,
    /// The roles claim (empty when absent).
    pub roles: Vec<String>,
    /// The user claim's value as the issuer wrote it (`sub` by default).
    pub subject: String,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The token is not acceptable (→ 401). The text is the precise reason, for
    /// logs and audit only; it never contains the token.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// The issuer's key set cannot be had right now and none is cached
    /// (→ 503 with `Retry-After`: [`KEY_SET_RETRY_AFTER`]).
    #[error("key set unavailable: {0}")]
    KeySetUnavailable(String),
}

impl JwtError {
    /// The `Retry-After` for this error, if the client should retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            JwtError::Invalid(_) => None,
            JwtError::KeySetUnavailable(_) => Some(KEY_SET_RETRY_AFTER),
        }
    }
}

fn cfg_err(at: &str, field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        location: format!("{at}.{field}"),
        message: message.into(),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn valid_claim_path(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control)
}

impl JwtIssuerFile {
    /// Validates one entry; `at` is its location (e.g. `auth.jwt[0]`).
    pub fn validate(self, at: &str) -> Result<JwtIssuer, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if !valid_name(&self.name) {
            errors.push(cfg_err(
                at,
                "name",
                "must be 1-64 characters of [A-Za-z0-9_.-]",
            ));
        }

        // --- preset
        let params: [(&str, Option<&String>); 8] = [
            ("project_ref", self.project_ref.as_ref()),
            ("project_id", self.project_id.as_ref()),
            ("domain", self.domain.as_ref()),
            ("audience", self.audience.as_ref()),
            ("region", self.region.as_ref()),
            ("user_pool_id", self.user_pool_id.as_ref()),
            ("tenant_id", self.tenant_id.as_ref()),
            ("authorization_server", self.authorization_server.as_ref()),
        ];
        let expanded = match self.preset {
            Some(preset) => {
                for (field, value) in params {
                    if value.is_some() && !preset.parameters().contains(&field) {
                        errors.push(cfg_err(
                            at,
                            field,
                            format!("is not a parameter of preset {}", preset.name()),
                        ));
                    }
                }
                let p = presets::PresetParams {
                    project_ref: self.project_ref.as_deref(),
                    project_id: self.project_id.as_deref(),
                    domain: self.domain.as_deref(),
                    audience: self.audience.as_deref(),
                    region: self.region.as_deref(),
                    user_pool_id: self.user_pool_id.as_deref(),
                    tenant_id: self.tenant_id.as_deref(),
                    authorization_server: self.authorization_server.as_deref(),
                };
                match preset.expand(&p) {
                    Ok(e) => Some(e),
                    Err(errs) => {
                        errors.extend(errs.into_iter().map(|(f, m)| cfg_err(at, &f, m)));
                        None
                    }
                }
            }
            None => {
                for (field, value) in params {
                    if value.is_some() {
                        errors.push(cfg_err(
                            at,
                            field,
                            "is a preset parameter: set `preset` too",
                        ));
                    }
                }
                None
            }
        };

        // --- issuer
        let issuer = self
            .issuer
            .clone()
            .or_else(|| expanded.as_ref().map(|e| e.issuer.clone()));
        let issuer = match issuer {
            Some(i) if !i.is_empty() && i.len() <= 1024 && !i.chars().any(char::is_control) => i,
            Some(_) => {
                errors.push(cfg_err(at, "issuer", "must be a non-empty string"));
                String::new()
            }
            None => {
                errors.push(cfg_err(at, "issuer", "is required (or use a preset)"));
                String::new()
            }
        };

        // --- key source: exactly one
        let mut explicit = Vec::new();
        if let Some(u) = &self.jwks_url {
            explicit.push(("jwks_url", KeySource::Jwks(u.clone())));
        }
        if let Some(u) = &self.discovery_url {
            explicit.push(("discovery_url", KeySource::Discovery(u.clone())));
        }
        if let Some(s) = &self.hs256_secret {
            explicit.push(("hs256_secret", KeySource::Hs256(s.clone())));
        }
        if explicit.len() > 1 {
            errors.push(cfg_err(
                at,
                explicit[1].0,
                "set exactly one of jwks_url, discovery_url, hs256_secret",
            ));
        }
        let key_source = match explicit.pop() {
            Some((_, source)) => Some(source),
            None => expanded
                .as_ref()
                .map(|e| KeySource::Jwks(e.jwks_url.clone())),
        };
        match &key_source {
            None => errors.push(cfg_err(
                at,
                "jwks_url",
                "one of jwks_url, discovery_url, hs256_secret is required (or use a preset)",
            )),
            Some(KeySource::Jwks(u)) => {
                if let Err(e) = jwks::check_fetch_url(u) {
                    errors.push(cfg_err(at, "jwks_url", e));
                }
            }
            Some(KeySource::Discovery(u)) => {
                if let Err(e) = jwks::check_fetch_url(u) {
                    errors.push(cfg_err(at, "discovery_url", e));
                }
            }
            Some(KeySource::Hs256(s)) => {
                if s.expose().len() < MIN_HS256_SECRET_BYTES {
                    errors.push(cfg_err(
                        at,
                        "hs256_secret",
                        format!("must be at least {MIN_HS256_SECRET_BYTES} bytes"),
                    ));
                }
            }
        }
        let symmetric_source = matches!(key_source, Some(KeySource::Hs256(_)));

        // --- audiences
        let audiences = self.audiences.clone().or_else(|| {
            expanded
                .as_ref()
                .and_then(|e| e.audience.clone())
                .map(|a| vec![a])
        });
        let audiences = match audiences {
            Some(list) if !list.is_empty() => {
                if list.iter().any(|a| a.is_empty()) {
                    errors.push(cfg_err(at, "audiences", "must not contain an empty string"));
                }
                list
            }
            _ => {
                errors.push(cfg_err(
                    at,
                    "audiences",
                    "at least one audience is required (set `audiences`, or `audience` with a preset)",
                ));
                Vec::new()
            }
        };

        // --- algorithms
        let mut algorithms: Vec<Algorithm> = Vec::new();
        match &self.algorithms {
            Some(names) if names.is_empty() => {
                errors.push(cfg_err(at, "algorithms", "must not be empty"));
            }
            Some(names) => {
                for (i, name) in names.iter().enumerate() {
                    match name.parse::<Algorithm>() {
                        Ok(a) => {
                            if !algorithms.contains(&a) {
                                algorithms.push(a);
                            }
                        }
                        Err(AlgorithmNameError::None) => errors.push(cfg_err(
                            at,
                            &format!("algorithms[{i}]"),
                            "`none` can never be accepted",
                        )),
                        Err(AlgorithmNameError::Unsupported) => errors.push(cfg_err(
                            at,
                            &format!("algorithms[{i}]"),
                            format!(
                                "unsupported algorithm {name:?} (supported: {})",
                                Algorithm::ALL.map(Algorithm::name).join(", ")
                            ),
                        )),
                    }
                }
            }
            None if symmetric_source => algorithms.push(Algorithm::HS256),
            None => match &expanded {
                Some(e) => algorithms.extend(e.algorithms.iter().copied()),
                None => algorithms.push(Algorithm::RS256),
            },
        }
        if symmetric_source {
            if algorithms.iter().any(|a| *a != Algorithm::HS256) {
                errors.push(cfg_err(
                    at,
                    "algorithms",
                    "with hs256_secret only HS256 is accepted (never mixed with other algorithms)",
                ));
            }
        } else if algorithms.iter().any(|a| a.is_symmetric()) {
            errors.push(cfg_err(
                at,
                "algorithms",
                "HS256/HS384/HS512 need hs256_secret: a key set never provides a shared secret",
            ));
        }

        // --- claims
        let user_claim = self.user_claim.clone().unwrap_or_else(|| "sub".to_owned());
        for (field, value) in [
            ("user_claim", Some(&user_claim)),
            ("team_claim", self.team_claim.as_ref()),
            ("roles_claim", self.roles_claim.as_ref()),
        ] {
            if value.is_some_and(|v| !valid_claim_path(v)) {
                errors.push(cfg_err(at, field, "must be a claim name or dotted path"));
            }
        }
        let required_claims = self.required_claims.clone().unwrap_or_default();
        for path in required_claims.keys() {
            if !valid_claim_path(path) {
                errors.push(cfg_err(
                    at,
                    "required_claims",
                    format!("{path:?} is not a claim name or dotted path"),
                ));
            }
        }
        let leeway_seconds = self.leeway_seconds.unwrap_or(DEFAULT_LEEWAY_SECONDS);
        if leeway_seconds > MAX_LEEWAY_SECONDS {
            errors.push(cfg_err(
                at,
                "leeway_seconds",
                format!("must be at most {MAX_LEEWAY_SECONDS}"),
            ));
        }

        match key_source {
            Some(key_source) if errors.is_empty() => Ok(JwtIssuer {
                name: self.name,
                issuer,
                key_source,
                audiences,
                algorithms,
                user_claim,
                team_claim: self.team_claim,
                roles_claim: self.roles_claim,
                required_claims,
                leeway: Duration::from_secs(leeway_seconds),
            }),
            _ => Err(errors),
        }
    }
}

/// Validates every `auth.jwt` entry (`at` is e.g. `auth.jwt`), and that names
/// and issuers are unique.
pub fn validate_issuers(
    files: Vec<JwtIssuerFile>,
    at: &str,
) -> Result<Vec<JwtIssuer>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut out: Vec<JwtIssuer> = Vec::new();
    for (i, file) in files.into_iter().enumerate() {
        let here = format!("{at}[{i}]");
        match file.validate(&here) {
            Ok(issuer) => {
                if out.iter().any(|o| o.name == issuer.name) {
                    errors.push(cfg_err(&here, "name", "is used by another issuer"));
                }
                if out.iter().any(|o| o.issuer == issuer.issuer) {
                    errors.push(cfg_err(&here, "issuer", "is configured twice"));
                }
                out.push(issuer);
            }
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

// ------------------------------------------------------------------ verifier

enum Keys {
    Static(Arc<KeySet>),
    Remote(Arc<KeySetCache>),
}

struct Entry {
    config: JwtIssuer,
    keys: Keys,
}

struct Inner {
    issuers: Vec<Entry>,
    by_iss: HashMap<String, usize>,
    clock: SharedClock,
}

/// Verifies JWTs from the configured issuers. Cheap to clone.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field(
                "issuers",
                &self
                    .inner
                    .issuers
                    .iter()
                    .map(|e| e.config.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn install_crypto_provider() {
    // Explicit, so a second jsonwebtoken backend enabled elsewhere in the
    // dependency graph cannot leave the choice ambiguous. Fails only when one
    // is installed already, which is fine.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

impl JwtVerifier {
    /// A verifier for `issuers` with the production cache settings.
    pub fn new(issuers: Vec<JwtIssuer>, clock: SharedClock) -> Self {
        Self::with_settings(issuers, clock, CacheSettings::default())
    }

    /// A verifier with explicit key-set cache settings.
    pub fn with_settings(
        issuers: Vec<JwtIssuer>,
        clock: SharedClock,
        settings: CacheSettings,
    ) -> Self {
        install_crypto_provider();
        let needs_http = issuers
            .iter()
            .any(|i| !matches!(i.key_source, KeySource::Hs256(_)));
        let http = if needs_http {
            jwks::http_client(&settings)
        } else {
            None
        };
        let mut entries = Vec::with_capacity(issuers.len());
        let mut by_iss = HashMap::new();
        for config in issuers {
            if by_iss.contains_key(&config.issuer) {
                tracing::warn!(issuer = %config.name, "issuer configured twice; the first entry is used");
                continue;
            }
            let keys = match &config.key_source {
                KeySource::Hs256(secret) => {
                    Keys::Static(Arc::new(KeySet::from_secret(secret.expose().as_bytes())))
                }
                KeySource::Jwks(url) => Keys::Remote(Arc::new(KeySetCache::new(
                    config.name.clone(),
                    Source::Jwks(url.clone()),
                    http.clone(),
                    clock.clone(),
                    settings.clone(),
                ))),
                KeySource::Discovery(url) => Keys::Remote(Arc::new(KeySetCache::new(
                    config.name.clone(),
                    Source::Discovery {
                        url: url.clone(),
                        issuer: config.issuer.clone(),
                    },
                    http.clone(),
                    clock.clone(),
                    settings.clone(),
                ))),
            };
            by_iss.insert(config.issuer.clone(), entries.len());
            entries.push(Entry { config, keys });
        }
        JwtVerifier {
            inner: Arc::new(Inner {
                issuers: entries,
                by_iss,
                clock,
            }),
        }
    }

    /// True when no issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.inner.issuers.is_empty()
    }

    /// Cheap structural test used to route a bearer credential: three base64url
    /// segments, and a header that decodes to a JSON object with `alg`.
    pub fn looks_like_jwt(token: &str) -> bool {
        jws::looks_like_jwt(token)
    }

    /// The configured issuer name a token claims to come from, for audit
    /// records of failures. Unverified; only configured names are returned,
    /// never text from the token.
    pub fn claimed_issuer(&self, token: &str) -> Option<&str> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let payload = jws::b64(token.split('.').nth(1)?)?;
        let claims = jws::strict_object(&payload)?;
        let iss = claims::issuer_of(&claims).ok()?;
        let i = *self.inner.by_iss.get(iss)?;
        self.inner.issuers.get(i).map(|e| e.config.name.as_str())
    }

    /// Verifies a compact JWT from one of the configured issuers.
    pub async fn verify(&self, token: &str) -> Result<JwtIdentity, JwtError> {
        let compact = jws::parse(token, &Algorithm::ALL)?;
        let claims = jws::strict_object(&compact.payload)
            .ok_or(JwtError::Invalid("payload not a JSON object"))?;
        let iss = claims::issuer_of(&claims)?;
        let entry = self
            .inner
            .by_iss
            .get(iss)
            .and_then(|&i| self.inner.issuers.get(i))
            .ok_or(JwtError::Invalid("unknown issuer"))?;
        if !entry.config.algorithms.contains(&compact.alg) {
            return Err(JwtError::Invalid("alg not allowed for this issuer"));
        }
        // Cheap claim checks first: an expired or misaddressed token costs no
        // signature check and never causes a key fetch.
        let identity = claims::check(&entry.config, &claims, self.inner.clock.now_ms())?;
        match &entry.keys {
            Keys::Static(set) => compact.verify(set)?,
            Keys::Remote(cache) => {
                let set = cache.keys().await?;
                match compact.verify(&set) {
                    Err(JwtError::Invalid(UNKNOWN_KID)) => {
                        let kid = compact.kid.as_deref().unwrap_or_default();
                        match cache.refetch_for_kid(kid).await {
                            Some(fresh) => compact.verify(&fresh)?,
                            None => return Err(JwtError::Invalid(UNKNOWN_KID)),
                        }
                    }
                    other => other?,
                }
            }
        }
        Ok(identity)
    }

    /// Warms every issuer's key set (meant for start-up). Failures are logged,
    /// not fatal: the next request retries.
    pub async fn prefetch(&self) {
        let fetches = self.inner.issuers.iter().filter_map(|e| match &e.keys {
            Keys::Remote(cache) => Some(async move {
                if let Err(error) = cache.keys().await {
                    tracing::warn!(issuer = %e.config.name, %error, "could not prefetch the key set");
                }
            }),
            Keys::Static(_) => None,
        });
        futures_util::future::join_all(fetches).await;
    }
}

/// For test vectors: verifies a compact JWS against a JWK set (`{"keys":[…]}`)
/// with the allowed algorithms, and returns the payload bytes. Same parsing,
/// header rules and key selection as [`JwtVerifier::verify`], without claims.
pub fn verify_jws_with_jwks(
    token: &str,
    jwks: &serde_json::Value,
    algorithms: &[Algorithm],
) -> Result<Vec<u8>, JwtError> {
    install_crypto_provider();
    let compact = jws::parse(token, algorithms)?;
    let set = KeySet::from_jwks(jwks, true).map_err(|_| JwtError::Invalid("malformed key set"))?;
    compact.verify(&set)?;
    Ok(compact.payload)
}
