//! Upstream HTTP clients (one pooled client per provider), request building
//! with the provider's key swapped in, and header hygiene both ways.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;

use super::pool::{Connector, Pool, UpstreamResponse};
use crate::X_REQUEST_ID;
use crate::config::{Config, ProviderConfig};
use crate::error::ApiError;

/// One client per provider, keyed by provider name.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    clients: HashMap<String, Upstream>,
}

impl Upstreams {
    /// Builds a client for every provider of `config`.
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut clients = HashMap::new();
        for p in &config.providers {
            clients.insert(p.name.clone(), Upstream::new(p)?);
        }
        Ok(Upstreams { clients })
    }

    /// The client of a provider.
    pub fn get(&self, provider: &str) -> Result<&Upstream, ApiError> {
        self.clients
            .get(provider)
            .ok_or_else(|| ApiError::Internal(format!("no client for provider `{provider}`")))
    }
}

/// A provider's connection pool and the headers every request to it carries,
/// built once (not per request).
#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Pool,
    /// `Authorization: Bearer <key>`, marked sensitive (never logged).
    auth: Option<HeaderValue>,
    /// `Host` for `base_url`: the host, and the port when not the scheme's default.
    host: Option<HeaderValue>,
    /// The path of `base_url` after its origin (empty for none): a request
    /// goes to `{base_path}{path}` at the pool's origin.
    base_path: String,
}

impl Upstream {
    fn new(p: &ProviderConfig) -> Result<Upstream, String> {
        let auth = match &p.api_key {
            None => None,
            Some(key) => {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                        format!("provider `{}`: api_key is not a valid header value", p.name)
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let parsed = p.base_url.parse::<http::Uri>().ok();
        let host = parsed.as_ref().and_then(|u| {
            let host = u.host()?;
            let default = match u.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            };
            match u.port_u16() {
                Some(port) if Some(port) != default => {
                    HeaderValue::from_str(&format!("{host}:{port}")).ok()
                }
                _ => HeaderValue::from_str(host).ok(),
            }
        });
        let (scheme, authority, base_path) = parsed
            .as_ref()
            .and_then(|u| {
                let rest = &p.base_url[p.base_url.find("://")? + 3..];
                let path = rest.find('/').map_or("", |i| &rest[i..]);
                Some((u.scheme()?.clone(), u.authority()?.clone(), path.to_owned()))
            })
            .ok_or_else(|| {
                format!(
                    "provider `{}`: base_url is not an absolute http(s) URL",
                    p.name
                )
            })?;
        let pool = Pool::new(
            connector(p.allow_link_local, p.timeouts.connect)
                .map_err(|e| format!("TLS setup for provider `{}`: {e}", p.name))?,
            scheme,
            authority,
            MAX_IDLE_PER_PROVIDER,
            IDLE_TIMEOUT,
        )?;
        Ok(Upstream {
            pool,
            auth,
            host,
            base_path,
        })
    }

    /// Sends `method {base_url}{path}` to the provider with its key, the
    /// client's forwardable headers (when given; without a body, not its
    /// `content-type`) and the request id, within the first-byte timeout.
    pub async fn send(
        &self,
        p: &ProviderConfig,
        method: http::Method,
        path: &str,
        body: Option<Bytes>,
        client_headers: Option<&HeaderMap>,
        request_id: Option<&str>,
    ) -> Result<UpstreamResponse, ApiError> {
        let uri = self
            .uri(path)
            .ok_or(ApiError::InvalidPath("cannot form the upstream URL"))?;
        let has_body = body.is_some();
        let mut req = hyper::Request::new(Full::new(body.unwrap_or_default()));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.reserve(client_headers.map_or(0, HeaderMap::len) + 3);
        if let Some(h) = client_headers {
            forward_request_headers(h, headers);
            if !has_body {
                headers.remove(header::CONTENT_TYPE);
            }
        }
        if let Some(v) = &self.host {
            headers.insert(header::HOST, v.clone());
        }
        if let Some(v) = &self.auth {
            headers.insert(header::AUTHORIZATION, v.clone());
        }
        if let Some(v) = request_id.and_then(|r| HeaderValue::from_str(r).ok()) {
            headers.insert(X_REQUEST_ID, v);
        }
        match tokio::time::timeout(p.timeouts.first_byte, self.pool.send(req)).await {
            Err(_) => Err(ApiError::UpstreamTimeout("first byte")),
            Ok(result) => result,
        }
    }
}

impl Upstream {
    /// `{base_path}{path}`: the origin-form URI of `{base_url}{path}` (the
    /// pool adds the origin where the protocol wants it).
    fn uri(&self, path: &str) -> Option<http::Uri> {
        let mut path_and_query = String::with_capacity(self.base_path.len() + path.len());
        path_and_query.push_str(&self.base_path);
        path_and_query.push_str(path);
        if !path_and_query.starts_with('/') {
            path_and_query.insert(0, '/');
        }
        http::uri::PathAndQuery::try_from(path_and_query)
            .ok()
            .map(http::Uri::from)
    }
}

/// Idle connections kept per provider, and how long each.
const MAX_IDLE_PER_PROVIDER: usize = 1024;
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// TCP through the SSRF-guarded resolver (link-local and metadata addresses
/// dropped unless allowed), then TLS for `https`, ALPN offering h2 and http/1.1.
pub(super) fn connector(
    allow_link_local: bool,
    connect_timeout: Duration,
) -> Result<Connector, rustls::Error> {
    let mut http =
        HttpConnector::new_with_resolver(super::ssrf::GuardedResolver::new(allow_link_local));
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}

/// Request headers never forwarded upstream: hop-by-hop headers, the client's
/// credentials, cookies, `Host`, client addresses, and headers that would let
/// a client re-credential the call (`OpenAI-Organization`, `OpenAI-Project`).
/// `accept-encoding` is dropped so the usage tap reads plain bodies.
const REQUEST_DENY: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "cookie",
    "content-length",
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "openai-organization",
    "openai-project",
    "x-request-id",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "accept-encoding",
    "x-firebase-appcheck",
];

/// Response headers never passed back: hop-by-hop headers and cookies.
const RESPONSE_DENY: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
    "alt-svc",
];

fn named_in_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
    })
}

/// Copies the client's headers that may go upstream.
pub fn forward_request_headers(from: &HeaderMap, to: &mut HeaderMap) {
    let connection = from.contains_key(header::CONNECTION);
    for (name, value) in from {
        if REQUEST_DENY.contains(&name.as_str()) || (connection && named_in_connection(from, name))
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// Keeps, in place, the provider's response headers that may go to the
/// client: drops hop-by-hop headers, those the `Connection` header names and
/// cookies, and keeps the provider's own `x-request-id` as
/// `x-upstream-request-id`. In place rather than copied into a new map: the
/// answer's few headers then are neither hashed nor stored a second time.
pub fn sanitize_response_headers(headers: &mut HeaderMap) {
    let connection = headers.contains_key(header::CONNECTION);
    // One pass over the names finds what to drop (usually nothing, and then
    // nothing is allocated).
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            RESPONSE_DENY.contains(&name.as_str())
                || (connection && named_in_connection(headers, name))
        })
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(name);
    }
    let upstream_id = headers.remove(X_REQUEST_ID);
    if let Some(v) = upstream_id {
        headers.insert(X_UPSTREAM_REQUEST_ID, v);
    }
}

const X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// Copies the rate-limit hints of a provider's error response (`retry-after`,
/// `retry-after-ms`, `x-ratelimit-*`), so that SDKs back off as the provider asks.
pub fn forward_rate_limit_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let n = name.as_str();
        if n == "retry-after" || n == "retry-after-ms" || n.starts_with("x-ratelimit-") {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Removes anything that could carry a credential from a provider's error
/// message: key-like tokens (`sk-…`, `pcs_…`, masked `sk-te****wxyz`), long
/// opaque tokens, and the provider's own key verbatim.
pub fn scrub(message: &str, provider_key: Option<&str>) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let core = word.trim_matches(|c: char| ".,;:()[]{}'\"`".contains(c));
        let looks_secret = core.contains("sk-")
            || core.starts_with("pcs_")
            || core.starts_with("pcm_")
            || core.contains("**")
            || (core.len() >= 20
                && core
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && core.chars().any(|c| c.is_ascii_digit()))
            || provider_key.is_some_and(|k| {
                k.len() >= 8 && (core.contains(k) || k.contains(core) && core.len() >= 8)
            });
        if looks_secret && !core.is_empty() {
            out.push_str(&word.replace(core, "[redacted]"));
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[test]
    fn the_upstream_path_built_from_parts_is_the_formatted_one() {
        for base in [
            "http://127.0.0.1:9/v1",
            "https://api.example.com",
            "https://api.example.com:8443/openai/v1",
        ] {
            let yaml = format!(
                "providers:\n  - name: p\n    kind: openai_compatible\n    base_url: {base}\n    models: [m]\n"
            );
            let cfg = crate::config::Config::from_yaml(
                &yaml,
                &|_| None,
                crate::config::ConfigSource::Defaults,
            )
            .expect("config");
            let p = &cfg.providers[0];
            let up = Upstream::new(p).expect("upstream");
            for path in [
                "/chat/completions",
                "/files?limit=10&after=file-1",
                "/models/a%2Fb",
                "",
            ] {
                let formatted: http::Uri = format!("{}{path}", p.base_url).parse().expect("uri");
                let built = up.uri(path).expect("built");
                assert_eq!(
                    built.path_and_query(),
                    formatted.path_and_query(),
                    "{base} + {path}"
                );
                assert_eq!(built.scheme(), None, "origin form");
            }
            // A path that is not a valid URI part is refused either way.
            assert_eq!(up.uri("/a b"), None);
        }
    }

    #[test]
    fn scrubs_key_fragments() {
        let m = "Incorrect API key provided: sk-te********wxyz. You can find your API key at https://platform.openai.com/account/api-keys.";
        let s = scrub(m, Some("sk-test-abcdefwxyz"));
        assert!(!s.contains("sk-te"), "{s}");
        assert!(!s.contains("wxyz"), "{s}");
        assert!(s.contains("Incorrect API key provided: [redacted]."));
        assert_eq!(scrub("model not found", None), "model not found");
    }
}
