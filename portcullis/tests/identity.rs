//! Identity beyond gateway keys: shared static keys, development mode, public
//! paths, per-address lockout (with X-Forwarded-For only from trusted proxies),
//! and the audit log of failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use serde_json::{Value, json};

const SHARED: &str = "shared-key-for-the-ci-runners-0123";

async fn get_models(h: &Harness, key: Option<&str>, xff: Option<&str>) -> reqwest::Response {
    let mut req = h.http.get(format!("{}/v1/models", h.url));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    req.send().await.unwrap()
}

/// Polls the (asynchronously written) audit log until `done` holds.
async fn audit_until(h: &Harness, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut events = Vec::new();
    for _ in 0..200 {
        events = audit(h).await;
        if done(&events) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    events
}

async fn audit(h: &Harness) -> Vec<Value> {
    let v: Value = h
        .http
        .get(format!("{}/admin/audit", h.url))
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
async fn static_keys_are_identities_of_their_own() {
    let h = Harness::start_with(Opts {
        top_extra: format!(
            "auth:\n  lockout: {{enabled: false}}\n  static_keys:\n    - name: ci\n      key: {SHARED}\n      user: ci-bot\n      team: infra\n"
        ),
        ..Default::default()
    })
    .await;
    let resp = h.chat(SHARED, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let rec = h.usage_record(&rid).await;
    assert_eq!(rec.key_id.as_deref(), Some("static:ci"));
    assert_eq!(rec.user.as_deref(), Some("ci-bot"));
    assert_eq!(rec.team.as_deref(), Some("infra"));
    // The provider sees its own key, never the shared one.
    let seen = h.mock.requests();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    h.mock.clear();
    // A near miss is refused and nothing is forwarded.
    let near = format!("{}x", &SHARED[..SHARED.len() - 1]);
    assert_error(
        h.chat(&near, chat_body("gpt-4o-mini")).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert_error(
        h.chat("not-a-key-at-all", chat_body("gpt-4o-mini")).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert_eq!(h.mock.request_count(), 0);
    h.stop().await;
}

#[tokio::test]
async fn disabled_auth_makes_every_request_anonymous_but_keeps_admin_closed() {
    let h = Harness::start_with(Opts {
        top_extra: "auth:\n  disabled: true\n".into(),
        ..Default::default()
    })
    .await;
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let rec = h.usage_record(&rid).await;
    assert_eq!(rec.key_id, None);
    let resp = h
        .http
        .get(format!("{}/admin/keys", h.url))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "invalid_api_key").await;
    h.stop().await;
}

#[test]
fn disabled_auth_refuses_a_public_address_unless_allowed() {
    let env = |_: &str| None;
    let yaml = "listen: 0.0.0.0:8080\nauth:\n  disabled: true\n";
    let cfg = portcullis::config::Config::from_yaml(
        yaml,
        &env,
        portcullis::config::ConfigSource::Defaults,
    )
    .unwrap();
    let e = cfg.check_insecure_listen(false).unwrap_err();
    assert!(e.contains("--allow-insecure-public"), "{e}");
    assert!(cfg.check_insecure_listen(true).is_ok());
    let local = portcullis::config::Config::from_yaml(
        "listen: 127.0.0.1:8080\nauth:\n  disabled: true\n",
        &env,
        portcullis::config::ConfigSource::Defaults,
    )
    .unwrap();
    assert!(local.check_insecure_listen(false).is_ok());
    // The binary refuses to start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--disable-auth",
            "--listen",
            "0.0.0.0:0",
            "--database",
            "sqlite::memory:",
        ])
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-insecure-public"));
}

#[tokio::test]
async fn public_paths_need_no_credential_and_nothing_else_opens() {
    let h = Harness::start_with(Opts {
        top_extra: "auth:\n  lockout: {enabled: false}\n  public_paths: [/healthz, /v1/models]\n"
            .into(),
        ..Default::default()
    })
    .await;
    assert_eq!(get_models(&h, None, None).await.status(), 200);
    assert_eq!(
        h.http
            .get(format!("{}/healthz", h.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // /readyz was dropped from the list: now it needs a credential.
    let resp = h
        .http
        .get(format!("{}/readyz", h.url))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "invalid_api_key").await;
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "invalid_api_key").await;
    assert_eq!(h.mock.request_count(), 0);
    h.stop().await;
}

fn lockout_yaml(extra: &str) -> String {
    format!(
        "auth:\n  lockout: {{max_failed_attempts: 3, window_seconds: 60, block_seconds: 30, block_multiplier: 2, max_block_seconds: 100}}\n{extra}"
    )
}

#[tokio::test]
async fn repeated_failures_block_the_address_before_credentials_are_examined() {
    let h = Harness::start_with(Opts {
        top_extra: lockout_yaml(""),
        manual_clock: Some(1_800_000_000_000),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    assert_eq!(get_models(&h, Some(&key), None).await.status(), 200);
    for i in 0..3 {
        // Rotating X-Forwarded-For from an untrusted peer changes nothing.
        let xff = format!("203.0.113.{i}");
        assert_error(
            get_models(&h, Some("pcs_wrong"), Some(&xff)).await,
            401,
            "invalid_api_key",
        )
        .await;
    }
    // Now even the valid key is refused, with Retry-After, before it is looked at.
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.headers()["retry-after"], "30");
    assert_error(resp, 429, "too_many_failed_attempts").await;
    let resp = get_models(&h, Some(&key), Some("198.51.100.7")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(h.mock.request_count(), 0, "nothing reached the provider");
    // The block ends; the next one is twice as long.
    h.clock.as_ref().unwrap().advance_ms(30_000);
    assert_eq!(get_models(&h, Some(&key), None).await.status(), 200);
    for _ in 0..3 {
        get_models(&h, Some("pcs_wrong"), None).await;
    }
    let resp = get_models(&h, Some(&key), None).await;
    assert_eq!(resp.headers()["retry-after"], "60");
    assert_eq!(resp.status(), 429);
    h.clock.as_ref().unwrap().advance_ms(60_000);
    assert_eq!(get_models(&h, Some(&key), None).await.status(), 200);
    // The audit log says what happened, without the credential.
    let events = audit_until(&h, |e| {
        e.iter().filter(|e| e["kind"] == "locked_out").count() >= 2
    })
    .await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(events.iter().any(|e| e["kind"] == "locked_out"), "{text}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "authentication_failed" && e["client_ip"] == "127.0.0.1"),
        "{text}"
    );
    assert!(
        !text.contains("pcs_wrong"),
        "audit must never hold a credential: {text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let h = Harness::start_with(Opts {
        top_extra: lockout_yaml("  trusted_proxies: [127.0.0.1/32]\n"),
        manual_clock: Some(1_800_000_000_000),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    // The attacker, behind our proxy, prepends the victim's address: the proxy appended the real one.
    for _ in 0..3 {
        let resp = get_models(&h, Some("pcs_wrong"), Some("198.51.100.1, 203.0.113.66")).await;
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(
        get_models(&h, Some(&key), Some("203.0.113.66"))
            .await
            .status(),
        429,
        "the attacker is blocked"
    );
    assert_eq!(
        get_models(&h, Some(&key), Some("198.51.100.1"))
            .await
            .status(),
        200,
        "the victim is not"
    );
    assert_eq!(
        get_models(&h, Some(&key), None).await.status(),
        200,
        "the proxy itself is not"
    );
    let events = audit(&h).await;
    let failures: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "authentication_failed" || e["kind"] == "locked_out")
        .collect();
    assert!(!failures.is_empty());
    assert!(
        failures.iter().all(|e| e["client_ip"] == "203.0.113.66"),
        "{events:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn audit_records_failures_with_reason_and_key_id() {
    let h = Harness::start().await;
    let (id, key) = h.create_key(json!({"name": "soon-revoked"})).await;
    h.http
        .delete(format!("{}/admin/keys/{id}", h.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_error(
        get_models(&h, Some(&key), None).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert_error(get_models(&h, None, None).await, 401, "invalid_api_key").await;
    let resp = h
        .http
        .get(format!("{}/admin/keys", h.url))
        .bearer_auth("pcm_wrong-master-key-xxxxxxxx")
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "invalid_api_key").await;
    let events = audit_until(&h, |e| {
        e.iter()
            .filter(|e| e["kind"] == "authentication_failed")
            .count()
            >= 3
    })
    .await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(&key) && !text.contains("pcm_wrong"),
        "{text}"
    );
    let revoked = events
        .iter()
        .find(|e| e["key_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        revoked["reason"].as_str().unwrap().contains("revoked"),
        "{text}"
    );
    assert_eq!(revoked["credential_kind"], "api_key");
    assert!(
        events.iter().any(|e| e["credential_kind"] == "none"),
        "{text}"
    );
    assert!(
        events.iter().any(|e| e["credential_kind"] == "master_key"),
        "{text}"
    );
    // Paging.
    let page: Value = h
        .http
        .get(format!("{}/admin/audit?limit=1", h.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], true);
    h.stop().await;
}
