//! Access rules: table-driven matching, enforcement through the gateway
//! (models, endpoint groups, model lists, key narrowing), `explain` (admin API
//! and CLI), and live reload that refuses a bad file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use portcullis::authn::Principal;
use portcullis::authz::rules::RuleDecision;
use portcullis::config::{Config, ConfigSource};
use serde_json::{Value, json};

const RULES: &str = r#"rules:
  - subjects: ["team:mobile", "role:pro"]
    models: ["openai/gpt-4o-mini"]
    endpoints: [chat]
  - subjects: ["user:supa:8f1c"]
    models: ["openai/gpt-4o*", "openai/text-*"]
  - subjects: ["issuer:corp"]
    models: ["openai/*"]
    endpoints: [files, embeddings]
  - subjects: ["key:static:ci"]
    models: ["*/*"]
"#;

fn rules_config() -> Config {
    let env = |_: &str| None;
    Config::from_yaml(
        &format!("providers:\n  - name: openai\n    kind: openai\n    api_key: sk-x\n    models: [gpt-4o-mini, gpt-4o, text-embedding-3-small]\n{RULES}"),
        &env,
        ConfigSource::Defaults,
    )
    .unwrap()
}

fn p(subjects: &[&str]) -> Principal {
    Principal::synthetic(
        &subjects.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        None,
        None,
    )
}

#[test]
fn rule_matching_table() {
    let cfg = rules_config();
    let r = &cfg.rules;
    let cases: &[(&[&str], Option<&str>, &str, RuleDecision)] = &[
        (
            &["team:mobile"],
            Some("gpt-4o-mini"),
            "chat",
            RuleDecision::Allowed(0),
        ),
        (
            &["team:mobile"],
            Some("gpt-4o"),
            "chat",
            RuleDecision::Denied,
        ),
        (
            &["team:mobile"],
            Some("gpt-4o-mini"),
            "embeddings",
            RuleDecision::Denied,
        ),
        (
            &["team:web"],
            Some("gpt-4o-mini"),
            "chat",
            RuleDecision::Denied,
        ),
        (
            &["role:pro", "issuer:x"],
            Some("gpt-4o-mini"),
            "chat",
            RuleDecision::Allowed(0),
        ),
        (
            &["user:supa:8f1c"],
            Some("gpt-4o"),
            "chat",
            RuleDecision::Allowed(1),
        ),
        (
            &["user:supa:8f1c"],
            Some("text-embedding-3-small"),
            "embeddings",
            RuleDecision::Allowed(1),
        ),
        (
            &["user:supa:other"],
            Some("gpt-4o"),
            "chat",
            RuleDecision::Denied,
        ),
        (
            &["issuer:corp", "user:corp:1"],
            None,
            "files",
            RuleDecision::Allowed(2),
        ),
        (
            &["issuer:corp", "user:corp:1"],
            None,
            "threads",
            RuleDecision::Denied,
        ),
        (
            &["issuer:corp", "user:corp:1"],
            Some("gpt-4o"),
            "chat",
            RuleDecision::Denied,
        ),
        (
            &["key:static:ci"],
            Some("anything"),
            "anything",
            RuleDecision::Allowed(3),
        ),
        (&[], Some("gpt-4o-mini"), "chat", RuleDecision::Denied),
    ];
    for (subjects, model, group, want) in cases {
        assert_eq!(
            &r.decide(&p(subjects), "openai", *model, group),
            want,
            "{subjects:?} {model:?} {group}"
        );
    }
    // Without a rules section: keys are governed by their own lists, JWT users get nothing.
    let env = |_: &str| None;
    let none = Config::from_yaml("listen: 127.0.0.1:1\n", &env, ConfigSource::Defaults).unwrap();
    assert_eq!(
        none.rules
            .decide(&p(&["key:abc"]), "openai", Some("gpt-4o"), "chat"),
        RuleDecision::NotConfigured
    );
    assert_eq!(
        none.rules
            .decide(&p(&["user:supa:1"]), "openai", Some("gpt-4o"), "chat"),
        RuleDecision::Denied
    );
}

#[test]
fn bad_rules_are_configuration_errors() {
    let env = |_: &str| None;
    let e = Config::from_yaml(
        "rules:\n  - subjects: [\"nobody\", \"planet:mars\"]\n    models: [\"gpt-4o\"]\n  - subjects: []\n    models: []\n",
        &env,
        ConfigSource::Defaults,
    )
    .unwrap_err();
    let locs: Vec<&str> = e.errors.iter().map(|e| e.location.as_str()).collect();
    for want in [
        "rules[0].subjects[0]",
        "rules[0].subjects[1]",
        "rules[0].models[0]",
        "rules[1].subjects",
        "rules[1].models",
    ] {
        assert!(locs.contains(&want), "{want} missing in {locs:?}");
    }
}

#[tokio::test]
async fn rules_are_enforced_through_the_gateway_and_narrowed_by_keys() {
    let h = Harness::start_with(Opts {
        top_extra: RULES.into(),
        ..Default::default()
    })
    .await;
    let (_, mobile) = h.create_key(json!({"team": "mobile"})).await;
    let (_, other) = h.create_key(json!({"team": "web"})).await;
    assert_eq!(
        h.chat(&mobile, chat_body("gpt-4o-mini")).await.status(),
        200
    );
    h.mock.clear();
    assert_error(
        h.chat(&mobile, chat_body("gpt-4o")).await,
        403,
        "model_not_allowed",
    )
    .await;
    assert_error(
        h.chat(&other, chat_body("gpt-4o-mini")).await,
        403,
        "model_not_allowed",
    )
    .await;
    let resp = h
        .http
        .post(format!("{}/v1/embeddings", h.url))
        .bearer_auth(&mobile)
        .json(&json!({"model": "text-embedding-3-small", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "model_not_allowed").await;
    let resp = h
        .http
        .get(format!("{}/v1/files", h.url))
        .bearer_auth(&mobile)
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "endpoint_not_allowed").await;
    assert_eq!(h.mock.request_count(), 0, "nothing forwarded");
    // /v1/models lists exactly what the rules (and the key) allow.
    let v: Value = h
        .http
        .get(format!("{}/v1/models", h.url))
        .bearer_auth(&mobile)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini"]);
    let v: Value = h
        .http
        .get(format!("{}/v1/models", h.url))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"], json!([]));
    // A key's own list narrows further: both must allow.
    let (_, narrow) = h
        .create_key(json!({"team": "mobile", "endpoints": ["embeddings"]}))
        .await;
    assert_error(
        h.chat(&narrow, chat_body("gpt-4o-mini")).await,
        403,
        "endpoint_not_allowed",
    )
    .await;
    h.stop().await;
}

#[tokio::test]
async fn explain_answers_why() {
    let h = Harness::start_with(Opts {
        top_extra: RULES.into(),
        ..Default::default()
    })
    .await;
    let explain = |body: Value| {
        let h = &h;
        async move {
            h.http
                .post(format!("{}/admin/explain", h.url))
                .bearer_auth(MASTER)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let v = explain(json!({"subjects": ["user:supa:8f1c"], "model": "gpt-4o", "request": "POST /v1/chat/completions"})).await;
    assert_eq!(v["decision"], "allow", "{v}");
    assert!(v["rule"].as_str().unwrap().starts_with("rules[1]"), "{v}");
    let v = explain(json!({"subjects": ["user:supa:8f1c"], "model": "gpt-4o", "request": "GET /v1/organization/users"})).await;
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["status"], 403);
    assert_eq!(v["code"], "endpoint_not_allowed");
    let stage = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "provider_allowlist")
        .unwrap();
    assert_eq!(stage["result"], "refuse");
    let v = explain(json!({"subjects": ["team:web"], "model": "gpt-4o-mini", "request": "POST /v1/chat/completions"})).await;
    assert_eq!(v["code"], "model_not_allowed");
    let stage = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "rules")
        .unwrap();
    assert_eq!(stage["result"], "refuse", "{v}");
    let v = explain(
        json!({"subjects": [], "model": "gpt-5-turbo", "request": "POST /v1/chat/completions"}),
    )
    .await;
    assert_eq!(v["code"], "model_not_found");
    // A real key's lists take part.
    let (id, _) = h
        .create_key(json!({"team": "mobile", "models": ["gpt-4o"]}))
        .await;
    let v = explain(
        json!({"key_id": id, "model": "gpt-4o-mini", "request": "POST /v1/chat/completions"}),
    )
    .await;
    assert_eq!(v["code"], "model_not_allowed");
    assert_eq!(
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "key_models")
            .unwrap()["result"],
        "refuse"
    );
    // The CLI prints the same decision.
    let url = h.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "explain",
                "--subject",
                "user:supa:8f1c",
                "--model",
                "gpt-4o",
                "--request",
                "POST /v1/chat/completions",
                "--url",
                &url,
            ])
            .env("PORTCULLIS_ADMIN_KEY", MASTER)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("decision: allow") && text.contains("rules[1]"),
        "{text}"
    );
    assert_eq!(h.mock.request_count(), 0, "explain forwards nothing");
    h.stop().await;
}

#[tokio::test]
async fn reload_swaps_rules_and_refuses_a_bad_file() {
    let rule = |model: &str| {
        format!("rules:\n  - subjects: [\"team:mobile\"]\n    models: [\"openai/{model}\"]\n")
    };
    let fg = FileGateway::start("", &rule("gpt-4o-mini")).await;
    let (_, key) = fg.create_key(json!({"team": "mobile"})).await;
    let chat = |model: &str| {
        fg.http
            .post(format!("{}/v1/chat/completions", fg.url))
            .bearer_auth(&key)
            .json(&chat_body(model))
            .send()
    };
    assert_eq!(chat("gpt-4o-mini").await.unwrap().status(), 200);
    assert_eq!(chat("gpt-4o").await.unwrap().status(), 403);
    // New rules take effect on reload.
    fg.rewrite("", &rule("gpt-4o"));
    let r: Value = fg.reload(MASTER).await.json().await.unwrap();
    assert_eq!(r["reloaded"], true, "{r}");
    assert_eq!(chat("gpt-4o").await.unwrap().status(), 200);
    assert_eq!(chat("gpt-4o-mini").await.unwrap().status(), 403);
    // A bad file is refused with every error, and the old rules stay.
    fg.rewrite(
        "",
        "rules:\n  - subjects: [\"planet:mars\"]\n    models: [\"gpt-4o\"]\n",
    );
    let body = assert_error(fg.reload(MASTER).await, 400, "invalid_request").await;
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("rules[0].subjects[0]") && msg.contains("rules[0].models[0]"),
        "{msg}"
    );
    assert_eq!(
        chat("gpt-4o").await.unwrap().status(),
        200,
        "old rules still in force"
    );
    fg.gw.shutdown().await.unwrap();
}

/// `explain` and the real pipeline share one check function; this proves
/// they agree: for keys with different lists and teams, models and requests,
/// explain's status and code are exactly what the real request gets.
#[tokio::test]
async fn explain_agrees_with_the_real_pipeline() {
    let h = Harness::start_with(Opts {
        top_extra: RULES.into(),
        ..Default::default()
    })
    .await;
    let keys = [
        json!({"team": "mobile"}),
        json!({"team": "mobile", "models": ["gpt-4o"]}),
        json!({"team": "mobile", "endpoints": ["embeddings"]}),
        json!({"team": "web"}),
        json!({"team": "mobile", "models": ["gpt-4o-mini"]}),
    ];
    let requests: &[(&str, &str, Option<&str>)] = &[
        ("POST", "/v1/chat/completions", Some("gpt-4o-mini")),
        ("POST", "/v1/chat/completions", Some("gpt-4o")),
        ("POST", "/v1/chat/completions", Some("openai/gpt-4o-mini")),
        ("POST", "/v1/chat/completions", Some("no-such-model")),
        ("POST", "/v1/chat/completions", None),
        ("POST", "/v1/embeddings", Some("text-embedding-3-small")),
        ("GET", "/v1/files", None),
        ("GET", "/v1/organization/users", None),
        (
            "POST",
            "/providers/openai/chat/completions",
            Some("gpt-4o-mini"),
        ),
        (
            "POST",
            "/providers/nope/chat/completions",
            Some("gpt-4o-mini"),
        ),
    ];
    let mut checked = 0;
    for key_body in keys {
        let (id, key) = h.create_key(key_body.clone()).await;
        for (method, path, model) in requests {
            let explained: Value = h
                .http
                .post(format!("{}/admin/explain", h.url))
                .bearer_auth(MASTER)
                .json(&json!({"key_id": id, "model": model, "request": format!("{method} {path}")}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mut req = h
                .http
                .request(method.parse().unwrap(), format!("{}{path}", h.url))
                .bearer_auth(&key);
            if *method == "POST" {
                let mut body =
                    json!({"messages": [{"role": "user", "content": "hi"}], "input": "hi"});
                if let Some(m) = model {
                    body["model"] = json!(m);
                }
                req = req.json(&body);
            }
            let before = h.mock.request_count();
            let resp = req.send().await.unwrap();
            let forwarded = h.mock.request_count() > before;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let what = format!(
                "{key_body} {method} {path} {model:?}: explain {explained}, real {status} {body}"
            );
            // "allow" means forwarded (the provider may still refuse it).
            if forwarded {
                assert_eq!(explained["decision"], "allow", "{what}");
            } else {
                assert_eq!(explained["decision"], "deny", "{what}");
                assert_eq!(explained["status"], status, "{what}");
                assert_eq!(explained["code"], body["error"]["code"], "{what}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 50);
    h.stop().await;
}
