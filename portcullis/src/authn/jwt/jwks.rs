//! JWK sets (RFC 7517): turning published keys into verification keys, and the
//! per-issuer key-set cache that fetches them.
//!
//! Keys are filtered when parsed: a key marked for encryption (`use: enc`, or
//! `key_ops` without `verify`), an unsupported type or curve, an RSA modulus
//! under 2048 bits, or a symmetric (`oct`) key in a remote set is skipped, so one
//! odd key never breaks the rest of a provider's set. A key's `alg`, when
//! present, binds it to that one algorithm.
//!
//! The cache keeps one key set per issuer:
//! - fresh for the `Cache-Control: max-age` the provider sends, clamped to
//!   [`CacheSettings::min_ttl`]..[`CacheSettings::max_ttl`] (default
//!   [`CacheSettings::default_ttl`] without one);
//! - one fetch at a time (single flight): concurrent misses wait for it;
//! - a token whose `kid` is not in the set triggers at most one refetch per
//!   [`CacheSettings::unknown_kid_cooldown`] for the whole issuer, and a `kid`
//!   still absent after the refetch it triggered is remembered in a bounded
//!   negative cache so repeating it costs nothing;
//! - when the provider is down the last good set is kept (up to
//!   [`CacheSettings::max_stale`] past its expiry) and fetches back off for
//!   [`CacheSettings::failure_backoff`]; once a fetch has failed, requests are
//!   answered from the stale set at once while retries run in the background;
//!   with no set at all the caller gets [`JwtError::KeySetUnavailable`];
//! - responses are bounded in size and time, and redirects are followed only
//!   to the same scheme, host and port.
//!
//! All cache times come from the [`SharedClock`], so tests move them by hand.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use super::JwtError;
use super::algorithm::{Algorithm, KeyFamily};
use super::jws::MAX_KID_LEN;
use crate::clock::SharedClock;

/// Smallest RSA modulus accepted (RFC 7518 §3.3).
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (bounds verification cost).
const MAX_RSA_BITS: usize = 4096;
/// At most this many usable keys are kept from one set.
const MAX_KEYS: usize = 64;

/// A public (or, for HMAC, shared) key ready for signature checks.
pub(crate) struct VerifyKey {
    pub kid: Option<String>,
    family: KeyFamily,
    /// The JWK's `alg`, which binds the key to one algorithm.
    alg: Option<Algorithm>,
    curve: Option<&'static str>,
    secret_len: usize,
    pub key: DecodingKey,
}

impl VerifyKey {
    fn fits(&self, alg: Algorithm) -> bool {
        self.family == alg.family()
            && self.alg.is_none_or(|a| a == alg)
            && (alg.curve().is_none() || self.curve == alg.curve())
            && (self.family != KeyFamily::Hmac || self.secret_len >= alg.min_secret_len())
    }
}

/// The usable keys of one JWK set.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")))
            .finish()
    }
}

impl KeySet {
    /// Parses `{"keys": [...]}`, keeping the usable keys. Symmetric (`oct`) keys
    /// are kept only with `allow_symmetric` (never for a fetched set).
    pub(crate) fn from_jwks(value: &Value, allow_symmetric: bool) -> Result<KeySet, String> {
        let keys = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "not a JWK set (no \"keys\" array)".to_owned())?;
        let mut out = Vec::new();
        for (i, jwk) in keys.iter().enumerate() {
            match parse_jwk(jwk, allow_symmetric) {
                Ok(k) if out.len() < MAX_KEYS => out.push(k),
                Ok(_) => {
                    tracing::warn!(
                        kept = MAX_KEYS,
                        "JWK set has too many keys; the rest are ignored"
                    );
                    break;
                }
                Err(reason) => tracing::debug!(index = i, reason, "JWK skipped"),
            }
        }
        Ok(KeySet { keys: out })
    }

    /// A set holding one shared HMAC secret.
    pub(crate) fn from_secret(secret: &[u8]) -> KeySet {
        KeySet {
            keys: vec![VerifyKey {
                kid: None,
                family: KeyFamily::Hmac,
                alg: None,
                curve: None,
                secret_len: secret.len(),
                key: DecodingKey::from_secret(secret),
            }],
        }
    }

    /// Number of usable keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True when a key carries exactly this `kid`.
    pub(crate) fn has_kid(&self, kid: Option<&str>) -> bool {
        kid.is_some_and(|kid| self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)))
    }

    /// Keys that may verify a token with `alg` and `kid`: those with the same
    /// `kid` first, then keys without a `kid`. A token without `kid` may use any
    /// key that fits the algorithm.
    pub(crate) fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        let fitting = move |k: &&VerifyKey| k.fits(alg);
        let exact = self
            .keys
            .iter()
            .filter(fitting)
            .filter(move |k| kid.is_some() && k.kid.as_deref() == kid);
        let rest = self
            .keys
            .iter()
            .filter(fitting)
            .filter(move |k| kid.is_none() || k.kid.is_none());
        exact.chain(rest)
    }
}

fn member<'a>(o: &'a Map<String, Value>, name: &str) -> Result<&'a str, &'static str> {
    o.get(name)
        .and_then(Value::as_str)
        .ok_or("missing or non-string member")
}

/// Base64url of a JWK member; trailing `=` is tolerated (keys come from the
/// configured provider, not from the token).
fn member_bytes(o: &Map<String, Value>, name: &str) -> Result<Vec<u8>, &'static str> {
    let s = member(o, name)?;
    super::jws::b64(s.trim_end_matches('=')).ok_or("member is not base64url")
}

fn parse_jwk(v: &Value, allow_symmetric: bool) -> Result<VerifyKey, &'static str> {
    let o = v.as_object().ok_or("not an object")?;
    let kty = member(o, "kty")?;
    match o.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err("use is not sig"),
    }
    if let Some(ops) = o.get("key_ops") {
        let ops = ops.as_array().ok_or("key_ops not an array")?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Err("key_ops lacks verify");
        }
    }
    let alg = match o.get("alg") {
        None => None,
        Some(Value::String(s)) => Some(Algorithm::parse(s).ok_or("unsupported alg")?),
        Some(_) => return Err("alg not a string"),
    };
    let kid = match o.get("kid") {
        None => None,
        Some(Value::String(k)) if k.len() <= MAX_KID_LEN => Some(k.clone()),
        Some(_) => return Err("malformed kid"),
    };
    let (family, curve, secret_len, key) = match kty {
        "RSA" => {
            let n = member_bytes(o, "n")?;
            let e = member_bytes(o, "e")?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            let bits = bit_len(n);
            if bits < MIN_RSA_BITS {
                return Err("RSA modulus under 2048 bits");
            }
            if bits > MAX_RSA_BITS {
                return Err("RSA modulus over 4096 bits");
            }
            if e.is_empty() || e.len() > 8 || e.last().is_none_or(|b| b & 1 == 0) || e == [1] {
                return Err("bad RSA exponent");
            }
            (
                KeyFamily::Rsa,
                None,
                0,
                DecodingKey::from_rsa_raw_components(n, e),
            )
        }
        "EC" => {
            let (crv, size) = match member(o, "crv")? {
                "P-256" => ("P-256", 32),
                "P-384" => ("P-384", 48),
                _ => return Err("unsupported curve"),
            };
            let x = member_bytes(o, "x")?;
            let y = member_bytes(o, "y")?;
            if x.len() != size || y.len() != size {
                return Err("bad EC coordinate length");
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (
                KeyFamily::Ec,
                Some(crv),
                0,
                DecodingKey::from_ec_der(&point),
            )
        }
        "OKP" => {
            if member(o, "crv")? != "Ed25519" {
                return Err("unsupported curve");
            }
            let x = member_bytes(o, "x")?;
            if x.len() != 32 {
                return Err("bad Ed25519 key length");
            }
            (
                KeyFamily::Okp,
                Some("Ed25519"),
                0,
                DecodingKey::from_ed_der(&x),
            )
        }
        "oct" if allow_symmetric => {
            let k = member_bytes(o, "k")?;
            if k.is_empty() {
                return Err("empty secret");
            }
            (KeyFamily::Hmac, None, k.len(), DecodingKey::from_secret(&k))
        }
        "oct" => return Err("symmetric key in a public key set"),
        _ => return Err("unsupported kty"),
    };
    if let Some(a) = alg {
        if a.family() != family {
            return Err("alg does not fit kty");
        }
        if a.curve().is_some() && a.curve() != curve {
            return Err("alg does not fit crv");
        }
    }
    Ok(VerifyKey {
        kid,
        family,
        alg,
        curve,
        secret_len,
        key,
    })
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

fn bit_len(b: &[u8]) -> usize {
    match b.first() {
        None => 0,
        Some(&top) => (b.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// Checks a URL the gateway will fetch keys from: `https`, or `http` to a
/// loopback host (local tests); no credentials in it.
pub(crate) fn check_fetch_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "has no host".to_owned())?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err("must use https (http only for loopback hosts)".into()),
        other => Err(format!("unsupported scheme {other:?}")),
    }
}

// ------------------------------------------------------------------ the cache

/// Tunables of the key-set cache. The defaults are what production uses.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Shortest freshness, whatever `Cache-Control` says (default 5 min).
    pub min_ttl: Duration,
    /// Longest freshness, whatever `Cache-Control` says (default 24 h).
    pub max_ttl: Duration,
    /// Freshness without a usable `Cache-Control: max-age` (default 1 h).
    pub default_ttl: Duration,
    /// At most one refetch per issuer for unknown `kid`s in this window (default 30 s).
    pub unknown_kid_cooldown: Duration,
    /// How long a `kid` found absent by its own refetch is remembered (default 5 min).
    pub negative_ttl: Duration,
    /// How many absent `kid`s are remembered per issuer (default 1024).
    pub negative_capacity: usize,
    /// No fetch for this long after a failed one (default 5 s).
    pub failure_backoff: Duration,
    /// How long past its expiry a set is still used while the provider is down (default 24 h).
    pub max_stale: Duration,
    /// Whole-request time limit of one fetch (default 5 s).
    pub fetch_timeout: Duration,
    /// Largest response body accepted (default 1 MiB).
    pub max_response_bytes: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            min_ttl: Duration::from_secs(5 * 60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(3600),
            unknown_kid_cooldown: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5 * 60),
            negative_capacity: 1024,
            failure_backoff: Duration::from_secs(5),
            max_stale: Duration::from_secs(24 * 3600),
            fetch_timeout: Duration::from_secs(5),
            max_response_bytes: 1024 * 1024,
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Where a remote key set comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A JWK set URL.
    Jwks(String),
    /// An OIDC discovery document whose `issuer` must equal `issuer`.
    Discovery { url: String, issuer: String },
}

#[derive(Default)]
struct NegativeCache {
    until: HashMap<String, i64>,
    order: VecDeque<String>,
}

impl NegativeCache {
    fn contains(&self, kid: &str, now: i64) -> bool {
        self.until.get(kid).is_some_and(|&t| now < t)
    }

    fn insert(&mut self, kid: &str, until: i64, capacity: usize) {
        if let Some(t) = self.until.get_mut(kid) {
            *t = until;
            return;
        }
        while self.until.len() >= capacity.max(1) {
            match self.order.pop_front() {
                Some(old) => {
                    self.until.remove(&old);
                }
                None => break,
            }
        }
        self.until.insert(kid.to_owned(), until);
        self.order.push_back(kid.to_owned());
    }
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    expires_at_ms: i64,
    next_attempt_ms: i64,
    last_error: Option<String>,
    last_kid_refetch_ms: Option<i64>,
    negative: NegativeCache,
    /// Completed fetch attempts; lets waiters see that a fetch happened meanwhile.
    attempts: u64,
}

/// One issuer's cached key set.
pub(crate) struct KeySetCache {
    name: String,
    source: Source,
    http: Option<reqwest::Client>,
    clock: SharedClock,
    settings: CacheSettings,
    state: Mutex<State>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// A background refresh is queued or running.
    refreshing: AtomicBool,
}

impl std::fmt::Debug for KeySetCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySetCache")
            .field("name", &self.name)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The HTTP client for key-set fetches: bounded time, same-origin redirects only.
pub(crate) fn http_client(settings: &CacheSettings) -> Option<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 3 {
            return attempt.error("too many redirects");
        }
        let same_origin = attempt.previous().first().is_some_and(|first| {
            first.scheme() == attempt.url().scheme()
                && first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if same_origin {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    match reqwest::Client::builder()
        .timeout(settings.fetch_timeout)
        .connect_timeout(settings.fetch_timeout)
        .redirect(policy)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the key-set HTTP client");
            None
        }
    }
}

fn unavailable(last_error: Option<&String>) -> JwtError {
    JwtError::KeySetUnavailable(
        last_error
            .cloned()
            .unwrap_or_else(|| "key set not fetched yet".to_owned()),
    )
}

impl KeySetCache {
    pub(crate) fn new(
        name: String,
        source: Source,
        http: Option<reqwest::Client>,
        clock: SharedClock,
        settings: CacheSettings,
    ) -> Self {
        KeySetCache {
            name,
            source,
            http,
            clock,
            settings,
            state: Mutex::new(State {
                next_attempt_ms: i64::MIN,
                ..State::default()
            }),
            refresh_lock: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn usable(&self, st: &State, now: i64) -> Option<Arc<KeySet>> {
        st.keys
            .as_ref()
            .filter(|_| now < st.expires_at_ms.saturating_add(ms(self.settings.max_stale)))
            .cloned()
    }

    /// The current key set: fresh from cache, fetched now (once for all
    /// concurrent callers), or stale while the provider is down.
    pub(crate) async fn keys(self: &Arc<Self>) -> Result<Arc<KeySet>, JwtError> {
        let now = self.clock.now_ms();
        let seen = {
            let st = self.lock();
            if let Some(k) = &st.keys
                && now < st.expires_at_ms
            {
                return Ok(k.clone());
            }
            if let Some(stale) = self.usable(&st, now)
                && (st.last_error.is_some() || now < st.next_attempt_ms)
            {
                // The provider is failing: answer from the stale set at once,
                // and retry in the background once the back-off has passed.
                if now >= st.next_attempt_ms {
                    self.refresh_in_background(st.attempts);
                }
                return Ok(stale);
            }
            if now < st.next_attempt_ms {
                return Err(unavailable(st.last_error.as_ref()));
            }
            st.attempts
        };
        self.refresh(seen).await;
        let now = self.clock.now_ms();
        let st = self.lock();
        self.usable(&st, now)
            .ok_or_else(|| unavailable(st.last_error.as_ref()))
    }

    /// A token named a `kid` the set lacks: refetch, at most once per cooldown
    /// for this issuer, and return the new set if it has the `kid`.
    pub(crate) async fn refetch_for_kid(&self, kid: &str) -> Option<Arc<KeySet>> {
        let now = self.clock.now_ms();
        let seen = {
            let mut st = self.lock();
            if let Some(k) = &st.keys
                && k.has_kid(Some(kid))
            {
                return Some(k.clone());
            }
            if st.negative.contains(kid, now) {
                return None;
            }
            let cooling = st
                .last_kid_refetch_ms
                .is_some_and(|t| now >= t && now - t < ms(self.settings.unknown_kid_cooldown));
            if cooling || now < st.next_attempt_ms {
                None
            } else {
                st.last_kid_refetch_ms = Some(now);
                Some(st.attempts)
            }
        };
        match seen {
            Some(seen) => {
                self.refresh(seen).await;
                let now = self.clock.now_ms();
                let mut st = self.lock();
                let found = st.keys.as_ref().filter(|k| k.has_kid(Some(kid))).cloned();
                if found.is_none() {
                    let until = now.saturating_add(ms(self.settings.negative_ttl));
                    st.negative
                        .insert(kid, until, self.settings.negative_capacity);
                }
                found
            }
            None => {
                // Another token's refetch may be in flight: let it finish, then look.
                drop(self.refresh_lock.lock().await);
                let st = self.lock();
                st.keys.as_ref().filter(|k| k.has_kid(Some(kid))).cloned()
            }
        }
    }

    fn refresh_in_background(self: &Arc<Self>, seen: u64) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.refresh(seen).await;
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Fetches unless another fetch completed since `seen` attempts.
    async fn refresh(&self, seen: u64) {
        let _one_at_a_time = self.refresh_lock.lock().await;
        if self.lock().attempts != seen {
            return;
        }
        let result = self.fetch().await;
        let now = self.clock.now_ms();
        let mut st = self.lock();
        st.attempts += 1;
        match result {
            Ok((set, ttl)) => {
                tracing::debug!(issuer = %self.name, keys = set.len(), ttl_s = ttl.as_secs(), "key set fetched");
                st.keys = Some(Arc::new(set));
                st.expires_at_ms = now.saturating_add(ms(ttl));
                st.next_attempt_ms = i64::MIN;
                st.last_error = None;
            }
            Err(error) => {
                tracing::warn!(issuer = %self.name, %error, have_stale_keys = st.keys.is_some(), "key set fetch failed");
                st.next_attempt_ms = now.saturating_add(ms(self.settings.failure_backoff));
                st.last_error = Some(error);
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Duration), String> {
        let client = self
            .http
            .as_ref()
            .ok_or_else(|| "no HTTP client".to_owned())?;
        let max = self.settings.max_response_bytes;
        let jwks_url = match &self.source {
            Source::Jwks(url) => url.clone(),
            Source::Discovery { url, issuer } => {
                let (doc, _) = get_json(client, url, max).await?;
                if doc.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                    return Err("discovery document names another issuer".into());
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| "discovery document has no jwks_uri".to_owned())?;
                check_fetch_url(uri).map_err(|e| format!("jwks_uri {e}"))?;
                uri.to_owned()
            }
        };
        let (body, cache_control) = get_json(client, &jwks_url, max).await?;
        let set = KeySet::from_jwks(&body, false)?;
        if set.is_empty() {
            return Err("key set has no usable signing key".into());
        }
        Ok((set, self.ttl(cache_control.as_deref())))
    }

    fn ttl(&self, cache_control: Option<&str>) -> Duration {
        let s = &self.settings;
        let Some(cc) = cache_control else {
            return s.default_ttl.clamp(s.min_ttl, s.max_ttl);
        };
        let mut max_age = None;
        for directive in cc.split(',') {
            let d = directive.trim().to_ascii_lowercase();
            if d == "no-store" || d == "no-cache" {
                return s.min_ttl;
            }
            if let Some(v) = d.strip_prefix("max-age=") {
                max_age = v.trim_matches('"').parse::<u64>().ok();
            }
        }
        max_age
            .map(Duration::from_secs)
            .unwrap_or(s.default_ttl)
            .clamp(s.min_ttl, s.max_ttl.max(s.min_ttl))
    }
}

async fn get_json(
    client: &reqwest::Client,
    url: &str,
    max: usize,
) -> Result<(Value, Option<String>), String> {
    let mut resp = client
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("GET {url}: HTTP {}", resp.status().as_u16()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX))
    {
        return Err(format!("GET {url}: response over {max} bytes"));
    }
    let cache_control = resp
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > max {
            return Err(format!("GET {url}: response over {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let value = serde_json::from_slice(&body).map_err(|_| format!("GET {url}: not JSON"))?;
    Ok((value, cache_control))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_for_other_uses_or_types_are_skipped() {
        let ec = json!({"kty":"EC","crv":"P-256",
            "x":"04N0xi21hshyvBp7I167sbE_bXqyqkAPfefdklMO7wY",
            "y":"UI8exy-C06a7DUnjIdENkxeFtHM4-l_41LqEw9nVgmw"});
        let mut enc = ec.clone();
        enc["use"] = json!("enc");
        let mut ops = ec.clone();
        ops["key_ops"] = json!(["encrypt"]);
        let mut p521 = ec.clone();
        p521["crv"] = json!("P-521");
        let oct = json!({"kty":"oct","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
        let set = json!({"keys":[ec, enc, ops, p521, oct.clone(), {"kty":"XYZ"}, 5]});
        assert_eq!(KeySet::from_jwks(&set, false).unwrap().len(), 1);
        assert_eq!(
            KeySet::from_jwks(&json!({"keys":[oct]}), true)
                .unwrap()
                .len(),
            1
        );
        assert!(KeySet::from_jwks(&json!({"nokeys":[]}), false).is_err());
    }

    #[test]
    fn fetch_urls_are_https_or_loopback_http() {
        assert!(check_fetch_url("https://example.com/jwks").is_ok());
        assert!(check_fetch_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_fetch_url("http://[::1]/jwks").is_ok());
        assert!(check_fetch_url("http://localhost/jwks").is_ok());
        assert!(check_fetch_url("http://example.com/jwks").is_err());
        assert!(check_fetch_url("https://user:pw@example.com/jwks").is_err());
        assert!(check_fetch_url("ftp://example.com/jwks").is_err());
        assert!(check_fetch_url("not a url").is_err());
    }

    #[test]
    fn negative_cache_is_bounded() {
        let mut n = NegativeCache::default();
        for i in 0..100 {
            n.insert(&format!("k{i}"), 1000, 10);
        }
        assert_eq!(n.until.len(), 10);
        assert!(n.contains("k99", 999));
        assert!(!n.contains("k99", 1000));
        assert!(!n.contains("k0", 0));
    }

    #[test]
    fn cache_control_is_clamped() {
        let c = KeySetCache::new(
            "t".into(),
            Source::Jwks("https://x".into()),
            None,
            Arc::new(crate::clock::ManualClock::new(0)),
            CacheSettings::default(),
        );
        assert_eq!(c.ttl(None), Duration::from_secs(3600));
        assert_eq!(
            c.ttl(Some("public, max-age=7200")),
            Duration::from_secs(7200)
        );
        assert_eq!(c.ttl(Some("max-age=5")), Duration::from_secs(300));
        assert_eq!(c.ttl(Some("max-age=99999999")), Duration::from_secs(86400));
        assert_eq!(c.ttl(Some("no-store")), Duration::from_secs(300));
        assert_eq!(c.ttl(Some("max-age=junk")), Duration::from_secs(3600));
    }
}
