//! Authentication, black-box (issue 2 §3, §4): which credentials open the
//! gateway, which are refused with 401 `invalid_api_key`, and that a refused
//! request never reaches the provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use portcullis::authn::keys;
use serde_json::{Value, json};

/// A point in time for the manual clock (2023-11-14T22:13:20Z).
const T0: i64 = 1_700_000_000_000;

/// POST /v1/chat/completions with the given extra headers and no default auth.
async fn chat_with(h: &Harness, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .json(&chat_body("gpt-4o-mini"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.send().await.unwrap()
}

/// Asserts a 401 `invalid_api_key` and that the provider saw nothing new.
async fn assert_refused(h: &Harness, resp: reqwest::Response, before: usize) -> Value {
    let v = assert_error(resp, 401, "invalid_api_key").await;
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    assert_eq!(
        h.mock.request_count(),
        before,
        "a refused request reached the provider"
    );
    v
}

/// Asserts the request went through (200) and reached the provider once.
async fn assert_ok(h: &Harness, resp: reqwest::Response, before: usize) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "expected success, got {status}: {text}");
    assert_eq!(h.mock.request_count(), before + 1);
}

/// A key in the gateway's format with the given public id and a fresh secret,
/// with a correct checksum (CRC32 in 6 base62 digits, as documented in
/// `authn::keys`).
fn forge_key(id: &str) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = format!("pcs_{id}_{}", keys::random_base62(22));
    let mut v = u64::from(crc32fast::hash(body.as_bytes()));
    let mut crc = [b'0'; 6];
    for slot in crc.iter_mut().rev() {
        *slot = ALPHABET[usize::try_from(v % 62).unwrap()];
        v /= 62;
    }
    let key = format!("{body}{}", String::from_utf8(crc.to_vec()).unwrap());
    assert_eq!(keys::parse(&key), Ok(id), "forged key must be well-formed");
    key
}

async fn admin_delete(h: &Harness, id: &str) -> Value {
    let resp = h
        .http
        .delete(format!("{}/admin/keys/{id}", h.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn admin_get(h: &Harness, id: &str) -> Value {
    let resp = h
        .http
        .get(format!("{}/admin/keys/{id}", h.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn admin_rotate(h: &Harness, id: &str, body: Value) -> Value {
    let resp = h
        .http
        .post(format!("{}/admin/keys/{id}/rotate", h.url))
        .bearer_auth(MASTER)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "rotate failed");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn missing_credential_is_401_with_www_authenticate() {
    let h = Harness::start().await;
    let _ = h.key().await;
    let resp = chat_with(&h, &[]).await;
    let v = assert_refused(&h, resp, 0).await;
    assert!(v["error"]["message"].as_str().unwrap().contains("API key"));
    // Empty credentials count as none.
    for headers in [
        &[("authorization", "Bearer ")][..],
        &[("authorization", "Bearer")][..],
        &[("x-api-key", "")][..],
    ] {
        let resp = chat_with(&h, headers).await;
        assert_refused(&h, resp, 0).await;
    }
    // GET routes answered by the gateway itself are covered too.
    let resp = h
        .http
        .get(format!("{}/v1/models", h.url))
        .send()
        .await
        .unwrap();
    assert_refused(&h, resp, 0).await;
    h.stop().await;
}

#[tokio::test]
async fn malformed_keys_are_401() {
    let h = Harness::start().await;
    let good = h.key().await;
    let mut wrong_prefix = good.clone();
    wrong_prefix.replace_range(0..4, "pcx_");
    let mut bad_char = good.clone();
    bad_char.replace_range(20..21, "-");
    let candidates = [
        "sk-abc".to_owned(),
        "pcs_".to_owned(),
        good[..good.len() - 1].to_owned(),
        format!("{good}0"),
        wrong_prefix,
        bad_char,
        good.to_uppercase(),
        // The master key is never a client key.
        MASTER.to_owned(),
    ];
    for bad in &candidates {
        let resp = h.chat(bad, chat_body("gpt-4o-mini")).await;
        assert_refused(&h, resp, 0).await;
    }
    // The genuine key works, so the refusals above are about the key.
    let resp = h.chat(&good, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, 0).await;
    h.stop().await;
}

#[tokio::test]
async fn bad_checksum_is_401() {
    let h = Harness::start().await;
    let good = h.key().await;
    // Change one character of the secret part: the checksum no longer matches.
    let i = "pcs_".len() + 12 + 1 + 5;
    let mut bytes = good.clone().into_bytes();
    bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(bytes).unwrap();
    assert_eq!(typo.len(), good.len());
    assert_eq!(keys::parse(&typo), Err(keys::KeyFormatError::Checksum));
    let resp = h.chat(&typo, chat_body("gpt-4o-mini")).await;
    assert_refused(&h, resp, 0).await;
    // Change the checksum itself.
    let mut bytes = good.clone().into_bytes();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
    let resp = h
        .chat(&String::from_utf8(bytes).unwrap(), chat_body("gpt-4o-mini"))
        .await;
    assert_refused(&h, resp, 0).await;
    let resp = h.chat(&good, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, 0).await;
    h.stop().await;
}

#[tokio::test]
async fn unknown_well_formed_key_is_401() {
    let h = Harness::start().await;
    let _ = h.key().await;
    let (id, unknown) = keys::generate();
    assert_eq!(keys::parse(unknown.expose()), Ok(id.as_str()));
    let resp = h.chat(unknown.expose(), chat_body("gpt-4o-mini")).await;
    assert_refused(&h, resp, 0).await;
    // Asking twice (negative cache) still refuses.
    let resp = h.chat(unknown.expose(), chat_body("gpt-4o-mini")).await;
    assert_refused(&h, resp, 0).await;
    h.stop().await;
}

#[tokio::test]
async fn known_id_with_wrong_secret_is_401() {
    // The public id is shown in listings; knowing it must not be enough.
    let h = Harness::start().await;
    let (id, good) = h.create_key(json!({"name": "victim"})).await;
    let resp = h.chat(&good, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, 0).await; // the record is now cached
    let forged = forge_key(&id);
    assert_ne!(forged, good);
    let resp = h.chat(&forged, chat_body("gpt-4o-mini")).await;
    assert_refused(&h, resp, 1).await;
    h.stop().await;
}

#[tokio::test]
async fn revoked_key_is_refused_on_the_very_next_request() {
    let h = Harness::start().await;
    let (id, key) = h.create_key(json!({"name": "soon revoked"})).await;
    // Use it first so it sits in the authenticator's cache.
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, 0).await;
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, 1).await;

    let v = admin_delete(&h, &id).await;
    assert_eq!(v["status"], "revoked", "{v}");
    assert!(v["revoked_at"].is_string(), "{v}");

    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_refused(&h, resp, 2).await;
    // Every header, not only Authorization.
    let resp = chat_with(&h, &[("x-api-key", &key)]).await;
    assert_refused(&h, resp, 2).await;
    // Revoking again is harmless and does not bring it back.
    let v = admin_delete(&h, &id).await;
    assert_eq!(v["status"], "revoked");
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_refused(&h, resp, 2).await;
    // Other keys are unaffected.
    let other = h.key().await;
    let resp = h.chat(&other, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, 2).await;
    h.stop().await;
}

#[tokio::test]
async fn key_with_expiry_in_the_past_is_401() {
    let h = Harness::start().await;
    for past in ["2020-01-01T00:00:00Z", "1577836800"] {
        let (id, key) = h.create_key(json!({"expires_at": past})).await;
        let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
        assert_refused(&h, resp, 0).await;
        let v = admin_get(&h, &id).await;
        assert_eq!(v["status"], "expired", "{v}");
        assert_eq!(v["expires_at"], "2020-01-01T00:00:00Z", "{v}");
    }
    // A future expiry works.
    let (_, key) = h
        .create_key(json!({"expires_at": "2999-01-01T00:00:00Z"}))
        .await;
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, 0).await;
    h.stop().await;
}

#[tokio::test]
async fn key_is_refused_once_the_clock_passes_its_expiry() {
    let h = Harness::start_with(Opts {
        manual_clock: Some(T0),
        ..Opts::default()
    })
    .await;
    let clock = h.clock.clone().unwrap();
    let expiry_secs = T0 / 1000 + 60;
    let (id, key) = h
        .create_key(json!({"expires_at": expiry_secs.to_string()}))
        .await;
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, 0).await;
    clock.advance_ms(59_999);
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, 1).await;
    assert_eq!(admin_get(&h, &id).await["status"], "active");
    // At the expiry instant the key is no longer valid.
    clock.advance_ms(1);
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_refused(&h, resp, 2).await;
    assert_eq!(admin_get(&h, &id).await["status"], "expired");
    clock.advance_ms(3_600_000);
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_refused(&h, resp, 2).await;
    h.stop().await;
}

#[tokio::test]
async fn rotation_keeps_the_old_key_for_the_grace_period_only() {
    let h = Harness::start_with(Opts {
        manual_clock: Some(T0),
        ..Opts::default()
    })
    .await;
    let clock = h.clock.clone().unwrap();
    let (old_id, old) = h
        .create_key(json!({"name": "svc", "user": "alice", "team": "red"}))
        .await;
    let resp = h.chat(&old, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, 0).await; // cached before rotation

    let v = admin_rotate(&h, &old_id, json!({"grace_seconds": 60})).await;
    let new = v["key"].as_str().unwrap().to_owned();
    let new_id = v["id"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_ne!(new_id, old_id);
    assert_eq!(keys::parse(&new), Ok(new_id.as_str()));
    assert_eq!(v["rotated_from"], old_id.as_str(), "{v}");
    assert_eq!(v["user"], "alice", "attributes carry over: {v}");
    assert_eq!(v["team"], "red", "{v}");
    assert_eq!(v["status"], "active", "{v}");
    assert!(v["expires_at"].is_null(), "the new key has no grace: {v}");

    let mut seen = 1;
    for key in [&new, &old] {
        let resp = h.chat(key, chat_body("gpt-4o-mini")).await;
        assert_ok(&h, resp, seen).await;
        seen += 1;
    }
    clock.advance_ms(59_999);
    for key in [&new, &old] {
        let resp = h.chat(key, chat_body("gpt-4o-mini")).await;
        assert_ok(&h, resp, seen).await;
        seen += 1;
    }
    clock.advance_ms(1);
    let resp = h.chat(&old, chat_body("gpt-4o-mini")).await;
    assert_refused(&h, resp, seen).await;
    let resp = h.chat(&new, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, seen).await;
    seen += 1;
    clock.advance_ms(86_400_000);
    let resp = h.chat(&old, chat_body("gpt-4o-mini")).await;
    assert_refused(&h, resp, seen).await;
    let resp = h.chat(&new, chat_body("gpt-4o-mini")).await;
    assert_ok(&h, resp, seen).await;
    h.stop().await;
}

#[tokio::test]
async fn rotation_without_grace_refuses_the_old_key_at_once() {
    let h = Harness::start_with(Opts {
        manual_clock: Some(T0),
        ..Opts::default()
    })
    .await;
    let mut seen = 0;
    for body in [json!({"grace_seconds": 0}), json!({})] {
        let (old_id, old) = h.create_key(json!({"name": "svc"})).await;
        let resp = h.chat(&old, chat_body("gpt-4o-mini")).await;
        assert_ok(&h, resp, seen).await;
        seen += 1;
        let v = admin_rotate(&h, &old_id, body).await;
        let new = v["key"].as_str().unwrap().to_owned();
        let resp = h.chat(&old, chat_body("gpt-4o-mini")).await;
        assert_refused(&h, resp, seen).await;
        let resp = h.chat(&new, chat_body("gpt-4o-mini")).await;
        assert_ok(&h, resp, seen).await;
        seen += 1;
    }
    h.stop().await;
}

#[tokio::test]
async fn every_credential_header_works() {
    let h = Harness::start().await;
    let key = h.key().await;
    let bearer = format!("Bearer {key}");
    let lower = format!("bearer {key}");
    let cases: [(&str, &str); 5] = [
        ("authorization", &bearer),
        ("authorization", &lower),
        ("x-api-key", &key),
        ("api-key", &key),
        ("x-goog-api-key", &key),
    ];
    for (i, (name, value)) in cases.into_iter().enumerate() {
        let resp = chat_with(&h, &[(name, value)]).await;
        assert!(resp.headers().get("x-request-id").is_some());
        assert_ok(&h, resp, i).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn same_key_in_several_headers_is_accepted() {
    let h = Harness::start().await;
    let key = h.key().await;
    let bearer = format!("Bearer {key}");
    let resp = chat_with(&h, &[("authorization", &bearer), ("x-api-key", &key)]).await;
    assert_ok(&h, resp, 0).await;
    let resp = chat_with(
        &h,
        &[
            ("authorization", &bearer),
            ("x-api-key", &key),
            ("api-key", &key),
            ("x-goog-api-key", &key),
        ],
    )
    .await;
    assert_ok(&h, resp, 1).await;
    h.stop().await;
}

#[tokio::test]
async fn two_different_credentials_are_401() {
    let h = Harness::start().await;
    let a = h.key().await;
    let b = h.key().await;
    let bearer_a = format!("Bearer {a}");
    // Two valid keys of different identities.
    for headers in [
        vec![
            ("authorization", bearer_a.as_str()),
            ("x-api-key", b.as_str()),
        ],
        vec![("api-key", a.as_str()), ("x-goog-api-key", b.as_str())],
        // A valid key next to garbage: not "pick the one that works".
        vec![
            ("authorization", bearer_a.as_str()),
            ("x-api-key", "sk-other"),
        ],
        vec![
            ("x-api-key", "garbage"),
            ("authorization", bearer_a.as_str()),
        ],
        // The master key next to a client key.
        vec![("authorization", bearer_a.as_str()), ("api-key", MASTER)],
    ] {
        let resp = chat_with(&h, &headers).await;
        let v = assert_refused(&h, resp, 0).await;
        assert!(
            !v.to_string().contains(&a) && !v.to_string().contains(&b),
            "error echoes a key: {v}"
        );
    }
    // Two values of the same header.
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-api-key", &a)
        .header("x-api-key", &b)
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_refused(&h, resp, 0).await;
    h.stop().await;
}

#[tokio::test]
async fn key_in_the_query_string_is_401() {
    let h = Harness::start().await;
    let key = h.key().await;
    for q in [
        format!("key={key}"),
        format!("api_key={key}"),
        format!("foo=1&API_KEY={key}"),
        format!("x={key}"),
    ] {
        // Alone, and next to a valid header credential.
        let url = format!("{}/v1/chat/completions?{q}", h.url);
        let resp = h
            .http
            .post(&url)
            .json(&chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_refused(&h, resp, 0).await;
        let resp = h
            .http
            .post(&url)
            .bearer_auth(&key)
            .json(&chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        let v = assert_refused(&h, resp, 0).await;
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("query string"),
            "{v}"
        );
    }
    let resp = h
        .http
        .get(format!("{}/v1/models?key={key}", h.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_refused(&h, resp, 0).await;
    // Percent-encoding the name or the value does not smuggle a key through.
    let encoded_key = key.replace('_', "%5F");
    for q in [
        "k%65y=AIzaSyExampleGoogleKey".to_owned(),
        "api%5Fkey=whatever".to_owned(),
        "%41PI_KEY=whatever".to_owned(),
        format!("x={encoded_key}"),
        "access_token=abc".to_owned(),
    ] {
        let resp = h
            .http
            .post(format!("{}/v1/chat/completions?{q}", h.url))
            .bearer_auth(&key)
            .json(&chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert_eq!(status, 401, "?{q} was accepted");
        assert_refused(&h, resp, 0).await;
    }
    // Ordinary query parameters are fine.
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions?limit=10", h.url))
        .bearer_auth(&key)
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_ok(&h, resp, 0).await;
    h.stop().await;
}

#[tokio::test]
async fn basic_authorization_is_401() {
    let h = Harness::start().await;
    let key = h.key().await;
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .basic_auth(&key, None::<&str>)
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_refused(&h, resp, 0).await;
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .basic_auth("user", Some(&key))
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_refused(&h, resp, 0).await;
    let raw = format!("Basic {key}");
    let resp = chat_with(&h, &[("authorization", &raw)]).await;
    assert_refused(&h, resp, 0).await;
    // A bare key in Authorization (no scheme) is not a bearer token either.
    let resp = chat_with(&h, &[("authorization", &key)]).await;
    assert_refused(&h, resp, 0).await;
    // A non-bearer Authorization next to a valid x-api-key is still refused.
    let resp = chat_with(&h, &[("authorization", &raw), ("x-api-key", &key)]).await;
    assert_refused(&h, resp, 0).await;
    h.stop().await;
}

#[tokio::test]
async fn client_key_is_never_forwarded_and_the_provider_sees_its_own() {
    let h = Harness::start_with(Opts {
        // Forwarding is under test here; ownership (tests/ownership.rs) would answer lists itself.
        top_extra: "ownership:\n  scope: off\n".into(),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    let bearer = format!("Bearer {key}");
    // Chat with the key in all four headers plus a cookie.
    let resp = chat_with(
        &h,
        &[
            ("authorization", &bearer),
            ("x-api-key", &key),
            ("api-key", &key),
            ("x-goog-api-key", &key),
            ("cookie", "session=s3cr3t-cookie"),
            ("x-custom-header", "kept"),
        ],
    )
    .await;
    assert_ok(&h, resp, 0).await;
    // A body-less GET with only x-goog-api-key.
    let resp = h
        .http
        .get(format!("{}/v1/files", h.url))
        .header("x-goog-api-key", &key)
        .header("cookie", "a=b")
        .send()
        .await
        .unwrap();
    assert_ok(&h, resp, 1).await;
    // The native surface, with api-key.
    let resp = h
        .http
        .post(format!("{}/providers/openai/embeddings", h.url))
        .header("api-key", &key)
        .json(&json!({"model": "text-embedding-3-small", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_ok(&h, resp, 2).await;
    // A streamed completion with x-api-key.
    let mut body = chat_body("gpt-4o-mini");
    body["stream"] = json!(true);
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-api-key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_ok(&h, resp, 3).await;

    let seen = h.mock.requests();
    assert_eq!(seen.len(), 4);
    let secret_part = &key["pcs_".len() + 13..];
    for r in &seen {
        let auth: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "authorization")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(
            auth,
            vec![format!("Bearer {PROVIDER_KEY}").as_str()],
            "{} {}",
            r.method,
            r.path
        );
        for h in ["x-api-key", "api-key", "x-goog-api-key", "cookie"] {
            assert!(r.header(h).is_none(), "{h} forwarded to {}", r.path);
        }
        for (n, v) in &r.headers {
            assert!(
                !v.contains(secret_part),
                "client key forwarded in header {n}"
            );
        }
        assert!(!r.path.contains(secret_part));
        assert!(!String::from_utf8_lossy(&r.body).contains(secret_part));
    }
    assert_eq!(seen[0].header("x-custom-header"), Some("kept"));
    h.stop().await;
}

#[tokio::test]
async fn health_endpoints_need_no_credential() {
    let h = Harness::start().await;
    for path in ["/healthz", "/readyz"] {
        let resp = h.http.get(format!("{}{path}", h.url)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers().get("x-request-id").is_some(), "{path}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["status"].is_string(), "{path}: {v}");
    }
    assert_eq!(h.mock.request_count(), 0);
    h.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_denied_by_default() {
    let h = Harness::start().await;
    let key = h.key().await;
    for path in [
        "/nope",
        "/v2/chat/completions",
        "/healthz/extra",
        "/",
        "/providers",
    ] {
        let resp = h.http.get(format!("{}{path}", h.url)).send().await.unwrap();
        assert_refused(&h, resp, 0).await;
        let resp = h
            .http
            .get(format!("{}{path}", h.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let v = assert_error(resp, 404, "not_found").await;
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(h.mock.request_count(), 0, "{path} reached the provider");
    }
    // Only GET on the public paths is public; other methods get an
    // OpenAI-shaped refusal, never a 2xx.
    let resp = h
        .http
        .post(format!("{}/healthz", h.url))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert!(
        status == 401 || status == 404 || status == 405,
        "POST /healthz: {status}"
    );
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["code"].is_string(), "{v}");
    h.stop().await;
}
