//! The admin API, black-box (issue 2 §5): key lifecycle, secrets shown once,
//! pagination, PATCH semantics, errors in OpenAI's shape, master-key-only
//! access, the OpenAPI document and usage summaries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::time::Duration;

use portcullis::authn::keys;
use serde_json::{Value, json};

/// A point in time for the manual clock (2023-11-14T22:13:20Z).
const T0: i64 = 1_700_000_000_000;

fn admin_url(h: &Harness, path: &str) -> String {
    format!("{}/admin{path}", h.url)
}

/// Sends an admin request with the master key; `body` is sent raw when a string.
async fn admin(h: &Harness, method: &str, path: &str, body: Option<Value>) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = h
        .http
        .request(method, admin_url(h, path))
        .bearer_auth(MASTER);
    match body {
        Some(Value::String(raw)) => {
            req = req.header("content-type", "application/json").body(raw);
        }
        Some(v) => req = req.json(&v),
        None => {}
    }
    req.send().await.unwrap()
}

/// An admin request expected to answer `status` with a JSON body.
async fn admin_ok(
    h: &Harness,
    method: &str,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let resp = admin(h, method, path, body).await;
    assert!(
        resp.headers().get("x-request-id").is_some(),
        "x-request-id missing"
    );
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{method} /admin{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn list_all_ids(h: &Harness) -> Vec<String> {
    let v = admin_ok(h, "GET", "/keys?limit=1000", None, 200).await;
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn create_key_returns_the_key_once_with_its_attributes() {
    let h = Harness::start().await;
    let body = json!({
        "name": "billing service",
        "user": "alice",
        "team": "red",
        "models": ["gpt-4o*", "openai/text-embedding-3-small"],
        "endpoints": ["chat", "embeddings"],
        "expires_at": "2999-01-01T00:00:00Z",
        "metadata": {"owner": "alice@example.com", "n": 1},
    });
    let v = admin_ok(&h, "POST", "/keys", Some(body), 201).await;
    let id = v["id"].as_str().unwrap();
    let key = v["key"].as_str().unwrap();
    assert!(key.starts_with("pcs_"), "{v}");
    assert_eq!(keys::parse(key), Ok(id), "key embeds its id");
    let prefix = v["prefix"].as_str().unwrap();
    assert!(prefix.starts_with(&format!("pcs_{id}")), "{v}");
    assert!(key.starts_with(prefix.trim_end_matches('…')), "{v}");
    assert!(
        !prefix.contains(&key["pcs_".len() + 13..]),
        "prefix leaks the secret"
    );
    assert_eq!(v["name"], "billing service");
    assert_eq!(v["user"], "alice");
    assert_eq!(v["team"], "red");
    assert_eq!(
        v["models"],
        json!(["gpt-4o*", "openai/text-embedding-3-small"])
    );
    assert_eq!(v["endpoints"], json!(["chat", "embeddings"]));
    assert_eq!(v["expires_at"], "2999-01-01T00:00:00Z");
    assert_eq!(v["metadata"], json!({"owner": "alice@example.com", "n": 1}));
    assert_eq!(v["status"], "active");
    assert!(v["revoked_at"].is_null());
    assert!(v["created_at"].is_string());

    // Unix seconds as a JSON integer or string, RFC 3339 with an offset.
    for expiry in [
        json!(32_472_144_000_i64),
        json!("32472144000"),
        json!("2999-01-01T01:00:00+01:00"),
    ] {
        let v = admin_ok(
            &h,
            "POST",
            "/keys",
            Some(json!({"expires_at": expiry})),
            201,
        )
        .await;
        assert_eq!(v["expires_at"], "2999-01-01T00:00:00Z", "{expiry}");
        let path = format!("/keys/{}", v["id"].as_str().unwrap());
        let v = admin_ok(&h, "PATCH", &path, Some(json!({"expires_at": expiry})), 200).await;
        assert_eq!(v["expires_at"], "2999-01-01T00:00:00Z", "{expiry}");
    }

    // An empty body makes an unrestricted key.
    let resp = h
        .http
        .post(admin_url(&h, "/keys"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    assert!(v["models"].is_null() && v["endpoints"].is_null(), "{v}");
    assert_eq!(v["metadata"], json!({}));
    // ... and it works.
    let resp = h
        .chat(v["key"].as_str().unwrap(), chat_body("gpt-4o-mini"))
        .await;
    assert_eq!(resp.status(), 200);
    // Two keys never collide.
    assert_ne!(v["id"], id);
    h.stop().await;
}

#[tokio::test]
async fn the_secret_is_in_no_later_response() {
    let h = Harness::start().await;
    let (id, key) = h
        .create_key(json!({"name": "n", "user": "u", "team": "t"}))
        .await;
    let secret = &key["pcs_".len() + 13..];
    // Use the key so the usage summary has a row for it.
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    resp.bytes().await.unwrap();
    h.usage_record(&rid).await;
    let mut texts = Vec::new();
    for (method, path, body) in [
        ("GET", "/keys".to_owned(), None),
        ("GET", "/keys?after=&limit=5".to_owned(), None),
        ("GET", format!("/keys/{id}"), None),
        ("PATCH", format!("/keys/{id}"), Some(json!({"name": "m"}))),
        ("GET", "/usage".to_owned(), None),
        (
            "POST",
            format!("/keys/{id}/rotate"),
            Some(json!({"grace_seconds": 60})),
        ),
        ("GET", format!("/keys/{id}"), None),
        ("DELETE", format!("/keys/{id}"), None),
        ("GET", "/keys".to_owned(), None),
    ] {
        let resp = admin(&h, method, &path, body).await;
        assert!(
            resp.status().is_success(),
            "{method} {path}: {}",
            resp.status()
        );
        texts.push((method, path, resp.text().await.unwrap()));
    }
    for (method, path, text) in &texts {
        assert!(
            !text.contains(&key),
            "{method} {path} shows the key: {text}"
        );
        assert!(
            !text.contains(secret),
            "{method} {path} shows the secret: {text}"
        );
    }
    // The listing and the usage did show the key (by id), so the search above
    // looked at the right thing.
    assert!(texts[0].2.contains(&id));
    assert!(texts[4].2.contains(&id), "{}", texts[4].2);
    // The rotate answer shows only the new key.
    let rotated: Value = serde_json::from_str(&texts[5].2).unwrap();
    assert_ne!(rotated["key"].as_str().unwrap(), key);
    h.stop().await;
}

#[tokio::test]
async fn listing_paginates_with_limit_and_after() {
    let h = Harness::start().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(h.create_key(json!({"name": format!("k{i}")})).await.0);
    }
    created.sort();
    let all = list_all_ids(&h).await;
    assert_eq!(all, created, "ordered by id");

    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/keys?limit=2&after={a}"),
            None => "/keys?limit=2".to_owned(),
        };
        let v = admin_ok(&h, "GET", &path, None, 200).await;
        let ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                assert!(k.get("key").is_none(), "listing shows a key: {k}");
                k["id"].as_str().unwrap().to_owned()
            })
            .collect();
        let more = v["has_more"].as_bool().unwrap();
        pages.push((ids.clone(), more));
        if !more {
            break;
        }
        after = ids.last().cloned();
        assert!(pages.len() < 10, "pagination does not end");
    }
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert_eq!(pages[0].0.len(), 2);
    assert_eq!(pages[1].0.len(), 2);
    assert_eq!(pages[2].0.len(), 1);
    assert!(pages[0].1 && pages[1].1 && !pages[2].1);
    let flat: Vec<String> = pages.into_iter().flat_map(|p| p.0).collect();
    assert_eq!(flat, created);

    // Exactly a full page: has_more is false.
    let v = admin_ok(&h, "GET", "/keys?limit=5", None, 200).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 5);
    assert_eq!(v["has_more"], false);
    // After the last id: empty.
    let v = admin_ok(&h, "GET", &format!("/keys?after={}", created[4]), None, 200).await;
    assert_eq!(v["data"], json!([]));
    assert_eq!(v["has_more"], false);
    // A bad limit is a 400 in OpenAI's shape.
    let resp = admin(&h, "GET", "/keys?limit=abc", None).await;
    assert_error(resp, 400, "invalid_request").await;
    let resp = admin(&h, "GET", "/keys?limit=-1", None).await;
    assert_error(resp, 400, "invalid_request").await;
    h.stop().await;
}

#[tokio::test]
async fn patch_absent_fields_stay_and_null_clears() {
    let h = Harness::start().await;
    let (id, _) = h
        .create_key(json!({
            "name": "n", "user": "u", "team": "t",
            "models": ["gpt-4o"], "endpoints": ["chat"],
            "expires_at": "2999-01-01T00:00:00Z",
            "metadata": {"a": 1},
        }))
        .await;
    let path = format!("/keys/{id}");
    let v = admin_ok(&h, "PATCH", &path, Some(json!({"name": "renamed"})), 200).await;
    assert_eq!(v["name"], "renamed");
    assert_eq!(v["user"], "u");
    assert_eq!(v["team"], "t");
    assert_eq!(v["models"], json!(["gpt-4o"]));
    assert_eq!(v["endpoints"], json!(["chat"]));
    assert_eq!(v["expires_at"], "2999-01-01T00:00:00Z");
    assert_eq!(v["metadata"], json!({"a": 1}));

    // An empty object changes nothing.
    let before = admin_ok(&h, "GET", &path, None, 200).await;
    let v = admin_ok(&h, "PATCH", &path, Some(json!({})), 200).await;
    assert_eq!(v, before);

    let v = admin_ok(
        &h,
        "PATCH",
        &path,
        Some(json!({"team": null, "models": null, "expires_at": null, "metadata": {"b": 2}})),
        200,
    )
    .await;
    assert!(v["team"].is_null(), "{v}");
    assert!(v["models"].is_null(), "{v}");
    assert!(v["expires_at"].is_null(), "{v}");
    assert_eq!(v["metadata"], json!({"b": 2}), "metadata is replaced");
    assert_eq!(v["name"], "renamed");
    assert_eq!(v["user"], "u");
    assert_eq!(v["endpoints"], json!(["chat"]));

    // The change is persisted, not just echoed.
    let got = admin_ok(&h, "GET", &path, None, 200).await;
    assert_eq!(got, v);

    // null empties the metadata (it is always an object) and clears the rest.
    let v = admin_ok(
        &h,
        "PATCH",
        &path,
        Some(json!({"metadata": null, "name": null, "user": null, "endpoints": null})),
        200,
    )
    .await;
    assert_eq!(v["metadata"], json!({}), "{v}");
    for f in ["name", "user", "team", "models", "endpoints", "expires_at"] {
        assert!(v[f].is_null(), "{f} not cleared: {v}");
    }
    assert_eq!(admin_ok(&h, "GET", &path, None, 200).await, v);
    h.stop().await;
}

#[tokio::test]
async fn patched_model_restrictions_apply_to_the_next_request() {
    let h = Harness::start().await;
    let (id, key) = h.create_key(json!({"name": "m"})).await;
    let path = format!("/keys/{id}");
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200); // the key is now cached
    assert_eq!(h.mock.request_count(), 1);

    admin_ok(&h, "PATCH", &path, Some(json!({"models": ["gpt-4o"]})), 200).await;
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    let v = assert_error(resp, 403, "model_not_allowed").await;
    assert_eq!(v["error"]["param"], "model");
    assert_eq!(h.mock.request_count(), 1, "refused request was forwarded");
    let resp = h.chat(&key, chat_body("gpt-4o")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.request_count(), 2);

    // A glob.
    admin_ok(
        &h,
        "PATCH",
        &path,
        Some(json!({"models": ["gpt-4o*"]})),
        200,
    )
    .await;
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    let resp = h
        .http
        .post(format!("{}/v1/embeddings", h.url))
        .bearer_auth(&key)
        .json(&json!({"model": "text-embedding-3-small", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "model_not_allowed").await;
    assert_eq!(h.mock.request_count(), 3);

    // null lifts the restriction.
    admin_ok(&h, "PATCH", &path, Some(json!({"models": null})), 200).await;
    let resp = h
        .http
        .post(format!("{}/v1/embeddings", h.url))
        .bearer_auth(&key)
        .json(&json!({"model": "text-embedding-3-small", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.request_count(), 4);
    h.stop().await;
}

#[tokio::test]
async fn patched_endpoint_restrictions_apply_to_the_next_request() {
    let h = Harness::start().await;
    let (id, key) = h.create_key(json!({"name": "e"})).await;
    let path = format!("/keys/{id}");
    let embed = || {
        h.http
            .post(format!("{}/v1/embeddings", h.url))
            .bearer_auth(&key)
            .json(&json!({"model": "text-embedding-3-small", "input": "x"}))
            .send()
    };
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    admin_ok(
        &h,
        "PATCH",
        &path,
        Some(json!({"endpoints": ["embeddings"]})),
        200,
    )
    .await;
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_error(resp, 403, "endpoint_not_allowed").await;
    assert_eq!(h.mock.request_count(), 1);
    let resp = embed().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.request_count(), 2);
    admin_ok(&h, "PATCH", &path, Some(json!({"endpoints": null})), 200).await;
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.request_count(), 3);
    h.stop().await;
}

#[tokio::test]
async fn patched_expiry_applies_to_the_next_request() {
    let h = Harness::start().await;
    let (id, key) = h.create_key(json!({"name": "x"})).await;
    let path = format!("/keys/{id}");
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    let v = admin_ok(
        &h,
        "PATCH",
        &path,
        Some(json!({"expires_at": "2020-01-01T00:00:00Z"})),
        200,
    )
    .await;
    assert_eq!(v["status"], "expired");
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_error(resp, 401, "invalid_api_key").await;
    assert_eq!(h.mock.request_count(), 1);
    let v = admin_ok(&h, "PATCH", &path, Some(json!({"expires_at": null})), 200).await;
    assert_eq!(v["status"], "active");
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let h = Harness::start().await;
    let (id, _) = h.create_key(json!({"name": "real"})).await;
    let (ghost, _) = keys::generate();
    for (method, path, body) in [
        ("GET", format!("/keys/{ghost}"), None),
        (
            "PATCH",
            format!("/keys/{ghost}"),
            Some(json!({"name": "x"})),
        ),
        ("DELETE", format!("/keys/{ghost}"), None),
        (
            "POST",
            format!("/keys/{ghost}/rotate"),
            Some(json!({"grace_seconds": 5})),
        ),
        ("GET", "/keys/does-not-exist".to_owned(), None),
        ("GET", "/nothing-here".to_owned(), None),
    ] {
        let resp = admin(&h, method, &path, body).await;
        assert_error(resp, 404, "not_found").await;
    }
    // None of that created a key.
    assert_eq!(list_all_ids(&h).await, vec![id.clone()]);
    // A revoked key cannot be rotated.
    admin_ok(&h, "DELETE", &format!("/keys/{id}"), None, 200).await;
    let resp = admin(&h, "POST", &format!("/keys/{id}/rotate"), Some(json!({}))).await;
    assert_error(resp, 404, "not_found").await;
    // Nor changed: a revoked key stays as it was revoked.
    let resp = admin(
        &h,
        "PATCH",
        &format!("/keys/{id}"),
        Some(json!({"expires_at": null})),
    )
    .await;
    assert_error(resp, 400, "invalid_request").await;
    let shown = admin_ok(&h, "GET", &format!("/keys/{id}"), None, 200).await;
    assert_eq!(shown["status"], "revoked");
    assert_eq!(list_all_ids(&h).await, vec![id]);
    h.stop().await;
}

#[tokio::test]
async fn malformed_bodies_are_400_in_openai_shape() {
    let h = Harness::start().await;
    let (id, _) = h.create_key(json!({"name": "orig", "user": "u"})).await;
    let key_path = format!("/keys/{id}");
    let rotate_path = format!("/keys/{id}/rotate");

    // Not JSON at all.
    for (method, path) in [
        ("POST", "/keys"),
        ("PATCH", key_path.as_str()),
        ("POST", rotate_path.as_str()),
    ] {
        for raw in ["{not json", "{\"name\": \"x\"", "[1, 2"] {
            let resp = admin(&h, method, path, Some(Value::String(raw.into()))).await;
            let v = assert_error(resp, 400, "invalid_json").await;
            assert_eq!(v["error"]["type"], "invalid_request_error");
        }
    }

    // JSON with wrong field types or values.
    let bad_create = [
        json!({"name": 5}),
        json!({"models": "gpt-4o"}),
        json!({"models": [1, 2]}),
        json!({"models": [""]}),
        json!({"endpoints": ["Chat Completions"]}),
        json!({"endpoints": "chat"}),
        json!({"expires_at": "tomorrow"}),
        json!({"expires_at": true}),
        json!({"metadata": [1]}),
        json!({"metadata": "x"}),
        json!([]),
        json!(42),
        json!(null),
    ];
    for body in &bad_create {
        let resp = admin(&h, "POST", "/keys", Some(body.clone())).await;
        assert_eq!(resp.status(), 400, "POST /keys {body}");
        let v = assert_error(resp, 400, "invalid_request").await;
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let v = {
        let resp = admin(&h, "POST", "/keys", Some(json!({"expires_at": "soon"}))).await;
        assert_error(resp, 400, "invalid_request").await
    };
    assert_eq!(v["error"]["param"], "expires_at");

    for body in [
        json!({"name": 5}),
        json!({"models": "gpt-4o"}),
        json!({"expires_at": "tomorrow"}),
        json!({"metadata": 3}),
        json!({"metadata": [1]}),
    ] {
        let resp = admin(&h, "PATCH", &key_path, Some(body.clone())).await;
        assert_eq!(resp.status(), 400, "PATCH {body}");
        assert_error(resp, 400, "invalid_request").await;
    }
    for body in [
        json!({"grace_seconds": -1}),
        json!({"grace_seconds": "60"}),
        json!({"grace_seconds": 1.5}),
    ] {
        let resp = admin(&h, "POST", &rotate_path, Some(body.clone())).await;
        assert_eq!(resp.status(), 400, "rotate {body}");
        assert_error(resp, 400, "invalid_request").await;
    }

    // Nothing was created, changed or rotated.
    assert_eq!(list_all_ids(&h).await, vec![id.clone()]);
    let v = admin_ok(&h, "GET", &key_path, None, 200).await;
    assert_eq!(v["name"], "orig");
    assert_eq!(v["status"], "active");
    assert!(v["expires_at"].is_null());
    h.stop().await;
}

#[tokio::test]
async fn unknown_fields_are_400() {
    let h = Harness::start().await;
    let (id, _) = h.create_key(json!({"name": "orig"})).await;
    let cases = [
        ("POST", "/keys".to_owned(), json!({"nmae": "typo"})),
        (
            "POST",
            "/keys".to_owned(),
            json!({"name": "x", "key": "pcs_mine"}),
        ),
        (
            "POST",
            "/keys".to_owned(),
            json!({"name": "x", "model": ["gpt-4o"]}),
        ),
        ("PATCH", format!("/keys/{id}"), json!({"revoked_at": null})),
        (
            "PATCH",
            format!("/keys/{id}"),
            json!({"name": "x", "id": "other"}),
        ),
        ("POST", format!("/keys/{id}/rotate"), json!({"grace": 60})),
    ];
    for (method, path, body) in cases {
        let resp = admin(&h, method, &path, Some(body.clone())).await;
        let v = assert_error(resp, 400, "invalid_request").await;
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown field"),
            "{method} {path} {body}: {v}"
        );
    }
    assert_eq!(list_all_ids(&h).await, vec![id.clone()]);
    let v = admin_ok(&h, "GET", &format!("/keys/{id}"), None, 200).await;
    assert_eq!(v["name"], "orig");
    assert!(v["expires_at"].is_null(), "rotation happened: {v}");
    h.stop().await;
}

/// Every admin route with a valid-looking request body.
fn admin_routes(id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("POST", "/keys".into(), Some(json!({"name": "evil"}))),
        ("GET", "/keys".into(), None),
        ("GET", format!("/keys/{id}"), None),
        (
            "PATCH",
            format!("/keys/{id}"),
            Some(json!({"models": null})),
        ),
        ("DELETE", format!("/keys/{id}"), None),
        (
            "POST",
            format!("/keys/{id}/rotate"),
            Some(json!({"grace_seconds": 60})),
        ),
        ("GET", "/usage".into(), None),
        ("GET", "/usage?group_by=user".into(), None),
        ("GET", "/openapi.json".into(), None),
    ]
}

async fn admin_as(
    h: &Harness,
    method: &str,
    path: &str,
    body: &Option<Value>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = h.http.request(method, admin_url(h, path));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn admin_needs_the_master_key() {
    let h = Harness::start().await;
    let (id, _) = h
        .create_key(json!({"name": "target", "models": ["gpt-4o"]}))
        .await;
    let wrong = format!("Bearer {MASTER}x");
    let upper = format!("Bearer {}", MASTER.to_uppercase());
    let basic = format!("Basic {MASTER}");
    let in_query = format!("/keys?key={MASTER}");
    let no_headers: &[(&str, &str)] = &[];
    let header_sets: Vec<Vec<(&str, &str)>> = vec![
        no_headers.to_vec(),
        vec![("authorization", wrong.as_str())],
        vec![("authorization", upper.as_str())],
        vec![("authorization", basic.as_str())],
        vec![("authorization", "Bearer pcm_")],
        vec![("x-api-key", "")],
    ];
    for (method, path, body) in admin_routes(&id) {
        for headers in &header_sets {
            let resp = admin_as(&h, method, &path, &body, headers).await;
            let v = assert_error(resp, 401, "invalid_api_key").await;
            assert_eq!(v["error"]["type"], "authentication_error");
        }
    }
    // The master key in the query string is refused like any credential.
    let resp = h.http.get(admin_url(&h, &in_query)).send().await.unwrap();
    assert_error(resp, 401, "invalid_api_key").await;
    // Nothing changed.
    assert_eq!(list_all_ids(&h).await, vec![id.clone()]);
    let v = admin_ok(&h, "GET", &format!("/keys/{id}"), None, 200).await;
    assert_eq!(v["status"], "active");
    assert_eq!(v["models"], json!(["gpt-4o"]));
    assert!(v["expires_at"].is_null());
    assert_eq!(h.mock.request_count(), 0);
    h.stop().await;
}

#[tokio::test]
async fn client_keys_never_open_the_admin_api() {
    let h = Harness::start().await;
    let (id, key) = h
        .create_key(json!({"name": "client", "models": ["gpt-4o"]}))
        .await;
    let bearer = format!("Bearer {key}");
    let master_bearer = format!("Bearer {MASTER}");
    let header_sets: Vec<Vec<(&str, &str)>> = vec![
        vec![("authorization", bearer.as_str())],
        vec![("x-api-key", key.as_str())],
        vec![("api-key", key.as_str())],
        vec![("x-goog-api-key", key.as_str())],
        // A client key next to the master key is two credentials.
        vec![
            ("authorization", master_bearer.as_str()),
            ("x-api-key", key.as_str()),
        ],
    ];
    for (method, path, body) in admin_routes(&id) {
        for headers in &header_sets {
            let resp = admin_as(&h, method, &path, &body, headers).await;
            let status = resp.status().as_u16();
            assert!(
                status == 401 || status == 403,
                "{method} /admin{path} with a client key: {status}"
            );
            let v = assert_error(resp, status, "invalid_api_key").await;
            assert!(!v.to_string().contains(&key));
        }
    }
    // The key is untouched and still works as a client key.
    assert_eq!(list_all_ids(&h).await, vec![id.clone()]);
    let v = admin_ok(&h, "GET", &format!("/keys/{id}"), None, 200).await;
    assert_eq!(v["status"], "active");
    assert_eq!(v["models"], json!(["gpt-4o"]));
    assert!(v["expires_at"].is_null());
    assert_eq!(h.chat(&key, chat_body("gpt-4o")).await.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn openapi_document_describes_the_admin_api() {
    let h = Harness::start().await;
    let resp = admin(&h, "GET", "/openapi.json", None).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        v["openapi"]
    );
    assert!(v["info"]["title"].is_string());
    let paths = v["paths"].as_object().unwrap();
    for (p, methods) in [
        ("/admin/keys", &["get", "post"][..]),
        ("/admin/keys/{id}", &["get", "patch", "delete"][..]),
        ("/admin/keys/{id}/rotate", &["post"][..]),
        ("/admin/usage", &["get"][..]),
    ] {
        let entry = paths
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing from {:?}", paths.keys()));
        for m in methods {
            assert!(entry.get(*m).is_some(), "{m} {p} missing");
        }
    }
    assert!(v["components"]["securitySchemes"].is_object());
    // Every schema the document refers to is in it.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&v, &mut all);
    assert!(!all.is_empty());
    let schemas = v["components"]["schemas"].as_object().unwrap();
    let dangling: Vec<&String> = all
        .iter()
        .filter(|r| {
            r.strip_prefix("#/components/schemas/")
                .is_none_or(|name| !schemas.contains_key(name))
        })
        .collect();
    assert!(dangling.is_empty(), "unresolved references: {dangling:?}");
    h.stop().await;
}

/// One row of `/admin/usage` as a tuple (requests, prompt, completion, errors).
fn row_of(v: &Value, group: Option<&str>) -> Option<(i64, i64, i64, i64)> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"].as_str() == group)
        .map(|r| {
            (
                r["requests"].as_i64().unwrap(),
                r["prompt_tokens"].as_i64().unwrap(),
                r["completion_tokens"].as_i64().unwrap(),
                r["errors"].as_i64().unwrap(),
            )
        })
}

/// Polls `/admin/usage?{query}` until the total request count reaches `total`
/// (the ledger writer is asynchronous).
async fn usage_with_total(h: &Harness, query: &str, total: i64) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = admin_ok(h, "GET", &format!("/usage?{query}"), None, 200).await;
        let sum: i64 = last["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["requests"].as_i64().unwrap())
            .sum();
        if sum >= total {
            assert_eq!(sum, total, "more requests recorded than made: {last}");
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("usage never reached {total} requests: {last}");
}

/// Prompt tokens the mock charges for `chat_body`'s one message "Hello there":
/// 3 + (11 + 3) / 4.
const HELLO_PROMPT: i64 = 3 + (11 + 3) / 4;

#[tokio::test]
async fn usage_is_summed_by_key_user_team_and_model() {
    let h = Harness::start().await;
    let (alice_id, alice) = h
        .create_key(json!({"name": "a", "user": "alice", "team": "red"}))
        .await;
    let (bob_id, bob) = h
        .create_key(json!({"name": "b", "user": "bob", "team": "blue"}))
        .await;
    let (carol_id, carol) = h
        .create_key(json!({"name": "c", "user": "carol", "team": "red"}))
        .await;

    for _ in 0..2 {
        let resp = h.chat(&alice, chat_body("gpt-4o-mini")).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let resp = h.chat(&bob, chat_body("gpt-4o")).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let resp = h.chat(&bob, chat_body("mock-error-500")).await;
    assert_eq!(resp.status(), 500);
    resp.bytes().await.unwrap();
    // A streamed request with the usage chunk; 5 tokens asked for.
    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body["max_completion_tokens"] = json!(5);
    body["messages"] = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"}
    ]);
    let resp = h.chat(&carol, body).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    // "Be brief." has 9 chars: 3 + 12 / 4.
    let carol_prompt = (3 + (9 + 3) / 4) + HELLO_PROMPT;
    // Unauthenticated requests are not in the ledger.
    let resp = h.chat("pcs_nope", chat_body("gpt-4o")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(h.mock.request_count(), 5);

    let by_key = usage_with_total(&h, "group_by=key", 5).await;
    assert_eq!(
        row_of(&by_key, Some(&alice_id)),
        Some((2, 2 * HELLO_PROMPT, 40, 0))
    );
    assert_eq!(
        row_of(&by_key, Some(&bob_id)),
        Some((2, HELLO_PROMPT, 20, 1))
    );
    assert_eq!(
        row_of(&by_key, Some(&carol_id)),
        Some((1, carol_prompt, 5, 0))
    );
    assert_eq!(by_key["data"].as_array().unwrap().len(), 3, "{by_key}");
    // key is the default grouping.
    let default = usage_with_total(&h, "", 5).await;
    assert_eq!(default, by_key);

    let by_user = usage_with_total(&h, "group_by=user", 5).await;
    assert_eq!(
        row_of(&by_user, Some("alice")),
        Some((2, 2 * HELLO_PROMPT, 40, 0))
    );
    assert_eq!(
        row_of(&by_user, Some("bob")),
        Some((2, HELLO_PROMPT, 20, 1))
    );
    assert_eq!(
        row_of(&by_user, Some("carol")),
        Some((1, carol_prompt, 5, 0))
    );

    let by_team = usage_with_total(&h, "group_by=team", 5).await;
    assert_eq!(
        row_of(&by_team, Some("red")),
        Some((3, 2 * HELLO_PROMPT + carol_prompt, 45, 0))
    );
    assert_eq!(
        row_of(&by_team, Some("blue")),
        Some((2, HELLO_PROMPT, 20, 1))
    );
    assert_eq!(by_team["data"].as_array().unwrap().len(), 2, "{by_team}");

    let by_model = usage_with_total(&h, "group_by=model", 5).await;
    assert_eq!(
        row_of(&by_model, Some("gpt-4o-mini")),
        Some((2, 2 * HELLO_PROMPT, 40, 0))
    );
    assert_eq!(
        row_of(&by_model, Some("gpt-4o")),
        Some((2, HELLO_PROMPT + carol_prompt, 25, 0))
    );
    assert_eq!(
        row_of(&by_model, Some("mock-error-500")),
        Some((1, 0, 0, 1))
    );
    assert_eq!(by_model["data"].as_array().unwrap().len(), 3, "{by_model}");
    h.stop().await;
}

#[tokio::test]
async fn usage_filters_by_since_and_until() {
    let h = Harness::start_with(Opts {
        manual_clock: Some(T0),
        ..Opts::default()
    })
    .await;
    let clock = h.clock.clone().unwrap();
    let key = h.key().await;
    // One request at T0, two an hour later, one two hours later.
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    clock.advance_ms(3_600_000);
    assert_eq!(h.chat(&key, chat_body("gpt-4o")).await.status(), 200);
    assert_eq!(
        h.chat(&key, chat_body("mock-error-500")).await.status(),
        500
    );
    clock.advance_ms(3_600_000);
    assert_eq!(h.chat(&key, chat_body("mock-no-usage")).await.status(), 200);
    usage_with_total(&h, "group_by=model", 4).await;

    let t0 = T0 / 1000;
    let t1 = t0 + 3600;
    let t2 = t0 + 7200;
    let models = |v: &Value| -> Vec<String> {
        let mut m: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["group"].as_str().unwrap().to_owned())
            .collect();
        m.sort();
        m
    };
    let hr = &h;
    let q = |s: String| async move {
        admin_ok(hr, "GET", &format!("/usage?group_by=model&{s}"), None, 200).await
    };

    // since is inclusive, until exclusive.
    let v = q(format!("since={t1}")).await;
    assert_eq!(models(&v), ["gpt-4o", "mock-error-500", "mock-no-usage"]);
    let v = q(format!("until={t1}")).await;
    assert_eq!(models(&v), ["gpt-4o-mini"]);
    assert_eq!(
        row_of(&v, Some("gpt-4o-mini")),
        Some((1, HELLO_PROMPT, 20, 0))
    );
    let v = q(format!("since={t1}&until={t2}")).await;
    assert_eq!(models(&v), ["gpt-4o", "mock-error-500"]);
    assert_eq!(row_of(&v, Some("mock-error-500")), Some((1, 0, 0, 1)));
    let v = q(format!("since={t2}")).await;
    assert_eq!(models(&v), ["mock-no-usage"]);
    assert_eq!(row_of(&v, Some("mock-no-usage")), Some((1, 0, 0, 0)));
    let v = q(format!("since={}", t2 + 1)).await;
    assert_eq!(v["data"], json!([]));
    // RFC 3339 bounds work the same (T0 + 1h = 2023-11-14T23:13:20Z).
    let v = q("since=2023-11-14T23:13:20Z&until=2023-11-15T00:13:20Z".into()).await;
    assert_eq!(models(&v), ["gpt-4o", "mock-error-500"]);
    let v = q("until=2023-11-15T00:13:20%2B01:00".into()).await;
    assert_eq!(models(&v), ["gpt-4o-mini"], "offsets are honoured");
    h.stop().await;
}

#[tokio::test]
async fn usage_rejects_bad_parameters() {
    let h = Harness::start().await;
    for (query, param) in [
        ("group_by=bogus", None),
        ("group_by=KEY", None),
        ("group_by=", None),
        ("since=yesterday", Some("since")),
        ("until=2024-13-01T00:00:00Z", Some("until")),
    ] {
        let resp = admin(&h, "GET", &format!("/usage?{query}"), None).await;
        let v = assert_error(resp, 400, "invalid_request").await;
        assert_eq!(v["error"]["type"], "invalid_request_error", "{query}");
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{query}: {v}");
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn wrong_methods_on_admin_routes_change_nothing() {
    let h = Harness::start().await;
    let (id, key) = h.create_key(json!({"name": "keep"})).await;
    for (method, path) in [
        ("DELETE", "/keys".to_owned()),
        ("PUT", "/keys".to_owned()),
        ("PATCH", "/keys".to_owned()),
        ("PUT", format!("/keys/{id}")),
        ("POST", format!("/keys/{id}")),
        ("GET", format!("/keys/{id}/rotate")),
        ("DELETE", format!("/keys/{id}/rotate")),
        ("POST", "/usage".to_owned()),
        ("DELETE", "/usage".to_owned()),
        ("POST", "/openapi.json".to_owned()),
    ] {
        let resp = admin(&h, method, &path, Some(json!({"name": "changed"}))).await;
        let status = resp.status().as_u16();
        assert!(
            status == 404 || status == 405,
            "{method} /admin{path}: {status}"
        );
        let v = assert_error(resp, status, "not_found").await;
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert_eq!(list_all_ids(&h).await, vec![id.clone()]);
    let v = admin_ok(&h, "GET", &format!("/keys/{id}"), None, 200).await;
    assert_eq!(v["name"], "keep");
    assert_eq!(v["status"], "active");
    assert!(v["expires_at"].is_null());
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    h.stop().await;
}
