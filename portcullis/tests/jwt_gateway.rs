//! JWT identities through the real gateway: a local JWKS server, tokens signed
//! with the test fixtures, first-seen user records, disabling users, refusals
//! that forward nothing, a cold key-set cache with the provider down, Firebase
//! App Check, and the official `openai` Python SDK using a JWT as its api_key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::path::Path;

use common::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

const AUD: &str = "authenticated";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name),
    )
    .unwrap()
}

/// Serves the public half of `rsa1.pem` (kid `rsa-1`) as a JWKS on 127.0.0.1:0.
async fn jwks_server() -> (String, tokio::task::JoinHandle<()>) {
    let all: Value = serde_json::from_slice(&fixture("public_jwks.json")).unwrap();
    let set = json!({"keys": all["keys"].as_array().unwrap().iter().filter(|k| k["kid"] == "rsa-1").cloned().collect::<Vec<_>>()});
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || async move { axum::Json(set.clone()) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(key_file: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(&fixture(key_file)).unwrap(),
    )
    .unwrap()
}

fn user_token(issuer: &str, sub: &str) -> String {
    sign(
        "rsa1.pem",
        "rsa-1",
        &json!({"iss": issuer, "aud": AUD, "sub": sub, "exp": now() + 600, "iat": now(),
                "app_metadata": {"team": "mobile", "roles": ["pro"]}}),
    )
}

const ISSUER: &str = "https://idp.example.test/auth/v1";

fn jwt_yaml(jwks: &str, extra: &str) -> String {
    format!(
        "auth:\n  lockout: {{enabled: false}}\n  jwt:\n    - name: supa\n      issuer: {ISSUER}\n      jwks_url: {jwks}\n      audiences: [{AUD}]\n      algorithms: [RS256]\n      team_claim: app_metadata.team\n      roles_claim: app_metadata.roles\n{extra}rules:\n  - subjects: [\"issuer:supa\"]\n    models: [\"openai/*\"]\n"
    )
}

async fn users(h: &Harness) -> Vec<Value> {
    let v: Value = h
        .http
        .get(format!("{}/admin/users", h.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_jwt_user_calls_the_model_and_becomes_a_user_record() {
    let (jwks, _srv) = jwks_server().await;
    let h = Harness::start_with(Opts {
        top_extra: jwt_yaml(&jwks, ""),
        ..Default::default()
    })
    .await;
    let token = user_token(ISSUER, "8f1c");
    let resp = h.chat(&token, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let rec = h.usage_record(&rid).await;
    assert_eq!(rec.user.as_deref(), Some("supa:8f1c"));
    assert_eq!(rec.team.as_deref(), Some("mobile"));
    assert_eq!(rec.key_id, None);
    // The provider sees its own key, never the token.
    let seen = h.mock.requests();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    assert!(!format!("{seen:?}").contains(&token));
    let list = users(&h).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], "supa:8f1c");
    assert_eq!(list[0]["roles"], json!(["pro"]));
    assert_eq!(list[0]["disabled"], false);
    h.stop().await;
}

#[tokio::test]
async fn a_disabled_user_is_refused_even_with_a_valid_token() {
    let (jwks, _srv) = jwks_server().await;
    let h = Harness::start_with(Opts {
        top_extra: jwt_yaml(&jwks, ""),
        ..Default::default()
    })
    .await;
    let token = user_token(ISSUER, "u2");
    assert_eq!(h.chat(&token, chat_body("gpt-4o-mini")).await.status(), 200);
    h.mock.clear();
    let resp = h
        .http
        .patch(format!("{}/admin/users/supa:u2", h.url))
        .bearer_auth(MASTER)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_error(
        h.chat(&token, chat_body("gpt-4o-mini")).await,
        403,
        "user_disabled",
    )
    .await;
    assert_eq!(h.mock.request_count(), 0);
    h.http
        .patch(format!("{}/admin/users/supa:u2", h.url))
        .bearer_auth(MASTER)
        .json(&json!({"disabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(h.chat(&token, chat_body("gpt-4o-mini")).await.status(), 200);
    let resp = h
        .http
        .get(format!("{}/admin/users/nobody", h.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "not_found").await;
    h.stop().await;
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_401_and_forward_nothing() {
    let (jwks, _srv) = jwks_server().await;
    let h = Harness::start_with(Opts {
        top_extra: jwt_yaml(&jwks, ""),
        ..Default::default()
    })
    .await;
    let base = json!({"iss": ISSUER, "aud": AUD, "sub": "x", "exp": now() + 600});
    let mut expired = base.clone();
    expired["exp"] = json!(now() - 3600);
    let mut wrong_aud = base.clone();
    wrong_aud["aud"] = json!("someone-else");
    let mut string_exp = base.clone();
    string_exp["exp"] = json!((now() + 600).to_string());
    let forged = sign("rsa2.pem", "rsa-1", &base); // signed by a key the issuer does not hold
    let none = {
        let t = sign("rsa1.pem", "rsa-1", &base);
        let parts: Vec<&str> = t.split('.').collect();
        use base64::Engine as _;
        let hdr = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT"}"#);
        format!("{hdr}.{}.", parts[1])
    };
    for token in [
        forged,
        none,
        sign("rsa1.pem", "rsa-1", &expired),
        sign("rsa1.pem", "rsa-1", &wrong_aud),
        sign("rsa1.pem", "rsa-1", &string_exp),
        user_token("https://other-issuer.test/", "x"),
    ] {
        assert_error(
            h.chat(&token, chat_body("gpt-4o-mini")).await,
            401,
            "invalid_api_key",
        )
        .await;
    }
    assert_eq!(h.mock.request_count(), 0, "nothing forwarded");
    // Nothing charged: the ledger has no rows, and the audit log names the issuer.
    let usage: Value = h
        .http
        .get(format!("{}/admin/usage", h.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["data"], json!([]));
    let mut audit = Value::Null;
    for _ in 0..100 {
        audit = h
            .http
            .get(format!("{}/admin/audit", h.url))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if audit["data"].as_array().unwrap().len() >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let events = audit["data"].as_array().unwrap();
    assert_eq!(events.len(), 6, "{audit}");
    assert!(
        events.iter().all(|e| e["credential_kind"] == "jwt"),
        "{audit}"
    );
    assert!(events.iter().any(|e| e["issuer"] == "supa"), "{audit}");
    h.stop().await;
}

#[tokio::test]
async fn a_cold_key_set_with_the_provider_down_is_503_never_200() {
    // Nothing listens on this port.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/jwks.json", l.local_addr().unwrap())
    };
    let h = Harness::start_with(Opts {
        top_extra: jwt_yaml(&dead, ""),
        ..Default::default()
    })
    .await;
    let resp = h
        .chat(&user_token(ISSUER, "x"), chat_body("gpt-4o-mini"))
        .await;
    assert!(resp.headers().contains_key("retry-after"));
    let body = assert_error(resp, 503, "identity_provider_unavailable").await;
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "the provider URL stays in the log: {body}"
    );
    assert_eq!(h.mock.request_count(), 0);
    h.stop().await;
}

fn app_check_token(project: &str) -> String {
    sign(
        "rsa1.pem",
        "rsa-1",
        &json!({"iss": format!("https://firebaseappcheck.googleapis.com/{project}"), "aud": [format!("projects/{project}")],
                "sub": "1:123:android:abc", "exp": now() + 600, "iat": now()}),
    )
}

#[tokio::test]
async fn app_check_required_and_optional() {
    let (jwks, _srv) = jwks_server().await;
    let required = format!("  app_check:\n    project_number: \"123456\"\n    jwks_url: {jwks}\n");
    let h = Harness::start_with(Opts {
        top_extra: jwt_yaml(&jwks, &required),
        ..Default::default()
    })
    .await;
    let token = user_token(ISSUER, "a");
    assert_error(
        h.chat(&token, chat_body("gpt-4o-mini")).await,
        401,
        "invalid_api_key",
    )
    .await;
    let bad = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&token)
        .header("x-firebase-appcheck", app_check_token("999"))
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_error(bad, 401, "invalid_api_key").await;
    assert_eq!(h.mock.request_count(), 0);
    let good = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&token)
        .header("x-firebase-appcheck", app_check_token("123456"))
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    // The App Check token is not forwarded.
    assert!(h.mock.requests()[0].header("x-firebase-appcheck").is_none());
    h.stop().await;

    let optional = format!(
        "  app_check:\n    project_number: \"123456\"\n    jwks_url: {jwks}\n    required: false\n"
    );
    let h = Harness::start_with(Opts {
        top_extra: jwt_yaml(&jwks, &optional),
        ..Default::default()
    })
    .await;
    assert_eq!(h.chat(&token, chat_body("gpt-4o-mini")).await.status(), 200);
    assert_eq!(h.gw.state.authn.app_check_failures(), 1, "counted");
    h.stop().await;
}

#[tokio::test]
async fn the_openai_python_sdk_uses_a_jwt_as_its_api_key() {
    let check = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the `openai` Python package is missing: run scripts/test, which installs it ({})",
        String::from_utf8_lossy(&check.stderr)
    );
    let (jwks, _srv) = jwks_server().await;
    let h = Harness::start_with(Opts {
        top_extra: jwt_yaml(&jwks, ""),
        ..Default::default()
    })
    .await;
    let token = user_token(ISSUER, "sdk-user");
    let script = r#"
import os, openai
from openai import OpenAI
c = OpenAI(base_url=os.environ["GW"] + "/v1", api_key=os.environ["TOKEN"], max_retries=0)
r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
assert r.choices[0].message.content, r
chunks = list(c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True))
assert len(chunks) > 2
try:
    OpenAI(base_url=os.environ["GW"] + "/v1", api_key=os.environ["TOKEN"][:-4] + "AAAA", max_retries=0).models.list()
    raise SystemExit("a forged token was accepted")
except openai.AuthenticationError:
    pass
print("ok")
"#;
    let gw = h.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", script])
            .env("GW", gw)
            .env("TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let list = users(&h).await;
    assert_eq!(list[0]["id"], "supa:sdk-user");
    h.stop().await;
}

#[tokio::test]
async fn without_rules_a_jwt_user_gets_nothing() {
    let (jwks, _srv) = jwks_server().await;
    let yaml = format!(
        "auth:\n  lockout: {{enabled: false}}\n  jwt:\n    - name: supa\n      issuer: {ISSUER}\n      jwks_url: {jwks}\n      audiences: [{AUD}]\n      algorithms: [RS256]\n"
    );
    let h = Harness::start_with(Opts {
        top_extra: yaml,
        ..Default::default()
    })
    .await;
    let token = user_token(ISSUER, "nobody");
    assert_error(
        h.chat(&token, chat_body("gpt-4o-mini")).await,
        403,
        "model_not_allowed",
    )
    .await;
    let v: Value = h
        .http
        .get(format!("{}/v1/models", h.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"], json!([]));
    assert_eq!(h.mock.request_count(), 0);
    // A gateway key is still governed by its own lists.
    assert_eq!(
        h.chat(&h.key().await, chat_body("gpt-4o-mini"))
            .await
            .status(),
        200
    );
    h.stop().await;
}
