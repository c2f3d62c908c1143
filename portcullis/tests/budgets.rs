//! Budgets, black-box: atomic reservations under 50 parallel requests, every
//! billable endpoint on both surfaces charged alike, calendar periods, alert
//! webhooks, spend rebuilt from the ledger after a restart, and reporting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mock_provider::{MockOptions, MockProvider};
use portcullis::config::{Config, ConfigSource};
use serde_json::{Value, json};

/// $1000 per million tokens: 1000 µ$ a token, so costs are easy to check.
const PRICING: &str = "pricing:\n  openai/gpt-4o-mini: {input: 1000, output: 1000}\n  openai/text-embedding-3-small: {input: 1000}\n  openai/gpt-image-1: {input: 1000, output: 1000}\n  openai/tts-1: {per_request: 0.015}\n  openai/mock-transcribe: {input: 1000, output: 1000}\n";

fn body5() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 5})
}

/// The cost reserved for `body` on chat: (bytes / 4 + max_tokens) tokens at 1000 µ$.
fn est_cost(body: &Value) -> i64 {
    (serde_json::to_vec(body).unwrap().len() as i64 / 4 + body["max_tokens"].as_i64().unwrap_or(0))
        * 1000
}

fn usd(micros: i64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

async fn budgets(h_url: &str, http: &reqwest::Client) -> Vec<Value> {
    let v: Value = http
        .get(format!("{h_url}/admin/budgets"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"].as_array().unwrap().clone()
}

fn spent_of(rows: &[Value], subject: &str) -> i64 {
    rows.iter()
        .find(|r| r["subject"] == subject)
        .map_or(0, |r| r["spent_micros"].as_i64().unwrap())
}

#[tokio::test]
async fn fifty_parallel_requests_against_a_budget_that_fits_five() {
    let budget = 5 * est_cost(&body5());
    let h = Harness::start_with(Opts {
        mock: MockOptions {
            latency: Duration::from_millis(400),
            ..Default::default()
        },
        top_extra: format!(
            "budgets:\n  - subjects: [\"team:*\"]\n    usd: {}\n    period: monthly\n{PRICING}",
            usd(budget)
        ),
        ..Default::default()
    })
    .await;
    let key = h.key().await; // team red
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (http, url, key) = (h.http.clone(), h.url.clone(), key.clone());
            tokio::spawn(async move {
                let r = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&body5())
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let v: Value = r.json().await.unwrap();
                (status, retry, v)
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (status, retry, v) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
                assert_eq!(v["error"]["type"], "insufficient_quota", "{v}");
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("budgets[0]"),
                    "{v}"
                );
                assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
            }
            s => panic!("status {s}: {v}"),
        }
    }
    assert!((1..=5).contains(&ok), "{ok} admitted");
    assert_eq!(h.mock.request_count(), ok);
    // Keep going one at a time: spend never passes the budget.
    loop {
        let r = h.chat(&key, body5()).await;
        if r.status() == 429 {
            assert_error(r, 429, "insufficient_quota").await;
            break;
        }
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    let rows = budgets(&h.url, &h.http).await;
    let spent = spent_of(&rows, "team:red");
    assert!(spent > 0 && spent <= budget, "spent {spent} of {budget}");
    let row = rows.iter().find(|r| r["subject"] == "team:red").unwrap();
    assert_eq!(row["budget_micros"], budget);
    assert_eq!(row["reserved_micros"], 0);
    assert_eq!(row["remaining_micros"], budget - spent);
    h.stop().await;
}

#[tokio::test]
async fn every_billable_endpoint_moves_the_same_budget_on_both_surfaces() {
    let h = Harness::start_with(Opts {
        top_extra: format!(
            "budgets:\n  - subjects: [\"key:*\"]\n    usd: 1000\n    period: total\n{PRICING}"
        ),
        ..Default::default()
    })
    .await;
    let (key_id, key) = h.create_key(json!({"name": "table"})).await;
    let subject = format!("key:{key_id}");
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 5});
    let completion = json!({"model": "gpt-4o-mini", "prompt": "Hello there", "max_tokens": 5});
    let responses = json!({"model": "gpt-4o-mini", "input": "Hello there", "max_output_tokens": 5});
    let embeddings = json!({"model": "text-embedding-3-small", "input": "Hello there"});
    let image = json!({"model": "gpt-image-1", "prompt": "A portcullis at dawn"});
    let speech = json!({"model": "tts-1", "input": "Hello there", "voice": "alloy"});
    let streamed = |mut b: Value| {
        b["stream"] = json!(true);
        b
    };
    let table = [
        ("chat/completions", chat.clone()),
        ("chat/completions", streamed(chat)),
        ("completions", completion.clone()),
        ("completions", streamed(completion)),
        ("responses", responses.clone()),
        ("responses", streamed(responses)),
        ("embeddings", embeddings),
        ("images/generations", image),
        ("audio/speech", speech),
        // Multipart: the body is built below.
        ("audio/transcriptions", json!(null)),
    ];
    let mut by_path = std::collections::HashMap::new();
    for (path, body) in table {
        let mut deltas = Vec::new();
        for surface in ["/v1", "/providers/openai"] {
            let before = spent_of(&budgets(&h.url, &h.http).await, &subject);
            let req = h
                .http
                .post(format!("{}{surface}/{path}", h.url))
                .bearer_auth(&key);
            let req = if body.is_null() {
                req.multipart(
                    reqwest::multipart::Form::new()
                        .text("model", "mock-transcribe")
                        .part(
                            "file",
                            reqwest::multipart::Part::bytes(vec![7u8; 640]).file_name("a.wav"),
                        ),
                )
            } else {
                req.json(&body)
            };
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{surface}/{path}");
            let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
            resp.text().await.unwrap();
            let rec = h.usage_record(&id).await;
            if path != "audio/speech" {
                // Every answer with usage is charged what the provider reported.
                assert!(
                    rec.prompt_tokens.is_some(),
                    "{surface}/{path}: no usage read: {rec:?}"
                );
            }
            let after = spent_of(&budgets(&h.url, &h.http).await, &subject);
            assert_eq!(
                Some(after - before),
                rec.cost_micros,
                "{surface}/{path}: ledger and budget agree"
            );
            assert!(after > before, "{surface}/{path} was not charged");
            deltas.push(after - before);
        }
        assert_eq!(deltas[0], deltas[1], "{path} {body}");
        // Streamed and non-streamed, the same exchange costs the same.
        if let Some(plain) = by_path.get(path) {
            assert_eq!(*plain, deltas[0], "{path}: streamed vs not");
        }
        by_path.insert(path, deltas[0]);
    }
    h.stop().await;
}

#[tokio::test]
async fn a_daily_budget_rolls_over_at_utc_midnight() {
    let t0 = portcullis::clock::parse_time("2026-05-04T23:00:00Z").unwrap();
    let h = Harness::start_with(Opts {
        manual_clock: Some(t0),
        top_extra: format!(
            "budgets:\n  - subjects: [\"user:*\"]\n    usd: {}\n    period: daily\n{PRICING}",
            usd(est_cost(&body5()))
        ),
        ..Default::default()
    })
    .await;
    let key = h.key().await; // user alice
    assert_eq!(h.chat(&key, body5()).await.status(), 200);
    let before = h.mock.request_count();
    let resp = h.chat(&key, body5()).await;
    assert_eq!(resp.headers()["retry-after"], "3600");
    let v = assert_error(resp, 429, "insufficient_quota").await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user:alice"),
        "{v}"
    );
    assert_eq!(h.mock.request_count(), before);
    h.clock.as_ref().unwrap().set_ms(t0 + 3_600_000);
    assert_eq!(h.chat(&key, body5()).await.status(), 200);
    let rows = budgets(&h.url, &h.http).await;
    let row = rows.iter().find(|r| r["subject"] == "user:alice").unwrap();
    assert_eq!(row["period_start"], "2026-05-05T00:00:00Z");
    assert_eq!(row["period_end"], "2026-05-06T00:00:00Z");
    h.stop().await;
}

/// A local webhook receiver: every POSTed JSON body.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let (url, got, _) = failing_receiver(0).await;
    (url, got)
}

/// A receiver that answers 503 to its first `failures` calls, then 200; also
/// returns how many calls it had. Only accepted bodies are kept.
async fn failing_receiver(
    failures: usize,
) -> (
    String,
    Arc<Mutex<Vec<Value>>>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let got = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (g, c) = (got.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let (g, c) = (g.clone(), c.clone());
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < failures {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                g.lock().unwrap().push(v);
                axum::http::StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, got, calls)
}

/// Waits (up to 10 s) until `got` holds `n` alerts, then a little longer so a
/// duplicate would have arrived too.
async fn wait_for_alerts(got: &Mutex<Vec<Value>>, n: usize) -> Vec<Value> {
    for _ in 0..500 {
        if got.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    got.lock().unwrap().clone()
}

#[tokio::test]
async fn alerts_go_to_the_webhook_once_per_threshold() {
    let (hook, got) = receiver().await;
    let budget = 4 * est_cost(&body5());
    let h = Harness::start_with(Opts {
        top_extra: format!(
            "budgets:\n  - subjects: [\"team:*\"]\n    usd: {}\n    period: monthly\n    alert_at_percent: [10, 30]\n    webhook: {hook}\n{PRICING}",
            usd(budget)
        ),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    // Actual cost is under half the estimate: 10% after one request, 30% after a few.
    for _ in 0..8 {
        let r = h.chat(&key, body5()).await;
        if r.status() == 429 {
            break;
        }
        r.text().await.unwrap();
    }
    // Deliveries are asynchronous, one at a time in the order they fired.
    let alerts = wait_for_alerts(&got, 2).await;
    let thresholds: Vec<_> = alerts
        .iter()
        .map(|a| a["threshold_percent"].as_u64().unwrap())
        .collect();
    assert_eq!(thresholds, vec![10, 30], "{alerts:?}");
    assert_eq!(alerts[0]["subject"], "team:red");
    assert_eq!(alerts[0]["budget"], "budgets[0]");
    assert_eq!(alerts[0]["budget_micros"], budget);
    h.stop().await;
}

#[tokio::test]
async fn own_budgets_alert_to_the_configured_webhook_only() {
    let (hook, got) = receiver().await;
    let budget = 4 * est_cost(&body5());
    let h = Harness::start_with(Opts {
        top_extra: format!("budget_alerts:\n  webhook: {hook}\n{PRICING}"),
        ..Default::default()
    })
    .await;
    let key = h.key().await; // team red
    // The API chooses thresholds; a webhook of its own is not a field.
    let own = |extra: Value| {
        let mut b = json!({"usd": usd(budget), "period": "monthly"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "budget": b })
    };
    let refused = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/teams/red",
            Some(own(json!({"webhook": "http://169.254.169.254/steal"}))),
        )
        .await;
    assert_error(refused, 400, "invalid_request").await;
    let resp = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/teams/red",
            Some(own(json!({"alert_at_percent": [10]}))),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["budget"]["alert_at_percent"], json!([10]), "{v}");
    for _ in 0..2 {
        assert_eq!(h.chat(&key, body5()).await.status(), 200);
    }
    let alerts = wait_for_alerts(&got, 1).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["budget"], "own budget of team:red");
    assert_eq!(alerts[0]["subject"], "team:red");
    assert_eq!(alerts[0]["threshold_percent"], 10);
    assert_eq!(alerts[0]["budget_micros"], budget);
    let stats: Value = h.admin_get("/admin/limits").await;
    assert_eq!(stats["alerts_sent_total"], 1, "{stats}");
    h.stop().await;

    // Without `budget_alerts.webhook` there is nowhere to send them: 400, nothing stored.
    let h = Harness::start_with(Opts {
        top_extra: PRICING.to_owned(),
        ..Default::default()
    })
    .await;
    let resp = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/teams/red",
            Some(own(json!({"alert_at_percent": [50]}))),
        )
        .await;
    let v = assert_error(resp, 400, "invalid_request").await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("budget_alerts.webhook"), "{msg}");
    let teams: Value = h.admin_get("/admin/teams").await;
    assert_eq!(teams["data"], json!([]), "{teams}");
    h.stop().await;
}

/// A gateway whose team budget alerts at 10% to a webhook that answers its
/// first call with a 503, after two requests that cross the threshold.
async fn one_alert_after_a_503() -> (
    Harness,
    Arc<Mutex<Vec<Value>>>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let (hook, got, calls) = failing_receiver(1).await;
    let budget = 4 * est_cost(&body5());
    let h = Harness::start_with(Opts {
        top_extra: format!(
            "budget_alerts:\n  webhook: {hook}\n  alert_at_percent: [10]\nbudgets:\n  - subjects: [\"team:*\"]\n    usd: {}\n    period: monthly\n{PRICING}",
            usd(budget)
        ),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    for _ in 0..2 {
        assert_eq!(h.chat(&key, body5()).await.status(), 200);
    }
    (h, got, calls)
}

#[tokio::test]
async fn a_failing_webhook_is_retried_and_its_alert_delivered_once() {
    let (h, got, calls) = one_alert_after_a_503().await;
    // The first attempt is refused with a 503; the retry a second later is accepted.
    let alerts = wait_for_alerts(&got, 1).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["budget"], "budgets[0]", "{alerts:?}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    let stats: Value = h.admin_get("/admin/limits").await;
    assert_eq!(stats["alerts_sent_total"], 1, "{stats}");
    assert_eq!(stats["alerts_failed_total"], 0, "{stats}");
    h.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_queued_alerts() {
    // The first attempt gets a 503, so at shutdown the alert waits for its retry (1 s later).
    let (h, got, calls) = one_alert_after_a_503().await;
    for _ in 0..250 {
        if calls.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(got.lock().unwrap().is_empty());
    h.stop().await;
    // Delivered by the time shutdown returns, not after.
    let alerts = got.lock().unwrap().clone();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["threshold_percent"], 10);
}

#[tokio::test]
async fn spend_is_rebuilt_from_the_ledger_after_a_restart_and_reported_with_cost() {
    let mock = MockProvider::start("127.0.0.1:0".parse().unwrap(), MockOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let budget = 2 * est_cost(&body5());
    let yaml = format!(
        "listen: 127.0.0.1:0\ndatabase: sqlite://{db}\nadmin:\n  master_key: {MASTER}\nproviders:\n  - name: openai\n    kind: openai\n    base_url: {base}\n    api_key: {PROVIDER_KEY}\n    models: [gpt-4o-mini]\nauth:\n  lockout:\n    enabled: false\nbudgets:\n  - subjects: [\"team:*\"]\n    usd: {b}\n    period: total\n{PRICING}",
        db = dir.path().join("p.db").display(),
        base = mock.base_url(),
        b = usd(budget),
    );
    let start = || async {
        let env = |_: &str| None;
        let config = Config::from_yaml(&yaml, &env, ConfigSource::Defaults).unwrap();
        portcullis::server::spawn(config, None).await.unwrap()
    };
    let http = reqwest::Client::new();
    let gw = start().await;
    let url = gw.url();
    let key: Value = http
        .post(format!("{url}/admin/keys"))
        .bearer_auth(MASTER)
        .json(&json!({"team": "red"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let chat = |url: String| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&body5())
                .send()
                .await
                .unwrap()
        }
    };
    let mut admitted = 0;
    while chat(url.clone()).await.status() == 200 {
        admitted += 1;
    }
    assert!(admitted >= 2, "{admitted}");
    let spent = spent_of(&budgets(&url, &http).await, "team:red");
    gw.shutdown().await.unwrap();

    let gw = start().await;
    let url = gw.url();
    // Before any request, /admin/budgets reads the spend from the ledger.
    assert_eq!(spent_of(&budgets(&url, &http).await, "team:red"), spent);
    let r = chat(url.clone()).await;
    assert_error(r, 429, "insufficient_quota").await;

    // /admin/usage carries cost, also grouped by day.
    let usage: Value = http
        .get(format!("{url}/admin/usage?group_by=team"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let red = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "red")
        .unwrap()
        .clone();
    assert_eq!(red["cost_micros"], spent);
    assert_eq!(red["cost_usd"], usd(spent));
    let by_day: Value = http
        .get(format!("{url}/admin/usage?group_by=day"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = by_day["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{by_day}");
    assert_eq!(rows[0]["group"].as_str().unwrap().len(), "2026-01-01".len());
    assert_eq!(rows[0]["cost_micros"], spent);
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_usage_command_prints_cost_and_budgets_as_a_table_or_json() {
    use portcullis::cli::{AdminClientArgs, UsageArgs, run_usage};
    let h = Harness::start_with(Opts {
        top_extra: format!(
            "budgets:\n  - subjects: [\"team:*\"]\n    usd: 10\n    period: monthly\n{PRICING}"
        ),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    let resp = h.chat(&key, body5()).await;
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    resp.text().await.unwrap();
    let cost = h.usage_record(&id).await.cost_micros.unwrap();
    let client = |json: bool| AdminClientArgs {
        url: h.url.clone(),
        admin_key: Some(MASTER.into()),
        json,
    };
    let args = |group: &str, budgets: bool| UsageArgs {
        group_by: group.into(),
        since: None,
        until: None,
        budgets,
    };
    let table = run_usage(&client(false), &args("team", false))
        .await
        .unwrap();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("GROUP"), "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("red") && row.ends_with(&usd(cost)),
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&run_usage(&client(true), &args("day", false)).await.unwrap())
            .unwrap();
    assert_eq!(json["data"][0]["cost_micros"], cost);
    let budgets = run_usage(&client(false), &args("key", true)).await.unwrap();
    assert!(
        budgets.contains("budgets[0]")
            && budgets.contains("team:red")
            && budgets.contains(&usd(10_000_000 - cost)),
        "{budgets}"
    );
    h.stop().await;
}
