//! JWT/OIDC verification, driven directly (the gateway-level tests live elsewhere):
//! presets, RFC 8725 attacks one by one, the key-set cache (rotation, outage,
//! `kid` floods, single flight, `Cache-Control`), the leeway boundary, OIDC
//! discovery, App Check, and the Wycheproof JWS vectors.
//!
//! A local JWKS/OIDC server on `127.0.0.1:0` stands in for the identity
//! providers; the test keys are in `tests/fixtures/jwt/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm as JAlg, EncodingKey};
use portcullis::authn::jwt::{
    Algorithm, AppCheckFile, AppCheckVerifier, CacheSettings, JwtError, JwtIssuer, JwtIssuerFile,
    JwtVerifier, KeySource, validate_issuers, verify_jws_with_jwks,
};
use portcullis::clock::{Clock, ManualClock};
use serde_json::{Value, json};

/// 2027-01-15T08:00:00Z, a round instant for the manual clock.
const NOW_MS: i64 = 1_800_000_000_000;
const NOW: i64 = NOW_MS / 1000;
const ISS: &str = "https://idp.test/";
const AUD: &str = "portcullis-test";

// ------------------------------------------------------------------ fixtures

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

struct Keys {
    rsa1: EncodingKey,
    rsa2: EncodingKey,
    rsa_weak: EncodingKey,
    ec: EncodingKey,
    ed: EncodingKey,
    public: Value,
}

fn keys() -> Keys {
    Keys {
        rsa1: EncodingKey::from_rsa_pem(&fixture("rsa1.pem")).unwrap(),
        rsa2: EncodingKey::from_rsa_pem(&fixture("rsa2.pem")).unwrap(),
        rsa_weak: EncodingKey::from_rsa_pem(&fixture("rsa1024.pem")).unwrap(),
        ec: EncodingKey::from_ec_pem(&fixture("ec256.pem")).unwrap(),
        ed: EncodingKey::from_ed_pem(&fixture("ed25519.pem")).unwrap(),
        public: serde_json::from_slice(&fixture("public_jwks.json")).unwrap(),
    }
}

impl Keys {
    /// The public JWK with this `kid`.
    fn jwk(&self, kid: &str) -> Value {
        self.public["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .cloned()
            .unwrap_or_else(|| panic!("no fixture key {kid}"))
    }

    fn set(&self, kids: &[&str]) -> Value {
        json!({ "keys": kids.iter().map(|k| self.jwk(k)).collect::<Vec<_>>() })
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS with exactly this header and payload, signed (or not).
fn raw(header: &Value, payload: &[u8], key: Option<(&EncodingKey, JAlg)>) -> String {
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).unwrap()),
        b64(payload)
    );
    let sig = match key {
        Some((k, alg)) => jsonwebtoken::crypto::sign(input.as_bytes(), k, alg).unwrap(),
        None => String::new(),
    };
    format!("{input}.{sig}")
}

fn jalg(name: &str) -> JAlg {
    name.parse().unwrap()
}

/// Signs `claims` with `key` under `alg` and `kid`.
fn sign(key: &EncodingKey, alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({ "alg": alg, "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    raw(
        &header,
        &serde_json::to_vec(claims).unwrap(),
        Some((key, jalg(alg))),
    )
}

fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "iat": NOW,
        "exp": NOW + 3600,
    })
}

fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

// ------------------------------------------------------- local JWKS/OIDC server

#[derive(Default)]
struct ServerState {
    jwks: Value,
    down: bool,
    cache_control: Option<String>,
    discovery_issuer: String,
    delay_ms: u64,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<ServerState>>,
    jwks_hits: Arc<AtomicUsize>,
    other_hits: Arc<AtomicUsize>,
    base: Arc<str>,
}

/// A local identity provider: `/jwks` (switchable set, "down" switch,
/// `Cache-Control`, a request counter), OIDC discovery, redirects, and
/// oversized and slow responses.
struct JwksServer {
    shared: Shared,
    base: String,
}

async fn serve_jwks(State(s): State<Shared>) -> Response {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let (body, down, cc, delay) = {
        let st = s.state.lock().unwrap();
        (
            st.jwks.clone(),
            st.down,
            st.cache_control.clone(),
            st.delay_ms,
        )
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if down {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let mut resp = axum::Json(body).into_response();
    if let Some(cc) = cc {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_str(&cc).unwrap());
    }
    resp
}

async fn serve_discovery(State(s): State<Shared>) -> Response {
    s.other_hits.fetch_add(1, Ordering::SeqCst);
    let issuer = s.state.lock().unwrap().discovery_issuer.clone();
    axum::Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{}/jwks", s.base),
        "authorization_endpoint": format!("{}/authorize", s.base),
    }))
    .into_response()
}

async fn redirect_same(State(s): State<Shared>) -> Response {
    s.other_hits.fetch_add(1, Ordering::SeqCst);
    let mut h = HeaderMap::new();
    h.insert(header::LOCATION, HeaderValue::from_static("/jwks"));
    (StatusCode::FOUND, h).into_response()
}

async fn redirect_other(State(s): State<Shared>) -> Response {
    s.other_hits.fetch_add(1, Ordering::SeqCst);
    // Same server, other host name: must not be followed.
    let other = s.base.replace("127.0.0.1", "localhost");
    let mut h = HeaderMap::new();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("{other}/jwks")).unwrap(),
    );
    (StatusCode::FOUND, h).into_response()
}

async fn huge(State(s): State<Shared>) -> Response {
    s.other_hits.fetch_add(1, Ordering::SeqCst);
    let pad = "x".repeat(2 * 1024 * 1024);
    axum::Json(json!({ "keys": [], "pad": pad })).into_response()
}

async fn slow(State(s): State<Shared>) -> Response {
    s.other_hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    axum::Json(json!({ "keys": [] })).into_response()
}

impl JwksServer {
    async fn start(jwks: Value) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared {
            state: Arc::new(Mutex::new(ServerState {
                jwks,
                discovery_issuer: ISS.to_owned(),
                ..ServerState::default()
            })),
            jwks_hits: Arc::default(),
            other_hits: Arc::default(),
            base: Arc::from(base.as_str()),
        };
        let app = Router::new()
            .route("/jwks", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(serve_discovery))
            .route("/redirect-same", get(redirect_same))
            .route("/redirect-other", get(redirect_other))
            .route("/huge", get(huge))
            .route("/slow", get(slow))
            .with_state(shared.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        JwksServer { shared, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    fn jwks_url(&self) -> String {
        self.url("/jwks")
    }
    fn set_keys(&self, jwks: Value) {
        self.shared.state.lock().unwrap().jwks = jwks;
    }
    fn set_down(&self, down: bool) {
        self.shared.state.lock().unwrap().down = down;
    }
    fn set_cache_control(&self, cc: &str) {
        self.shared.state.lock().unwrap().cache_control = Some(cc.to_owned());
    }
    fn set_discovery_issuer(&self, iss: &str) {
        self.shared.state.lock().unwrap().discovery_issuer = iss.to_owned();
    }
    fn set_delay_ms(&self, ms: u64) {
        self.shared.state.lock().unwrap().delay_ms = ms;
    }
    /// Requests to `/jwks` so far.
    fn hits(&self) -> usize {
        self.shared.jwks_hits.load(Ordering::SeqCst)
    }
    /// Waits (up to 5 s) until `/jwks` has been asked `n` times, and checks it
    /// was not asked more often.
    async fn wait_for_hits(&self, n: usize) {
        for _ in 0..500 {
            if self.hits() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(self.hits(), n);
    }
    /// Requests to every other route so far.
    fn other_hits(&self) -> usize {
        self.shared.other_hits.load(Ordering::SeqCst)
    }
}

// ------------------------------------------------------------------- helpers

fn issuer_file(v: Value) -> JwtIssuerFile {
    serde_json::from_value(v).unwrap()
}

fn issuer(v: Value) -> JwtIssuer {
    issuer_file(v)
        .validate("auth.jwt[0]")
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// The plain test issuer against `server`, with `extra` fields.
fn test_issuer(server: &JwksServer, extra: Value) -> JwtIssuer {
    let base = json!({
        "name": "idp",
        "issuer": ISS,
        "jwks_url": server.jwks_url(),
        "audiences": [AUD],
        "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
    });
    issuer(with(base, extra))
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(NOW_MS))
}

fn verifier(issuers: Vec<JwtIssuer>, clock: &Arc<ManualClock>) -> JwtVerifier {
    JwtVerifier::new(issuers, clock.clone())
}

fn reason(r: Result<impl std::fmt::Debug, JwtError>) -> String {
    match r {
        Ok(v) => panic!("accepted: {v:?}"),
        Err(JwtError::Invalid(reason)) => reason.to_owned(),
        Err(e @ JwtError::KeySetUnavailable(_)) => panic!("unexpected {e}"),
    }
}

fn config_errors(v: Value) -> Vec<String> {
    match issuer_file(v).validate("auth.jwt[0]") {
        Ok(i) => panic!("accepted: {i:?}"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

// --------------------------------------------------------------------- tests

#[tokio::test]
async fn valid_tokens_of_every_key_type_are_accepted() {
    let k = keys();
    let mut ps_key = k.jwk("rsa-1");
    ps_key.as_object_mut().unwrap().remove("alg");
    ps_key["kid"] = json!("rsa-1-any");
    let mut set = k.set(&["rsa-1", "ec-1", "ed-1"]);
    set["keys"].as_array_mut().unwrap().push(ps_key);
    let server = JwksServer::start(set).await;
    let clock = clock();
    let v = verifier(
        vec![test_issuer(
            &server,
            json!({
                "team_claim": "app_metadata.team",
                "roles_claim": "app_metadata.roles",
            }),
        )],
        &clock,
    );
    let c = with(
        claims(),
        json!({"app_metadata": {"team": "red", "roles": ["admin", "dev"]}}),
    );
    for (key, alg, kid) in [
        (&k.rsa1, "RS256", "rsa-1"),
        (&k.rsa1, "PS256", "rsa-1-any"),
        (&k.ec, "ES256", "ec-1"),
        (&k.ed, "EdDSA", "ed-1"),
    ] {
        let id = v
            .verify(&sign(key, alg, Some(kid), &c))
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(id.user, "idp:user-1");
        assert_eq!(id.subject, "user-1");
        assert_eq!(id.issuer_name, "idp");
        assert_eq!(id.team.as_deref(), Some("red"));
        assert_eq!(id.roles, vec!["admin".to_owned(), "dev".to_owned()]);
    }
    // One fetch served them all.
    assert_eq!(server.hits(), 1);

    // aud as an array containing the audience; roles as one string; numeric sub.
    let c = with(
        claims(),
        json!({"aud": ["other", AUD], "sub": 42, "app_metadata": {"roles": "admin"}}),
    );
    let id = v
        .verify(&sign(&k.rsa1, "RS256", Some("rsa-1"), &c))
        .await
        .unwrap();
    assert_eq!(id.user, "idp:42");
    assert_eq!(id.roles, vec!["admin".to_owned()]);
    assert_eq!(id.team, None);
}

#[tokio::test]
async fn keys_without_kid_are_tried_by_type() {
    let k = keys();
    let mut rsa = k.jwk("rsa-1");
    rsa.as_object_mut().unwrap().remove("kid");
    let mut ec = k.jwk("ec-1");
    ec.as_object_mut().unwrap().remove("kid");
    let server = JwksServer::start(json!({ "keys": [rsa, ec] })).await;
    let clock = clock();
    let v = verifier(vec![test_issuer(&server, json!({}))], &clock);
    v.verify(&sign(&k.rsa1, "RS256", None, &claims()))
        .await
        .unwrap();
    v.verify(&sign(&k.ec, "ES256", None, &claims()))
        .await
        .unwrap();
    // A token naming a kid still verifies with the kid-less key of its type.
    v.verify(&sign(&k.ec, "ES256", Some("whatever"), &claims()))
        .await
        .unwrap();
    assert_eq!(
        reason(v.verify(&sign(&k.rsa2, "RS256", None, &claims())).await),
        "bad signature"
    );
}

/// Every preset shape expands to its provider's documented issuer, key set and
/// audience, and verifies a token once its key-set URL points here.
#[tokio::test]
async fn presets_expand_and_verify_against_a_local_key_set() {
    let k = keys();
    let server = JwksServer::start(k.set(&["rsa-1", "ec-1"])).await;
    let clock = clock();
    struct Case {
        params: Value,
        issuer: &'static str,
        jwks: &'static str,
        aud: &'static str,
    }
    let cases = [
        Case {
            params: json!({"preset": "supabase", "project_ref": "abcdefghijklmnopqrst"}),
            issuer: "https://abcdefghijklmnopqrst.supabase.co/auth/v1",
            jwks: "https://abcdefghijklmnopqrst.supabase.co/auth/v1/.well-known/jwks.json",
            aud: "authenticated",
        },
        Case {
            params: json!({"preset": "firebase", "project_id": "my-app-1234"}),
            issuer: "https://securetoken.google.com/my-app-1234",
            jwks: "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com",
            aud: "my-app-1234",
        },
        Case {
            params: json!({"preset": "auth0", "domain": "tenant.eu.auth0.com", "audience": "https://api.example.com"}),
            issuer: "https://tenant.eu.auth0.com/",
            jwks: "https://tenant.eu.auth0.com/.well-known/jwks.json",
            aud: "https://api.example.com",
        },
        Case {
            params: json!({"preset": "clerk", "domain": "clerk.example.com", "audience": "portcullis"}),
            issuer: "https://clerk.example.com",
            jwks: "https://clerk.example.com/.well-known/jwks.json",
            aud: "portcullis",
        },
        Case {
            params: json!({"preset": "cognito", "region": "eu-west-1", "user_pool_id": "eu-west-1_AbCdEf123", "audience": "3n4b5urk1ft4fl3mg5e62d9ado"}),
            issuer: "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123",
            jwks: "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123/.well-known/jwks.json",
            aud: "3n4b5urk1ft4fl3mg5e62d9ado",
        },
        Case {
            params: json!({"preset": "entra", "tenant_id": "9188040d-6c67-4c5b-b112-36a304b66dad", "audience": "api://portcullis"}),
            issuer: "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
            jwks: "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/discovery/v2.0/keys",
            aud: "api://portcullis",
        },
        Case {
            params: json!({"preset": "google", "audience": "1234-abc.apps.googleusercontent.com"}),
            issuer: "https://accounts.google.com",
            jwks: "https://www.googleapis.com/oauth2/v3/certs",
            aud: "1234-abc.apps.googleusercontent.com",
        },
        Case {
            params: json!({"preset": "okta", "domain": "dev-123.okta.com", "audience": "api://default"}),
            issuer: "https://dev-123.okta.com/oauth2/default",
            jwks: "https://dev-123.okta.com/oauth2/default/v1/keys",
            aud: "api://default",
        },
        Case {
            params: json!({"preset": "okta", "domain": "dev-123.okta.com", "authorization_server": "aus1a2b3c", "audience": "api://x"}),
            issuer: "https://dev-123.okta.com/oauth2/aus1a2b3c",
            jwks: "https://dev-123.okta.com/oauth2/aus1a2b3c/v1/keys",
            aud: "api://x",
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let name = format!("p{i}");
        let expanded = issuer(with(case.params.clone(), json!({"name": name})));
        assert_eq!(expanded.issuer, case.issuer);
        assert_eq!(expanded.key_source, KeySource::Jwks(case.jwks.to_owned()));
        assert_eq!(expanded.audiences, vec![case.aud.to_owned()]);
        assert_eq!(expanded.user_claim, "sub");

        // Override the key-set URL (every expanded value is overridable).
        let local = issuer(with(
            case.params.clone(),
            json!({"name": name, "jwks_url": server.jwks_url()}),
        ));
        assert_eq!(local.issuer, case.issuer);
        let v = verifier(vec![local], &clock);
        let c = with(claims(), json!({"iss": case.issuer, "aud": case.aud}));
        let id = v
            .verify(&sign(&k.rsa1, "RS256", Some("rsa-1"), &c))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.issuer));
        assert_eq!(id.user, format!("{name}:user-1"));
        // Another issuer's token is not this one's.
        let other = with(c.clone(), json!({"iss": "https://idp.test/"}));
        assert_eq!(
            reason(
                v.verify(&sign(&k.rsa1, "RS256", Some("rsa-1"), &other))
                    .await
            ),
            "unknown issuer"
        );
        let wrong_aud = with(c, json!({"aud": "someone-else"}));
        assert_eq!(
            reason(
                v.verify(&sign(&k.rsa1, "RS256", Some("rsa-1"), &wrong_aud))
                    .await
            ),
            "aud mismatch"
        );
    }

    // Supabase accepts ES256 (its default asymmetric key type) as well as RS256.
    let supa = issuer(
        json!({"name": "supabase", "preset": "supabase", "project_ref": "abc",
        "jwks_url": server.jwks_url(), "required_claims": {"role": "authenticated"},
        "team_claim": "app_metadata.team"}),
    );
    assert_eq!(supa.algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
    let v = verifier(vec![supa], &clock);
    let c = with(
        claims(),
        json!({"iss": "https://abc.supabase.co/auth/v1", "aud": "authenticated",
               "role": "authenticated", "app_metadata": {"team": "t1"}}),
    );
    let id = v
        .verify(&sign(&k.ec, "ES256", Some("ec-1"), &c))
        .await
        .unwrap();
    assert_eq!(
        (id.user.as_str(), id.team.as_deref()),
        ("supabase:user-1", Some("t1"))
    );
    let anon = with(c, json!({"role": "anon"}));
    assert_eq!(
        reason(v.verify(&sign(&k.ec, "ES256", Some("ec-1"), &anon)).await),
        "required claim mismatch"
    );

    // Explicit fields override every expanded value.
    let o = issuer(
        json!({"name": "o", "preset": "auth0", "domain": "t.auth0.com", "audience": "a",
        "issuer": "https://custom.example/", "audiences": ["b", "c"], "algorithms": ["PS256"],
        "discovery_url": "https://custom.example/.well-known/openid-configuration", "leeway_seconds": 5}),
    );
    assert_eq!(o.issuer, "https://custom.example/");
    assert_eq!(o.audiences, vec!["b".to_owned(), "c".to_owned()]);
    assert_eq!(o.algorithms, vec![Algorithm::PS256]);
    assert_eq!(
        o.key_source,
        KeySource::Discovery("https://custom.example/.well-known/openid-configuration".into())
    );
    assert_eq!(o.leeway, Duration::from_secs(5));
}

#[test]
fn configuration_mistakes_are_refused() {
    let base = json!({"name": "x", "issuer": ISS, "jwks_url": "https://idp.test/jwks", "audiences": [AUD]});
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"algorithms": ["none"]}),
            "`none` can never be accepted",
        ),
        (
            json!({"algorithms": ["RS256", "NoNe"]}),
            "`none` can never be accepted",
        ),
        (json!({"algorithms": ["RS257"]}), "unsupported algorithm"),
        (json!({"algorithms": ["rs256"]}), "unsupported algorithm"),
        (json!({"algorithms": []}), "must not be empty"),
        (json!({"algorithms": ["HS256"]}), "need hs256_secret"),
        (
            json!({"discovery_url": "https://idp.test/.well-known/openid-configuration"}),
            "exactly one",
        ),
        (
            json!({"jwks_url": null}),
            "one of jwks_url, discovery_url, hs256_secret is required",
        ),
        (json!({"audiences": null}), "at least one audience"),
        (json!({"audiences": []}), "at least one audience"),
        (json!({"issuer": null}), "issuer: is required"),
        (
            json!({"jwks_url": "http://idp.test/jwks"}),
            "must use https",
        ),
        (
            json!({"jwks_url": "https://u:p@idp.test/jwks"}),
            "credentials",
        ),
        (json!({"name": "a:b"}), "name: must be"),
        (json!({"leeway_seconds": 301}), "at most 300"),
        (json!({"project_ref": "abc"}), "set `preset` too"),
        (
            json!({"preset": "supabase", "project_ref": "abc", "tenant_id": "t"}),
            "not a parameter of preset supabase",
        ),
        (
            json!({"preset": "auth0", "audience": "a"}),
            "domain: required by preset auth0",
        ),
        (
            json!({"preset": "entra", "tenant_id": "common", "audience": "a"}),
            "one tenant",
        ),
        (
            json!({"preset": "auth0", "domain": "evil.com/x?", "audience": "a"}),
            "host name",
        ),
        (
            json!({"jwks_url": null, "hs256_secret": "short"}),
            "at least 32 bytes",
        ),
        (
            json!({"jwks_url": null, "hs256_secret": "0123456789abcdef0123456789abcdef", "algorithms": ["HS256", "RS256"]}),
            "only HS256",
        ),
        (json!({"user_claim": ""}), "user_claim"),
    ];
    for (change, expected) in cases {
        let errors = config_errors(with(base.clone(), change.clone()));
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{change}: {errors:?} lacks {expected:?}"
        );
        assert!(
            errors.iter().all(|e| e.starts_with("auth.jwt[0].")),
            "{errors:?}"
        );
    }
    // Unknown keys are refused by the file model itself.
    assert!(
        serde_json::from_value::<JwtIssuerFile>(with(base.clone(), json!({"jwk_url": "x"})))
            .is_err()
    );
    assert!(
        serde_json::from_value::<JwtIssuerFile>(with(base.clone(), json!({"preset": "keycloak"})))
            .is_err()
    );

    // Names and issuers are unique across entries.
    let files = vec![issuer_file(base.clone()), issuer_file(base.clone())];
    let errors = validate_issuers(files, "auth.jwt").unwrap_err();
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter().any(|e| e.starts_with("auth.jwt[1].name")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|e| e.starts_with("auth.jwt[1].issuer")),
        "{text:?}"
    );

    // The secret never shows in Debug output.
    let hs = issuer(with(
        base,
        json!({"jwks_url": null, "hs256_secret": "super-secret-value-0123456789-abcdef"}),
    ));
    assert_eq!(hs.algorithms, vec![Algorithm::HS256]);
    assert!(!format!("{hs:?}").contains("super-secret"));
}

/// RFC 8725 attacks and malformed claims, one by one: each is `Invalid` with its
/// precise reason, and nothing named in a token is ever fetched.
#[tokio::test]
async fn attacks_are_refused_one_by_one() {
    let k = keys();
    let mut set = k.set(&["rsa-1", "ec-1", "rsa-weak"]);
    // A second RSA key bound to RS256 only, to prove alg binding.
    set["keys"].as_array_mut().unwrap().push(k.jwk("ed-1"));
    let server = JwksServer::start(set).await;
    let clock = clock();
    let v = verifier(
        vec![test_issuer(
            &server,
            json!({"required_claims": {"tier": "pro"}, "roles_claim": "roles"}),
        )],
        &clock,
    );
    let good = with(claims(), json!({"tier": "pro"}));
    let good_bytes = serde_json::to_vec(&good).unwrap();
    let rs = |c: &Value| sign(&k.rsa1, "RS256", Some("rsa-1"), c);
    v.verify(&rs(&good)).await.unwrap();
    let fetches = server.hits();

    let rsa_public_bytes = {
        // The classic confusion: HMAC keyed with the RSA public key's bytes.
        let jwk = k.jwk("rsa-1");
        format!(
            "{}{}",
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap()
        )
    };
    let hmac_with_public = EncodingKey::from_secret(rsa_public_bytes.as_bytes());
    let attacker_jwk = json!({"kty": "RSA", "n": k.jwk("rsa-1")["n"], "e": "AQAB"});
    let huge = with(good.clone(), json!({"pad": "x".repeat(17 * 1024)}));
    let mut dup = String::from_utf8(good_bytes.clone()).unwrap();
    dup.insert_str(1, r#""sub":"admin","#);

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            raw(&json!({"alg": "none"}), &good_bytes, None),
            "alg none refused",
        ),
        (
            "alg NONE",
            raw(&json!({"alg": "NONE"}), &good_bytes, None),
            "alg none refused",
        ),
        (
            "alg nOnE with a signature",
            format!(
                "{}c2ln",
                raw(&json!({"alg": "nOnE", "kid": "rsa-1"}), &good_bytes, None)
            ),
            "alg none refused",
        ),
        (
            "HS256 keyed with the RSA public key",
            raw(
                &json!({"alg": "HS256", "kid": "rsa-1"}),
                &good_bytes,
                Some((&hmac_with_public, JAlg::HS256)),
            ),
            "alg not allowed for this issuer",
        ),
        (
            "embedded jwk",
            raw(
                &json!({"alg": "RS256", "jwk": attacker_jwk}),
                &good_bytes,
                Some((&k.rsa1, JAlg::RS256)),
            ),
            "embedded jwk header refused",
        ),
        (
            "jku to a key set",
            raw(
                &json!({"alg": "RS256", "kid": "rsa-1", "jku": server.jwks_url()}),
                &good_bytes,
                Some((&k.rsa1, JAlg::RS256)),
            ),
            "jku header refused",
        ),
        (
            "x5u",
            raw(
                &json!({"alg": "RS256", "kid": "rsa-1", "x5u": server.url("/huge")}),
                &good_bytes,
                Some((&k.rsa1, JAlg::RS256)),
            ),
            "x5u header refused",
        ),
        (
            "x5c",
            raw(
                &json!({"alg": "RS256", "kid": "rsa-1", "x5c": ["MIIB"]}),
                &good_bytes,
                Some((&k.rsa1, JAlg::RS256)),
            ),
            "x5c header refused",
        ),
        (
            "crit",
            raw(
                &json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1}),
                &good_bytes,
                Some((&k.rsa1, JAlg::RS256)),
            ),
            "crit header refused",
        ),
        (
            "ES256 header naming the RSA key",
            sign(&k.ec, "ES256", Some("rsa-1"), &good),
            "kid names a key of another type or alg",
        ),
        (
            "PS256 with a key bound to RS256",
            sign(&k.rsa1, "PS256", Some("rsa-1"), &good),
            "kid names a key of another type or alg",
        ),
        (
            "alg not configured",
            sign(&k.rsa1, "RS384", Some("rsa-1"), &good),
            "alg not allowed for this issuer",
        ),
        (
            "lower-case alg",
            raw(
                &json!({"alg": "rs256", "kid": "rsa-1"}),
                &good_bytes,
                Some((&k.rsa1, JAlg::RS256)),
            ),
            "unsupported alg",
        ),
        (
            "another key, same kid",
            sign(&k.rsa2, "RS256", Some("rsa-1"), &good),
            "bad signature",
        ),
        (
            "weak 1024-bit key",
            sign(&k.rsa_weak, "RS256", Some("rsa-weak"), &good),
            "unknown kid",
        ),
        (
            "tampered payload",
            {
                let t = rs(&good);
                let parts: Vec<&str> = t.split('.').collect();
                let evil =
                    b64(&serde_json::to_vec(&with(good.clone(), json!({"sub": "admin"}))).unwrap());
                format!("{}.{evil}.{}", parts[0], parts[2])
            },
            "bad signature",
        ),
        (
            "truncated signature",
            {
                let t = rs(&good);
                let (input, sig) = t.rsplit_once('.').unwrap();
                let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
                format!("{input}.{}", b64(&sig[..sig.len() - 1]))
            },
            "bad signature",
        ),
        (
            "no signature",
            {
                let t = rs(&good);
                t[..=t.rfind('.').unwrap()].to_owned()
            },
            "missing signature",
        ),
        (
            "two segments",
            {
                let t = rs(&good);
                t[..t.rfind('.').unwrap()].to_owned()
            },
            "malformed token",
        ),
        (
            "JSON serialization",
            format!(r#"{{"payload":"{}","signatures":[]}}"#, b64(&good_bytes)),
            "malformed token",
        ),
        (
            "padded base64",
            {
                let t = rs(&good);
                format!("{t}=")
            },
            "malformed token",
        ),
        (
            "non-canonical base64",
            {
                let t = rs(&good);
                let (input, _) = t.rsplit_once('.').unwrap();
                format!("{input}.AB")
            },
            "malformed signature",
        ),
        ("token over 16 KiB", rs(&huge), "token too large"),
        (
            "duplicate claim",
            raw(
                &json!({"alg": "RS256", "kid": "rsa-1"}),
                dup.as_bytes(),
                Some((&k.rsa1, JAlg::RS256)),
            ),
            "payload not a JSON object",
        ),
        (
            "payload not an object",
            raw(
                &json!({"alg": "RS256", "kid": "rsa-1"}),
                b"[1]",
                Some((&k.rsa1, JAlg::RS256)),
            ),
            "payload not a JSON object",
        ),
        (
            "exp as a string",
            rs(&with(
                good.clone(),
                json!({"exp": (NOW + 3600).to_string()}),
            )),
            "exp not a number",
        ),
        (
            "exp missing",
            rs(&with(good.clone(), json!({"exp": null}))),
            "exp missing",
        ),
        (
            "exp negative",
            rs(&with(good.clone(), json!({"exp": -1}))),
            "exp out of range",
        ),
        (
            "exp past year 9999",
            rs(&with(good.clone(), json!({"exp": 253_402_300_800_i64}))),
            "exp out of range",
        ),
        (
            "exp u64::MAX",
            rs(&with(good.clone(), json!({"exp": u64::MAX}))),
            "exp out of range",
        ),
        (
            "exp 1e300",
            rs(&with(good.clone(), json!({"exp": 1e300}))),
            "exp out of range",
        ),
        (
            "exp huge integer literal",
            raw(
                &json!({"alg": "RS256", "kid": "rsa-1"}),
                String::from_utf8(good_bytes.clone())
                    .unwrap()
                    .replacen('{', r#"{"exp":99999999999999999999999999999999,"#, 1)
                    .replace(&format!(r#","exp":{}"#, NOW + 3600), "")
                    .as_bytes(),
                Some((&k.rsa1, JAlg::RS256)),
            ),
            "exp out of range",
        ),
        (
            "expired",
            rs(&with(good.clone(), json!({"exp": NOW - 60}))),
            "token expired",
        ),
        (
            "nbf in the future",
            rs(&with(good.clone(), json!({"nbf": NOW + 600}))),
            "token not yet valid (nbf)",
        ),
        (
            "nbf a string",
            rs(&with(good.clone(), json!({"nbf": "0"}))),
            "nbf not a number",
        ),
        (
            "iat in the future",
            rs(&with(good.clone(), json!({"iat": NOW + 600}))),
            "iat in the future",
        ),
        (
            "iat negative",
            rs(&with(good.clone(), json!({"iat": -5}))),
            "iat out of range",
        ),
        (
            "iss as an array",
            rs(&with(good.clone(), json!({"iss": [ISS]}))),
            "iss not a string",
        ),
        (
            "iss missing",
            rs(&with(good.clone(), json!({"iss": null}))),
            "iss missing",
        ),
        (
            "unknown iss",
            rs(&with(good.clone(), json!({"iss": "https://evil.test/"}))),
            "unknown issuer",
        ),
        (
            "iss with trailing slash removed",
            rs(&with(good.clone(), json!({"iss": "https://idp.test"}))),
            "unknown issuer",
        ),
        (
            "aud missing",
            rs(&with(good.clone(), json!({"aud": null}))),
            "aud missing",
        ),
        (
            "aud wrong",
            rs(&with(good.clone(), json!({"aud": "other"}))),
            "aud mismatch",
        ),
        (
            "aud array without ours",
            rs(&with(good.clone(), json!({"aud": ["a", "b"]}))),
            "aud mismatch",
        ),
        (
            "aud empty array",
            rs(&with(good.clone(), json!({"aud": []}))),
            "aud empty",
        ),
        (
            "aud array with a number",
            rs(&with(good.clone(), json!({"aud": [AUD, 5]}))),
            "aud malformed",
        ),
        (
            "aud a number",
            rs(&with(good.clone(), json!({"aud": 5}))),
            "aud malformed",
        ),
        (
            "required claim wrong",
            rs(&with(good.clone(), json!({"tier": "free"}))),
            "required claim mismatch",
        ),
        (
            "required claim missing",
            rs(&with(good.clone(), json!({"tier": null}))),
            "required claim mismatch",
        ),
        (
            "sub missing",
            rs(&with(good.clone(), json!({"sub": null}))),
            "user claim missing",
        ),
        (
            "sub empty",
            rs(&with(good.clone(), json!({"sub": ""}))),
            "user claim malformed",
        ),
        (
            "sub an object",
            rs(&with(good.clone(), json!({"sub": {"id": 1}}))),
            "user claim malformed",
        ),
        (
            "sub with a newline",
            rs(&with(good.clone(), json!({"sub": "a\nb"}))),
            "user claim malformed",
        ),
        (
            "roles an object",
            rs(&with(good.clone(), json!({"roles": {"admin": true}}))),
            "roles claim malformed",
        ),
        (
            "roles with a number",
            rs(&with(good.clone(), json!({"roles": ["a", 1]}))),
            "roles claim malformed",
        ),
        (
            "kid not a string",
            raw(
                &json!({"alg": "RS256", "kid": 1}),
                &good_bytes,
                Some((&k.rsa1, JAlg::RS256)),
            ),
            "malformed kid",
        ),
    ];
    // Even where HS256 is allowed next to RS256, an RSA key never serves as an
    // HMAC secret.
    let confused = raw(
        &json!({"alg": "HS256", "kid": "rsa-1"}),
        &good_bytes,
        Some((&hmac_with_public, JAlg::HS256)),
    );
    assert_eq!(
        reason(verify_jws_with_jwks(
            &confused,
            &k.set(&["rsa-1"]),
            &[Algorithm::RS256, Algorithm::HS256]
        )),
        "kid names a key of another type or alg"
    );
    for (name, token, expected) in &cases {
        assert_eq!(reason(v.verify(token).await), *expected, "{name}");
    }
    // Audit records name the configured issuer a failed token claimed, never
    // the token's own text.
    assert_eq!(v.claimed_issuer(&cases[0].1), Some("idp"));
    let evil = rs(&with(good.clone(), json!({"iss": "https://evil.test/"})));
    assert_eq!(v.claimed_issuer(&evil), None);
    assert_eq!(v.claimed_issuer("pcs_not_a_jwt"), None);
    // The weak key's kid caused the only refetch; jku/x5u were never fetched.
    assert_eq!(server.hits(), fetches + 1);
    assert_eq!(server.other_hits(), 0);
}

#[tokio::test]
async fn hs256_secret_issuer() {
    let k = keys();
    let secret = "legacy-supabase-jwt-secret-0123456789abcdef";
    let clock = clock();
    let v = verifier(
        vec![issuer(
            json!({"name": "legacy", "preset": "supabase", "project_ref": "abc",
            "hs256_secret": secret}),
        )],
        &clock,
    );
    let c = with(
        claims(),
        json!({"iss": "https://abc.supabase.co/auth/v1", "aud": "authenticated"}),
    );
    let key = EncodingKey::from_secret(secret.as_bytes());
    let id = v.verify(&sign(&key, "HS256", None, &c)).await.unwrap();
    assert_eq!(id.user, "legacy:user-1");
    assert_eq!(
        reason(v.verify(&sign(&k.rsa1, "RS256", None, &c)).await),
        "alg not allowed for this issuer"
    );
    let wrong = EncodingKey::from_secret(b"another-secret-of-sufficient-length-0123");
    assert_eq!(
        reason(v.verify(&sign(&wrong, "HS256", None, &c)).await),
        "bad signature"
    );
    assert_eq!(
        reason(v.verify(&sign(&key, "HS512", None, &c)).await),
        "alg not allowed for this issuer"
    );
}

#[tokio::test]
async fn key_rotation_new_kid_is_accepted_after_one_refetch() {
    let k = keys();
    let server = JwksServer::start(k.set(&["rsa-1"])).await;
    let clock = clock();
    let v = verifier(vec![test_issuer(&server, json!({}))], &clock);
    v.verify(&sign(&k.rsa1, "RS256", Some("rsa-1"), &claims()))
        .await
        .unwrap();
    assert_eq!(server.hits(), 1);

    // The provider rotates: rsa-2 added, then rsa-1 retired.
    server.set_keys(k.set(&["rsa-2", "rsa-1"]));
    let rotated = sign(&k.rsa2, "RS256", Some("rsa-2"), &claims());
    v.verify(&rotated).await.unwrap();
    assert_eq!(server.hits(), 2, "exactly one refetch for the new kid");
    v.verify(&rotated).await.unwrap();
    v.verify(&sign(&k.rsa1, "RS256", Some("rsa-1"), &claims()))
        .await
        .unwrap();
    assert_eq!(server.hits(), 2);

    // After the TTL the retired key is gone.
    server.set_keys(k.set(&["rsa-2"]));
    clock.advance_ms(3600 * 1000);
    let old = sign(
        &k.rsa1,
        "RS256",
        Some("rsa-1"),
        &with(claims(), json!({"exp": NOW + 7200})),
    );
    assert_eq!(reason(v.verify(&old).await), "unknown kid");
    assert_eq!(
        server.hits(),
        4,
        "the TTL refresh, then one refetch for the unknown kid"
    );
    assert_eq!(reason(v.verify(&old).await), "unknown kid");
    assert_eq!(server.hits(), 4, "remembered as absent");
}

#[tokio::test]
async fn endpoint_down_with_a_warm_cache_still_verifies() {
    let k = keys();
    let server = JwksServer::start(k.set(&["rsa-1"])).await;
    let clock = clock();
    let v = verifier(vec![test_issuer(&server, json!({}))], &clock);
    let c = with(claims(), json!({"exp": NOW + 10 * 3600}));
    let token = sign(&k.rsa1, "RS256", Some("rsa-1"), &c);
    v.verify(&token).await.unwrap();
    server.set_down(true);
    clock.advance_ms(2 * 3600 * 1000); // well past the 1 h TTL
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 2, "one failed refresh, then the stale set");
    // Within the back-off no further fetch is tried.
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 2);
    // After it, requests are answered from the stale set at once while the
    // retry runs in the background.
    clock.advance_ms(6_000);
    v.verify(&token).await.unwrap();
    server.wait_for_hits(3).await;
    // The provider comes back: the next background retry refreshes the set.
    server.set_down(false);
    clock.advance_ms(6_000);
    v.verify(&token).await.unwrap();
    server.wait_for_hits(4).await;
    v.verify(&token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.hits(), 4, "fresh again: no more fetches");
}

#[tokio::test]
async fn endpoint_down_with_a_cold_cache_is_unavailable_never_accepted() {
    let k = keys();
    let server = JwksServer::start(k.set(&["rsa-1"])).await;
    server.set_down(true);
    let clock = clock();
    let v = verifier(vec![test_issuer(&server, json!({}))], &clock);
    let token = sign(&k.rsa1, "RS256", Some("rsa-1"), &claims());
    let err = v.verify(&token).await.unwrap_err();
    assert!(matches!(err, JwtError::KeySetUnavailable(_)), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
    assert!(err.to_string().contains("503"), "{err}");
    // Back-off: no new fetch, same answer.
    assert!(matches!(
        v.verify(&token).await,
        Err(JwtError::KeySetUnavailable(_))
    ));
    assert_eq!(server.hits(), 1);
    // An invalid token is still refused as invalid, without a fetch.
    assert_eq!(
        reason(
            v.verify(&sign(
                &k.rsa1,
                "RS256",
                Some("rsa-1"),
                &with(claims(), json!({"aud": "x"}))
            ))
            .await
        ),
        "aud mismatch"
    );
    server.set_down(false);
    clock.advance_ms(5_000);
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_refetches_at_most_once_per_cooldown() {
    let k = keys();
    let server = JwksServer::start(k.set(&["rsa-1"])).await;
    let clock = clock();
    let v = verifier(vec![test_issuer(&server, json!({}))], &clock);
    v.verify(&sign(&k.rsa1, "RS256", Some("rsa-1"), &claims()))
        .await
        .unwrap();
    assert_eq!(server.hits(), 1);
    let payload = serde_json::to_vec(&claims()).unwrap();
    let forged = |i: usize| {
        format!(
            "{}c2lnbmF0dXJl",
            raw(
                &json!({"alg": "RS256", "kid": format!("random-{i}")}),
                &payload,
                None
            )
        )
    };

    // 1,000 random kids, half sequential, half concurrent.
    for i in 0..500 {
        assert_eq!(reason(v.verify(&forged(i)).await), "unknown kid");
    }
    let concurrent = (500..1000).map(|i| {
        let v = v.clone();
        let t = forged(i);
        async move { v.verify(&t).await }
    });
    for r in futures_util::future::join_all(concurrent).await {
        assert_eq!(reason(r), "unknown kid");
    }
    assert_eq!(server.hits(), 2, "one refetch in the cooldown window");

    // A real rotation during the cooldown waits for the window to pass…
    server.set_keys(k.set(&["rsa-1", "rsa-2"]));
    let rotated = sign(&k.rsa2, "RS256", Some("rsa-2"), &claims());
    assert_eq!(reason(v.verify(&rotated).await), "unknown kid");
    assert_eq!(server.hits(), 2);
    // …and is then picked up, even with the flood going on.
    clock.advance_ms(30_000);
    for i in 1000..2000 {
        let _ = v.verify(&forged(i)).await;
    }
    assert_eq!(server.hits(), 3, "one more refetch in the next window");
    v.verify(&rotated).await.unwrap();
    assert_eq!(server.hits(), 3);

    // A kid proven absent by its own refetch is remembered (negative cache):
    // repeating it after the cooldown costs no fetch.
    clock.advance_ms(30_000);
    assert_eq!(reason(v.verify(&forged(5000)).await), "unknown kid");
    assert_eq!(server.hits(), 4);
    clock.advance_ms(30_000);
    assert_eq!(reason(v.verify(&forged(5000)).await), "unknown kid");
    assert_eq!(server.hits(), 4);
}

#[tokio::test]
async fn concurrent_cold_misses_fetch_once() {
    let k = keys();
    let server = JwksServer::start(k.set(&["rsa-1"])).await;
    server.set_delay_ms(200);
    let clock = clock();
    let v = verifier(vec![test_issuer(&server, json!({}))], &clock);
    let token = sign(&k.rsa1, "RS256", Some("rsa-1"), &claims());
    let all = (0..50).map(|_| {
        let v = v.clone();
        let t = token.clone();
        async move { v.verify(&t).await }
    });
    for r in futures_util::future::join_all(all).await {
        r.unwrap();
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn cache_control_max_age_sets_the_ttl_within_bounds() {
    let k = keys();
    let server = JwksServer::start(k.set(&["rsa-1"])).await;
    server.set_cache_control("public, max-age=600, must-revalidate");
    let clock = clock();
    let v = verifier(vec![test_issuer(&server, json!({}))], &clock);
    let token = sign(
        &k.rsa1,
        "RS256",
        Some("rsa-1"),
        &with(claims(), json!({"exp": NOW + 100_000})),
    );
    v.verify(&token).await.unwrap();
    clock.advance_ms(599_000);
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 1);
    clock.advance_ms(2_000);
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 2);
    // max-age=1 is raised to the 5-minute floor.
    server.set_cache_control("max-age=1");
    clock.advance_ms(601_000);
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 3);
    clock.advance_ms(299_000);
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 3);
    clock.advance_ms(2_000);
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 4);
}

#[tokio::test]
async fn clock_skew_at_the_leeway_boundary() {
    let k = keys();
    let server = JwksServer::start(k.set(&["rsa-1"])).await;
    let clock = clock();
    let v = verifier(
        vec![test_issuer(&server, json!({"leeway_seconds": 30}))],
        &clock,
    );
    let exp = NOW + 60;
    let token = sign(
        &k.rsa1,
        "RS256",
        Some("rsa-1"),
        &with(claims(), json!({"exp": exp})),
    );
    v.verify(&token).await.unwrap();
    clock.set_ms((exp + 30) * 1000 - 1);
    v.verify(&token).await.unwrap();
    clock.set_ms((exp + 30) * 1000);
    assert_eq!(reason(v.verify(&token).await), "token expired");

    // nbf: usable from nbf - leeway.
    let nbf = NOW + 600;
    let token = sign(
        &k.rsa1,
        "RS256",
        Some("rsa-1"),
        &with(
            claims(),
            json!({"nbf": nbf, "iat": null, "exp": NOW + 3600}),
        ),
    );
    clock.set_ms((nbf - 30) * 1000 - 1);
    assert_eq!(reason(v.verify(&token).await), "token not yet valid (nbf)");
    clock.set_ms((nbf - 30) * 1000);
    v.verify(&token).await.unwrap();

    // iat: at most leeway in the future.
    let iat = NOW + 600;
    let token = sign(
        &k.rsa1,
        "RS256",
        Some("rsa-1"),
        &with(claims(), json!({"iat": iat, "exp": NOW + 3600})),
    );
    clock.set_ms((iat - 30) * 1000 - 1);
    assert_eq!(reason(v.verify(&token).await), "iat in the future");
    clock.set_ms((iat - 30) * 1000);
    v.verify(&token).await.unwrap();

    // Fractional NumericDates are honoured to the millisecond.
    let token = sign(
        &k.rsa1,
        "RS256",
        Some("rsa-1"),
        &with(claims(), json!({"exp": NOW as f64 + 0.5, "iat": null})),
    );
    let v0 = verifier(
        vec![test_issuer(&server, json!({"leeway_seconds": 0}))],
        &clock,
    );
    clock.set_ms(NOW_MS + 499);
    v0.verify(&token).await.unwrap();
    clock.set_ms(NOW_MS + 500);
    assert_eq!(reason(v0.verify(&token).await), "token expired");
    assert_eq!(clock.now_ms(), NOW_MS + 500);
}

#[tokio::test]
async fn oidc_discovery_uses_jwks_uri_and_checks_the_issuer() {
    let k = keys();
    let server = JwksServer::start(k.set(&["rsa-1"])).await;
    let clock = clock();
    let iss = issuer(json!({"name": "oidc", "issuer": ISS, "audiences": [AUD],
        "discovery_url": server.url("/.well-known/openid-configuration")}));
    let v = verifier(vec![iss.clone()], &clock);
    let token = sign(&k.rsa1, "RS256", Some("rsa-1"), &claims());
    v.verify(&token).await.unwrap();
    assert_eq!((server.other_hits(), server.hits()), (1, 1));

    // A discovery document naming another issuer is not trusted.
    server.set_discovery_issuer("https://evil.test/");
    let v = verifier(vec![iss], &clock);
    let err = v.verify(&token).await.unwrap_err();
    assert!(
        matches!(&err, JwtError::KeySetUnavailable(m) if m.contains("another issuer")),
        "{err}"
    );
    assert_eq!(server.hits(), 1, "the key set was not fetched");
}

#[tokio::test]
async fn key_set_fetches_are_bounded() {
    let k = keys();
    let server = JwksServer::start(k.set(&["rsa-1"])).await;
    let clock = clock();
    let token = sign(&k.rsa1, "RS256", Some("rsa-1"), &claims());
    let at = |path: &str| {
        let iss = test_issuer(&server, json!({"jwks_url": server.url(path)}));
        JwtVerifier::with_settings(
            vec![iss],
            clock.clone(),
            CacheSettings {
                fetch_timeout: Duration::from_millis(500),
                ..CacheSettings::default()
            },
        )
    };
    // Same-origin redirects are followed; redirects to another host are not.
    at("/redirect-same").verify(&token).await.unwrap();
    let err = at("/redirect-other").verify(&token).await.unwrap_err();
    assert!(
        matches!(&err, JwtError::KeySetUnavailable(m) if m.contains("302")),
        "{err}"
    );
    // Over 1 MiB.
    let err = at("/huge").verify(&token).await.unwrap_err();
    assert!(
        matches!(&err, JwtError::KeySetUnavailable(m) if m.contains("bytes")),
        "{err}"
    );
    // Too slow.
    let started = std::time::Instant::now();
    let err = at("/slow").verify(&token).await.unwrap_err();
    assert!(matches!(err, JwtError::KeySetUnavailable(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Not a key set.
    let err = at("/.well-known/openid-configuration")
        .verify(&token)
        .await
        .unwrap_err();
    assert!(matches!(err, JwtError::KeySetUnavailable(_)), "{err}");
    // A set whose only key is unusable (1024-bit RSA) counts as a failure.
    server.set_keys(k.set(&["rsa-weak"]));
    let err = at("/jwks").verify(&token).await.unwrap_err();
    assert!(
        matches!(&err, JwtError::KeySetUnavailable(m) if m.contains("no usable")),
        "{err}"
    );
}

#[tokio::test]
async fn prefetch_warms_every_issuer() {
    let k = keys();
    let a = JwksServer::start(k.set(&["rsa-1"])).await;
    let b = JwksServer::start(k.set(&["ec-1"])).await;
    b.set_down(true);
    let clock = clock();
    let v = verifier(
        vec![
            test_issuer(&a, json!({"name": "a", "issuer": "https://a.test/"})),
            test_issuer(&b, json!({"name": "b", "issuer": "https://b.test/"})),
        ],
        &clock,
    );
    v.prefetch().await;
    assert_eq!((a.hits(), b.hits()), (1, 1));
    let c = with(claims(), json!({"iss": "https://a.test/"}));
    v.verify(&sign(&k.rsa1, "RS256", Some("rsa-1"), &c))
        .await
        .unwrap();
    assert_eq!(a.hits(), 1);
}

#[test]
fn looks_like_jwt_routes_bearer_credentials() {
    let k = keys();
    assert!(JwtVerifier::looks_like_jwt(&sign(
        &k.rsa1,
        "RS256",
        Some("rsa-1"),
        &claims()
    )));
    assert!(JwtVerifier::looks_like_jwt(&raw(
        &json!({"alg": "none"}),
        b"{}",
        None
    )));
    for not in [
        "pcs_abc123_def456",
        "sk-proj-abcdef",
        "",
        "a.b.c",
        "eyJhbGciOiJSUzI1NiJ9.e30",
        "eyJ0eXAiOiJKV1QifQ.e30.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln.c2ln.c2ln",
    ] {
        assert!(!JwtVerifier::looks_like_jwt(not), "{not}");
    }
}

#[tokio::test]
async fn app_check_tokens() {
    let k = keys();
    let server = JwksServer::start(k.set(&["rsa-1"])).await;
    let clock = clock();
    let file: AppCheckFile =
        serde_json::from_value(json!({"project_number": "123456789012"})).unwrap();
    let cfg = file.validate("auth.app_check").unwrap();
    assert_eq!(
        cfg.jwks_url,
        "https://firebaseappcheck.googleapis.com/v1/jwks"
    );
    assert!(cfg.required);
    assert_eq!(
        cfg.issuer(),
        "https://firebaseappcheck.googleapis.com/123456789012"
    );
    assert_eq!(cfg.audience(), "projects/123456789012");
    for bad in [
        json!({"project_number": "my-project"}),
        json!({"project_number": "1", "jwks_url": "http://example.com/jwks"}),
    ] {
        let f: AppCheckFile = serde_json::from_value(bad).unwrap();
        assert!(f.validate("auth.app_check").is_err());
    }
    assert!(
        serde_json::from_value::<AppCheckFile>(json!({"project_number": "1", "x": 1})).is_err()
    );

    let f: AppCheckFile = serde_json::from_value(json!({
        "project_number": "123456789012", "jwks_url": server.jwks_url(), "required": false
    }))
    .unwrap();
    let verifier = AppCheckVerifier::new(f.validate("auth.app_check").unwrap(), clock.clone());
    assert!(!verifier.required());
    let c = json!({
        "iss": "https://firebaseappcheck.googleapis.com/123456789012",
        "aud": ["projects/123456789012", "projects/my-project"],
        "sub": "1:123456789012:android:abcdef",
        "iat": NOW, "exp": NOW + 3600,
    });
    let ok = verifier
        .verify(&sign(&k.rsa1, "RS256", Some("rsa-1"), &c))
        .await
        .unwrap();
    assert_eq!(ok.app_id, "1:123456789012:android:abcdef");
    for (change, expected) in [
        (json!({"aud": ["projects/999"]}), "aud mismatch"),
        (
            json!({"iss": "https://firebaseappcheck.googleapis.com/999"}),
            "unknown issuer",
        ),
        (json!({"exp": NOW - 3600}), "token expired"),
    ] {
        let t = sign(&k.rsa1, "RS256", Some("rsa-1"), &with(c.clone(), change));
        assert_eq!(reason(verifier.verify(&t).await), expected);
    }
    assert_eq!(
        reason(
            verifier
                .verify(&sign(&k.ec, "ES256", Some("ec-1"), &c))
                .await
        ),
        "alg not allowed for this issuer"
    );
}

// ------------------------------------------------------------------ Wycheproof

/// Valid vectors the verifier deliberately refuses, with the reason. Invalid
/// vectors are never skipped.
const WYCHEPROOF_REFUSED_VALID: &[(u64, &str)] = &[
    (
        346,
        "key's alg is PS256, token is PS384: a JWK's alg binds the key (RFC 7517 §4.4)",
    ),
    (
        350,
        "key's alg is PS256, token is PS384: a JWK's alg binds the key (RFC 7517 §4.4)",
    ),
    (347, "ES512 on P-521 is not supported"),
    (351, "ES512 on P-521 is not supported"),
    (
        372,
        "'?' in the header segment is not base64url: segments must be canonical base64url",
    ),
    (
        373,
        "'?' in the payload segment is not base64url: segments must be canonical base64url",
    ),
];

/// Vectors labelled `invalid` that are byte-for-byte the same token as a
/// `valid` vector of the same group (same key): no verifier can satisfy both
/// labels. The padding their comments describe is missing from the data; the
/// test proves the identity, accepts them like their twin, and checks the
/// intended mutation separately ([`wycheproof_padding_cases_as_intended`]).
const WYCHEPROOF_CONTRADICTORY: &[(u64, u64)] = &[(367, 357), (370, 357)];

/// Vendored from `../shared/vectors/wycheproof/` (see the fixture's README).
fn wycheproof_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wycheproof/json_web_signature_test.json")
}

#[test]
fn wycheproof_json_web_signature_vectors() {
    let path = wycheproof_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the public test vectors live in ../shared/vectors/)",
            path.display()
        )
    });
    let file: Value = serde_json::from_str(&text).unwrap();
    let mut seen = 0u64;
    let mut accepted = 0u64;
    let mut refused_invalid = 0u64;
    let mut refused_valid = Vec::new();
    let mut contradictory = Vec::new();
    let mut failures = Vec::new();
    let mut tokens = std::collections::HashMap::new();
    for group in file["testGroups"].as_array().unwrap() {
        for t in group["tests"].as_array().unwrap() {
            tokens.insert(
                t["tcId"].as_u64().unwrap(),
                (
                    t["jws"].to_string(),
                    t["result"].clone(),
                    group["comment"].clone(),
                ),
            );
        }
    }
    for (invalid, valid) in WYCHEPROOF_CONTRADICTORY {
        let (a, b) = (&tokens[invalid], &tokens[valid]);
        assert_eq!(
            (&a.0, &a.2),
            (&b.0, &b.2),
            "tc {invalid} is no longer identical to tc {valid}: drop it from the list"
        );
        assert_eq!(
            (a.1.as_str(), b.1.as_str()),
            (Some("invalid"), Some("valid"))
        );
    }
    for group in file["testGroups"].as_array().unwrap() {
        let key = group
            .get("public")
            .or_else(|| group.get("private"))
            .unwrap();
        let jwks = json!({ "keys": [key] });
        // The algorithm(s) the group names: the key's alg, else its family's.
        let algorithms: Vec<Algorithm> = match key.get("alg").and_then(Value::as_str) {
            Some(name) => name.parse().into_iter().collect(),
            None => {
                let family = match key["kty"].as_str() {
                    Some("RSA") => "RS PS",
                    Some("EC") => "ES",
                    Some("OKP") => "EdDSA",
                    Some("oct") => "HS",
                    _ => "?",
                };
                Algorithm::ALL
                    .into_iter()
                    .filter(|a| family.split(' ').any(|p| a.name().starts_with(p)))
                    .collect()
            }
        };
        for t in group["tests"].as_array().unwrap() {
            seen += 1;
            let id = t["tcId"].as_u64().unwrap();
            let jws = t["jws"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| t["jws"].to_string());
            let result = verify_jws_with_jwks(&jws, &jwks, &algorithms);
            match (t["result"].as_str().unwrap(), &result) {
                ("valid", Ok(_)) => accepted += 1,
                ("valid", Err(e)) => {
                    if WYCHEPROOF_REFUSED_VALID.iter().any(|(s, _)| *s == id) {
                        refused_valid.push(id);
                    } else {
                        failures.push(format!("tc {id} valid but refused: {e} ({})", t["comment"]));
                    }
                }
                ("invalid", Err(JwtError::Invalid(_))) => refused_invalid += 1,
                ("invalid", Ok(_)) if WYCHEPROOF_CONTRADICTORY.iter().any(|(i, _)| *i == id) => {
                    contradictory.push(id);
                }
                (r, _) => failures.push(format!("tc {id} {r}: got {result:?} ({})", t["comment"])),
            }
            if let Ok(payload) = &result {
                // The payload returned is the decoded middle segment.
                let middle = jws.split('.').nth(1).unwrap();
                assert_eq!(b64(payload), middle, "tc {id}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(seen, file["numberOfTests"].as_u64().unwrap());
    refused_valid.sort_unstable();
    let mut listed: Vec<u64> = WYCHEPROOF_REFUSED_VALID.iter().map(|(id, _)| *id).collect();
    listed.sort_unstable();
    assert_eq!(refused_valid, listed, "the skip list must be exact");
    assert_eq!(contradictory.len(), WYCHEPROOF_CONTRADICTORY.len());
    assert!(accepted >= 30, "{accepted} valid vectors accepted");
    assert!(
        refused_invalid >= 300,
        "{refused_invalid} invalid vectors refused"
    );
}

/// What Wycheproof 367 and 370 meant to test (their data lost the padding):
/// base64 padding in the MAC or the payload is refused.
#[test]
fn wycheproof_padding_cases_as_intended() {
    let jwks = json!({"keys": [{"kty": "oct", "kid": "hs256-key", "use": "sig", "alg": "HS256",
        "k": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]});
    let valid = "eyJraWQiOiJoczI1Ni1rZXkiLCJhbGciOiJIUzI1NiJ9.VGVzdA.c1LROH7eNQwUT8KMVEO52VC3WZ9e_AnDWbZ7aMmowV8";
    assert_eq!(
        verify_jws_with_jwks(valid, &jwks, &[Algorithm::HS256]).unwrap(),
        b"Test"
    );
    for bad in [
        format!("{valid}="),
        valid.replace(".VGVzdA.", ".VGVzdA==."),
        valid.replace(".VGVzdA.", ".VGVzdA%3D%3D."),
        valid.replacen("eyJ", "eyJ=", 1),
    ] {
        assert!(
            matches!(
                verify_jws_with_jwks(&bad, &jwks, &[Algorithm::HS256]),
                Err(JwtError::Invalid(_))
            ),
            "{bad}"
        );
    }
}
