//! Authorization, black-box: model routing, `/v1/models`, key model globs and
//! endpoint lists, provider allowlists, path-normalisation attacks and the
//! native `/providers/{name}/...` surface. Every refusal is checked to have
//! reached nothing upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

/// Key of the `narrow` provider (allowed_endpoints: [chat]).
const NARROW_KEY: &str = "sk-narrow-provider-key-0123456789";
/// Key of the `plain` provider (kind default allowlist).
const PLAIN_KEY: &str = "sk-plain-provider-key-9876543210";

/// A gateway with three providers on the same mock, told apart by their keys:
/// `openai` (the harness's, default), `narrow` (chat only) and `plain` (the
/// `openai` kind's default allowlist, also listing `gpt-4o`).
fn three_providers() -> Opts {
    Opts {
        provider_extra: format!(
            "  - name: narrow\n    kind: openai\n    base_url: {MOCK_BASE_URL}\n    api_key: {NARROW_KEY}\n    models: [narrow-model]\n    allowed_endpoints: [chat]\n  - name: plain\n    kind: openai\n    base_url: {MOCK_BASE_URL}\n    api_key: {PLAIN_KEY}\n    models: [gpt-4o, plain-model]\n"
        ),
        ..Default::default()
    }
}

fn rid(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_owned()
}

fn bearer_of(req: &mock_provider::RecordedRequest) -> String {
    req.header("authorization").unwrap_or("").to_owned()
}

async fn get(h: &Harness, key: &str, path: &str) -> reqwest::Response {
    h.http
        .get(format!("{}{path}", h.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn post_json(h: &Harness, key: &str, path: &str, body: Value) -> reqwest::Response {
    h.http
        .post(format!("{}{path}", h.url))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn model_ids(v: &Value) -> BTreeSet<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

fn harness_models() -> BTreeSet<String> {
    MODELS
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn explicit_provider_prefix_is_stripped_before_forwarding() {
    let h = Harness::start().await;
    let key = h.key().await;
    let body = json!({
        "model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "Hello there"}],
        "temperature": 0.5,
        "metadata": {"model": "openai/gpt-4o"}
    });
    let resp = h.chat(&key, body).await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    let sent = seen[0].json().unwrap();
    assert_eq!(sent["model"], "gpt-4o", "provider must get the bare model");
    // Everything else in the body is left alone.
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(sent["messages"][0]["content"], "Hello there");
    assert_eq!(sent["metadata"]["model"], "openai/gpt-4o");
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.provider.as_deref(), Some("openai"));
    assert_eq!(rec.model.as_deref(), Some("gpt-4o"));
    h.stop().await;
}

#[tokio::test]
async fn bare_and_explicit_models_route_to_the_right_provider() {
    let h = Harness::start_with(three_providers()).await;
    let key = h.key().await;

    // A bare name goes to the provider listing it...
    let resp = h.chat(&key, chat_body("narrow-model")).await;
    assert_eq!(resp.status(), 200);
    let rec = h.usage_record(&rid(&resp)).await;
    assert_eq!(rec.provider.as_deref(), Some("narrow"));
    // ...and a name listed twice to the first provider listing it.
    let resp = h.chat(&key, chat_body("gpt-4o")).await;
    assert_eq!(resp.status(), 200);
    // `provider/model` names the provider explicitly.
    let resp = h.chat(&key, chat_body("plain/gpt-4o")).await;
    assert_eq!(resp.status(), 200);
    let rec = h.usage_record(&rid(&resp)).await;
    assert_eq!(rec.provider.as_deref(), Some("plain"));
    assert_eq!(rec.model.as_deref(), Some("gpt-4o"));

    let seen = h.mock.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(bearer_of(&seen[0]), format!("Bearer {NARROW_KEY}"));
    assert_eq!(seen[0].json().unwrap()["model"], "narrow-model");
    assert_eq!(bearer_of(&seen[1]), format!("Bearer {PROVIDER_KEY}"));
    assert_eq!(seen[1].json().unwrap()["model"], "gpt-4o");
    assert_eq!(bearer_of(&seen[2]), format!("Bearer {PLAIN_KEY}"));
    assert_eq!(seen[2].json().unwrap()["model"], "gpt-4o");

    // A provider named explicitly must list the model.
    let resp = h.chat(&key, chat_body("plain/gpt-4o-mini")).await;
    assert_error(resp, 404, "model_not_found").await;
    let resp = h.chat(&key, chat_body("narrow/gpt-4o")).await;
    assert_error(resp, 404, "model_not_found").await;
    assert_eq!(h.mock.request_count(), 3);
    h.stop().await;
}

#[tokio::test]
async fn unknown_models_are_404_model_not_found_and_not_forwarded() {
    let h = Harness::start().await;
    let key = h.key().await;
    for model in [
        "gpt-5-imaginary",
        "openai/gpt-5-imaginary",
        "nosuch/gpt-4o",
        "openai/",
        "GPT-4O",
        "",
    ] {
        let resp = h.chat(&key, chat_body(model)).await;
        let id = rid(&resp);
        let v = assert_error(resp, 404, "model_not_found").await;
        assert_eq!(v["error"]["param"], "model", "{model}: {v}");
        let rec = h.usage_record(&id).await;
        assert_eq!(rec.status, 404);
        assert_eq!(rec.error_code.as_deref(), Some("model_not_found"));
    }
    let resp = post_json(
        &h,
        &key,
        "/v1/embeddings",
        json!({"model": "text-embedding-9", "input": "x"}),
    )
    .await;
    assert_error(resp, 404, "model_not_found").await;
    assert_eq!(h.mock.request_count(), 0);
    h.stop().await;
}

#[tokio::test]
async fn models_list_is_answered_by_the_gateway_with_the_keys_models() {
    let h = Harness::start_with(three_providers()).await;

    // Unrestricted: every configured model; a name another provider already
    // serves under its bare name is listed qualified.
    let key = h.key().await;
    let resp = get(&h, &key, "/v1/models").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-request-id").is_some());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let mut expected = harness_models();
    expected.extend(["narrow-model", "plain/gpt-4o", "plain-model"].map(String::from));
    assert_eq!(model_ids(&v), expected);
    assert_eq!(v["data"].as_array().unwrap().len(), expected.len());
    for m in v["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model", "{m}");
        assert!(m["created"].is_number(), "{m}");
        assert!(m["owned_by"].is_string(), "{m}");
    }

    // Restricted by glob: exactly the matching models.
    let (_, glob_key) = h
        .create_key(json!({"name": "g", "models": ["gpt-4o*"]}))
        .await;
    let v: Value = get(&h, &glob_key, "/v1/models").await.json().await.unwrap();
    let want: BTreeSet<String> = ["gpt-4o", "gpt-4o-mini", "plain/gpt-4o"]
        .map(String::from)
        .into();
    assert_eq!(model_ids(&v), want);

    // Provider-qualified glob.
    let (_, prov_key) = h
        .create_key(json!({"name": "p", "models": ["narrow/*", "plain/plain-*"]}))
        .await;
    let v: Value = get(&h, &prov_key, "/v1/models").await.json().await.unwrap();
    let want: BTreeSet<String> = ["narrow-model", "plain-model"].map(String::from).into();
    assert_eq!(model_ids(&v), want);

    // No model at all.
    let (_, none_key) = h
        .create_key(json!({"name": "n", "models": ["nothing-matches-*"]}))
        .await;
    let v: Value = get(&h, &none_key, "/v1/models").await.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"], json!([]));

    // Without a key: 401, as everywhere.
    let resp = h
        .http
        .get(format!("{}/v1/models", h.url))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "invalid_api_key").await;

    assert_eq!(
        h.mock.request_count(),
        0,
        "/v1/models must not be forwarded"
    );
    h.stop().await;
}

#[tokio::test]
async fn model_retrieve_answers_only_the_keys_models() {
    let h = Harness::start().await;
    let (_, key) = h
        .create_key(json!({"name": "g", "models": ["gpt-4o*"]}))
        .await;
    let resp = get(&h, &key, "/v1/models/gpt-4o-mini").await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], "gpt-4o-mini");
    assert_eq!(v["object"], "model");
    assert_eq!(v["owned_by"], "openai");

    // Configured but not allowed for this key: indistinguishable from unknown.
    let denied = get(&h, &key, "/v1/models/text-embedding-3-small").await;
    let denied = assert_error(denied, 404, "model_not_found").await;
    let unknown = get(&h, &key, "/v1/models/no-such-model").await;
    let unknown = assert_error(unknown, 404, "model_not_found").await;
    assert_eq!(denied["error"]["type"], unknown["error"]["type"]);

    // Only GET.
    let resp = h
        .http
        .delete(format!("{}/v1/models/gpt-4o-mini", h.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert_ne!(resp.status(), 401);

    assert_eq!(h.mock.request_count(), 0);
    h.stop().await;
}

#[tokio::test]
async fn key_model_globs_allow_and_deny() {
    let h = Harness::start().await;
    let (key_id, key) = h
        .create_key(json!({"name": "g", "user": "bob", "models": ["gpt-4o*"]}))
        .await;

    for model in ["gpt-4o-mini", "gpt-4o", "openai/gpt-4o-mini"] {
        let resp = h.chat(&key, chat_body(model)).await;
        assert_eq!(resp.status(), 200, "{model}");
    }
    assert_eq!(h.mock.request_count(), 3);

    let resp = post_json(
        &h,
        &key,
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": "hello"}),
    )
    .await;
    let id = rid(&resp);
    let v = assert_error(resp, 403, "model_not_allowed").await;
    assert_eq!(v["error"]["param"], "model");
    assert_eq!(v["error"]["type"], "permission_error");
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 403);
    assert_eq!(rec.error_code.as_deref(), Some("model_not_allowed"));
    assert_eq!(rec.key_id.as_deref(), Some(key_id.as_str()));
    assert_eq!(rec.model.as_deref(), Some("text-embedding-3-small"));

    for model in ["mock-no-usage", "openai/text-embedding-3-small", "gpt-4"] {
        let resp = h.chat(&key, chat_body(model)).await;
        if model == "gpt-4" {
            // Not configured at all: 404 comes first.
            assert_error(resp, 404, "model_not_found").await;
        } else {
            assert_error(resp, 403, "model_not_allowed").await;
        }
    }

    // A provider-qualified glob.
    let (_, emb_key) = h
        .create_key(json!({"name": "e", "models": ["openai/text-*"]}))
        .await;
    let resp = post_json(
        &h,
        &emb_key,
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": "hello"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let resp = h.chat(&emb_key, chat_body("gpt-4o")).await;
    assert_error(resp, 403, "model_not_allowed").await;

    assert_eq!(
        h.mock.request_count(),
        4,
        "denied requests reached the provider"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_model_cannot_be_smuggled_past_the_glob_check() {
    let h = Harness::start().await;
    let (_, key) = h
        .create_key(json!({"name": "g", "models": ["gpt-4o*"]}))
        .await;

    // Two `model` keys: the gateway may not read one and the provider the other.
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"model":"mock-no-usage"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "duplicate model keys");
    // The same with the second key spelt with a JSON escape.
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"mod\u0065l":"mock-no-usage"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "duplicate model keys (escaped)");
    let resp = h
        .http
        .post(format!("{}/v1/embeddings", h.url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(r#"{"mod\u0065l":"text-embedding-3-small","input":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "model_not_allowed").await;

    // A JSON body declared as something else is still a JSON body to the provider.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
    ] {
        let resp = h
            .http
            .post(format!("{}/v1/embeddings", h.url))
            .bearer_auth(&key)
            .header("content-type", ct)
            .body(r#"{"model":"text-embedding-3-small","input":"hello"}"#)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!(
            status == 403 || status == 400 || status == 415,
            "{ct}: a disallowed model went through with status {status}"
        );
    }

    // ...also when a lenient parser upstream might accept what serde does not.
    let resp = h
        .http
        .post(format!("{}/v1/embeddings", h.url))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body(r#"{"model":"text-embedding-3-small","input":"hello","dimensions":NaN}"#)
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_json").await;
    // A body that is not JSON at all names no model: a restricted key is refused.
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_request").await;
    assert_eq!(h.mock.request_count(), 0);

    // A multipart form naming two models.
    let form = reqwest::multipart::Form::new()
        .text("model", "gpt-4o-mini")
        .text("model", "text-embedding-3-small")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"RIFF....".to_vec()).file_name("a.wav"),
        );
    let resp = h
        .http
        .post(format!("{}/v1/audio/transcriptions", h.url))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "multipart with two models");

    // A multipart form naming a disallowed model.
    let form = reqwest::multipart::Form::new()
        .text("model", "text-embedding-3-small")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"RIFF....".to_vec()).file_name("a.wav"),
        );
    let resp = h
        .http
        .post(format!("{}/v1/audio/transcriptions", h.url))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "model_not_allowed").await;

    assert_eq!(h.mock.request_count(), 0);
    h.stop().await;
}

#[tokio::test]
async fn key_endpoint_list_restricts_groups() {
    let h = Harness::start().await;
    let (_, key) = h
        .create_key(json!({"name": "c", "endpoints": ["chat"]}))
        .await;
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.request_count(), 1);

    let resp = post_json(
        &h,
        &key,
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": "x"}),
    )
    .await;
    let id = rid(&resp);
    let v = assert_error(resp, 403, "endpoint_not_allowed").await;
    assert_eq!(v["error"]["type"], "permission_error");
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 403);
    assert_eq!(rec.endpoint.as_deref(), Some("embeddings"));
    assert_eq!(rec.error_code.as_deref(), Some("endpoint_not_allowed"));

    assert_error(
        get(&h, &key, "/v1/files").await,
        403,
        "endpoint_not_allowed",
    )
    .await;
    assert_error(
        post_json(
            &h,
            &key,
            "/v1/responses",
            json!({"model": "gpt-4o", "input": "x"}),
        )
        .await,
        403,
        "endpoint_not_allowed",
    )
    .await;
    assert_error(
        post_json(
            &h,
            &key,
            "/providers/openai/embeddings",
            json!({"model": "text-embedding-3-small", "input": "x"}),
        )
        .await,
        403,
        "endpoint_not_allowed",
    )
    .await;
    // A key cannot widen the provider's allowlist either.
    let (_, wide) = h
        .create_key(json!({"name": "w", "endpoints": ["chat", "fine_tuning"]}))
        .await;
    assert_error(
        get(&h, &wide, "/v1/fine_tuning/jobs").await,
        403,
        "endpoint_not_allowed",
    )
    .await;
    assert_eq!(h.mock.request_count(), 1);
    h.stop().await;
}

#[tokio::test]
async fn provider_allowlists_deny_by_default_and_never_reach_account_admin() {
    let h = Harness::start_with(Opts {
        // Forwarding is under test here; ownership (tests/ownership.rs) would answer lists itself.
        top_extra: "ownership:\n  scope: off\n".into(),
        ..three_providers()
    })
    .await;
    let key = h.key().await;

    // Opted in on `openai`: reachable.
    let resp = get(&h, &key, "/v1/batches").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.request_count(), 1);

    for (method, path) in [
        // Never reachable: they administer the provider account.
        ("GET", "/v1/organization/users"),
        ("GET", "/v1/organization/admin_api_keys"),
        ("POST", "/v1/organization/invites"),
        ("GET", "/v1/organization/usage/completions"),
        ("GET", "/v1/projects"),
        ("GET", "/providers/openai/organization/users"),
        ("GET", "/providers/plain/organization/projects"),
        // Default-denied: not opted in on this provider.
        ("GET", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/evals"),
        ("GET", "/providers/plain/batches"),
        ("POST", "/providers/plain/fine_tuning/jobs"),
        // Not an endpoint group at all.
        ("GET", "/v1/dashboard/billing"),
        ("GET", "/v1/Organization/users"),
        ("GET", "/v1/%6frganization/users"),
    ] {
        let req = h
            .http
            .request(method.parse().unwrap(), format!("{}{path}", h.url))
            .bearer_auth(&key);
        let req = if method == "POST" {
            req.json(&json!({}))
        } else {
            req
        };
        let resp = req.send().await.unwrap();
        let v = assert_error(resp, 403, "endpoint_not_allowed").await;
        assert_eq!(v["error"]["type"], "permission_error", "{path}");
        assert_eq!(
            h.mock.request_count(),
            1,
            "{method} {path} reached the provider"
        );
    }

    // The kind's default allowlist is in force on `plain`: files are allowed.
    let resp = get(&h, &key, "/providers/plain/files").await;
    assert_eq!(resp.status(), 200);
    let seen = h.mock.requests();
    assert_eq!(seen.last().unwrap().path, "/v1/files");
    assert_eq!(
        bearer_of(seen.last().unwrap()),
        format!("Bearer {PLAIN_KEY}")
    );
    h.stop().await;
}

#[tokio::test]
async fn provider_allowed_endpoints_replace_the_kinds_allowlist() {
    let h = Harness::start_with(three_providers()).await;
    let key = h.key().await;

    let resp = post_json(
        &h,
        &key,
        "/providers/narrow/chat/completions",
        chat_body("narrow-model"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(bearer_of(&seen[0]), format!("Bearer {NARROW_KEY}"));

    // Allowed by the kind's default list, but `narrow` lists only chat.
    let resp = post_json(
        &h,
        &key,
        "/providers/narrow/embeddings",
        json!({"model": "narrow-model", "input": "x"}),
    )
    .await;
    assert_error(resp, 403, "endpoint_not_allowed").await;
    let resp = post_json(
        &h,
        &key,
        "/v1/embeddings",
        json!({"model": "narrow-model", "input": "x"}),
    )
    .await;
    let id = rid(&resp);
    assert_error(resp, 403, "endpoint_not_allowed").await;
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.provider.as_deref(), Some("narrow"));
    assert_eq!(rec.endpoint.as_deref(), Some("embeddings"));
    assert_error(
        post_json(
            &h,
            &key,
            "/v1/completions",
            json!({"model": "narrow/narrow-model", "prompt": "x"}),
        )
        .await,
        403,
        "endpoint_not_allowed",
    )
    .await;
    assert_error(
        get(&h, &key, "/providers/narrow/files").await,
        403,
        "endpoint_not_allowed",
    )
    .await;
    assert_eq!(h.mock.request_count(), 1);
    h.stop().await;
}

/// What a hostile request target must get.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// 400 `invalid_path` from the proxy handler (so it is in the ledger).
    InvalidPath,
    /// 403 `endpoint_not_allowed` from the proxy handler (in the ledger).
    Denied,
    /// 404 `not_found` from the router.
    NotFound,
    /// Refused by the HTTP parser itself (400, no JSON body guaranteed).
    Unparseable,
}

#[tokio::test]
async fn path_normalisation_attacks_never_reach_the_provider() {
    let h = Harness::start_with(Opts {
        // Forwarding is under test here; ownership (tests/ownership.rs) would answer lists itself.
        top_extra: "ownership:\n  scope: off\n".into(),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    let auth = format!("Authorization: Bearer {key}");
    let addr = h.url.strip_prefix("http://").unwrap().to_owned();
    let absolute = format!("http://{addr}/v1/./organization/users");
    use Expect::*;
    let cases: Vec<(&str, &str, Expect)> = vec![
        ("GET", "/v1/files/..%2F..%2Forganization/users", InvalidPath),
        ("GET", "/v1/files/..%2f..%2forganization/users", InvalidPath),
        ("GET", "//v1/organization/users", NotFound),
        ("GET", "/V1/Organization/users", NotFound),
        ("GET", "/V1/organization/users", NotFound),
        ("GET", "/v1/./organization", InvalidPath),
        ("GET", "/v1/./organization/users", InvalidPath),
        ("GET", "/v1/files/%2e%2e/organization", InvalidPath),
        ("GET", "/v1/files/%2E%2E/organization/users", InvalidPath),
        ("GET", "/v1/files/.%2e/organization/users", InvalidPath),
        ("GET", "/v1/files/%2e./organization/users", InvalidPath),
        ("GET", "/v1/files/../organization/users", InvalidPath),
        ("GET", "/v1/files/../../v1/organization/users", InvalidPath),
        ("GET", "/v1/%2e%2e/v1/organization/users", InvalidPath),
        ("GET", "/v1/files%2F..%2Forganization/users", InvalidPath),
        ("GET", "/v1/files/%252e%252e/organization", InvalidPath),
        ("GET", "/v1/files/%2e%2e%2forganization", InvalidPath),
        ("GET", "/v1//organization/users", InvalidPath),
        ("GET", "/v1/files//../organization", InvalidPath),
        (
            "POST",
            "/v1/chat/completions/../../organization/invites",
            InvalidPath,
        ),
        ("GET", "/v1/files/%5c..%5corganization", InvalidPath),
        ("GET", "/v1/files/%00/organization", InvalidPath),
        ("GET", "/v1/files/..\\organization\\users", Unparseable),
        ("GET", "/providers/openai/../v1/organization", InvalidPath),
        ("GET", "/providers/openai/./organization/users", InvalidPath),
        ("GET", "/providers/openai//organization/users", InvalidPath),
        (
            "GET",
            "/providers/openai/files/%2e%2e/organization",
            InvalidPath,
        ),
        (
            "GET",
            "/providers/openai%2F..%2Forganization/users",
            NotFound,
        ),
        ("GET", "/providers/../v1/organization/users", NotFound),
        ("GET", "/providers/OpenAI/organization/users", NotFound),
        ("GET", "/providers/openai/organization/users", Denied),
        ("GET", "/v1/organization/users?next=/v1/files", Denied),
        ("GET", "/v1/Organization/users", Denied),
        ("GET", "/v1/%6Frganization/users", Denied),
        ("GET", absolute.as_str(), InvalidPath),
    ];
    for (i, (method, target, expect)) in cases.iter().enumerate() {
        let rid = format!("attack-{i}");
        let rid_header = format!("x-request-id: {rid}");
        let body: &[u8] = if *method == "POST" { b"{}" } else { b"" };
        let mut headers = vec![auth.as_str(), rid_header.as_str()];
        if *method == "POST" {
            headers.push("Content-Type: application/json");
        }
        let resp = raw_http(&h.url, &raw_request(method, target, &headers, body)).await;
        let ctx = format!("{method} {target}: {} {}", resp.status, resp.body_text());
        match expect {
            InvalidPath | Denied | NotFound => {
                let (status, code) = match expect {
                    InvalidPath => (400, "invalid_path"),
                    Denied => (403, "endpoint_not_allowed"),
                    _ => (404, "not_found"),
                };
                assert_eq!(resp.status, status, "{ctx}");
                assert_eq!(resp.header("x-request-id"), Some(rid.as_str()), "{ctx}");
                let v = resp.json();
                assert_eq!(v["error"]["code"], code, "{ctx}");
                assert!(v["error"]["message"].is_string(), "{ctx}");
                if !matches!(expect, NotFound) {
                    // The proxy handler itself saw this exact target and refused it.
                    let rec = h.usage_record(&rid).await;
                    assert_eq!(rec.status, status, "{ctx}");
                    assert_eq!(rec.error_code.as_deref(), Some(code), "{ctx}");
                }
            }
            Unparseable => {
                assert!(
                    resp.status == 400 || resp.status == 404,
                    "{ctx}: expected 400/404"
                );
            }
        }
        assert_eq!(h.mock.request_count(), 0, "{ctx}: reached the provider");
    }

    // The same raw client does reach the provider for a harmless path, so
    // the zero above is meaningful.
    let resp = raw_http(
        &h.url,
        &raw_request("GET", "/v1/files", &[auth.as_str()], b""),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(h.mock.request_count(), 1);
    assert_eq!(h.mock.requests()[0].path, "/v1/files");
    h.stop().await;
}

#[tokio::test]
async fn native_pass_through_works_and_is_accounted() {
    let h = Harness::start_with(Opts {
        // Forwarding is under test here; ownership (tests/ownership.rs) would answer lists itself.
        top_extra: "ownership:\n  scope: off\n".into(),
        ..Default::default()
    })
    .await;
    let (key_id, key) = h
        .create_key(json!({"name": "n", "user": "carol", "team": "blue"}))
        .await;
    let resp = post_json(
        &h,
        &key,
        "/providers/openai/chat/completions",
        chat_body("gpt-4o-mini"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(bearer_of(&seen[0]), format!("Bearer {PROVIDER_KEY}"));
    assert!(!bearer_of(&seen[0]).contains(&key));
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 200);
    assert_eq!(rec.provider.as_deref(), Some("openai"));
    assert_eq!(rec.endpoint.as_deref(), Some("chat"));
    assert_eq!(rec.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(rec.key_id.as_deref(), Some(key_id.as_str()));
    assert_eq!(rec.user.as_deref(), Some("carol"));
    assert_eq!(rec.team.as_deref(), Some("blue"));
    // "Hello there": 3 + ceil(11 / 4) prompt tokens, 20 completion tokens.
    assert_eq!(rec.prompt_tokens, Some(6));
    assert_eq!(rec.completion_tokens, Some(20));

    // The query string goes along; a provider-qualified model is made bare.
    let resp = get(&h, &key, "/providers/openai/files?purpose=batch&limit=2").await;
    assert_eq!(resp.status(), 200);
    let resp = post_json(
        &h,
        &key,
        "/providers/openai/embeddings",
        json!({"model": "openai/text-embedding-3-small", "input": "hello"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen = h.mock.requests();
    assert_eq!(seen[1].path, "/v1/files?purpose=batch&limit=2");
    assert_eq!(seen[2].json().unwrap()["model"], "text-embedding-3-small");

    // Model checks hold on the native surface too.
    let resp = post_json(
        &h,
        &key,
        "/providers/openai/chat/completions",
        chat_body("not-configured"),
    )
    .await;
    assert_error(resp, 404, "model_not_found").await;
    assert_eq!(h.mock.request_count(), 3);
    h.stop().await;
}

#[tokio::test]
async fn unknown_provider_is_404() {
    let h = Harness::start().await;
    let key = h.key().await;
    for path in [
        "/providers/nope/chat/completions",
        "/providers/Openai/chat/completions",
        "/providers/openai",
        "/providers/",
        "/providers",
    ] {
        let resp = post_json(&h, &key, path, chat_body("gpt-4o-mini")).await;
        assert_error(resp, 404, "not_found").await;
    }
    let resp = post_json(
        &h,
        &key,
        "/providers/nope/chat/completions",
        chat_body("gpt-4o-mini"),
    )
    .await;
    let id = rid(&resp);
    assert_error(resp, 404, "not_found").await;
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 404);
    assert_eq!(h.mock.request_count(), 0);
    h.stop().await;
}

/// A key limited by model globs cannot leave the model choice to the provider's default.
#[tokio::test]
async fn a_restricted_key_must_name_a_model() {
    let h = Harness::start().await;
    let (_, key) = h
        .create_key(serde_json::json!({"models": ["gpt-4o*"]}))
        .await;
    for body in [
        serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
        serde_json::json!({"model": null, "messages": [{"role": "user", "content": "hi"}]}),
    ] {
        let resp = h.chat(&key, body).await;
        let v = assert_error(resp, 400, "invalid_request").await;
        assert_eq!(v["error"]["param"], "model");
    }
    assert_eq!(h.mock.request_count(), 0);
    // An unrestricted key may omit it (the provider decides).
    let free = h.key().await;
    let resp = h
        .chat(
            &free,
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_ne!(resp.status(), 403);
    h.stop().await;
}
