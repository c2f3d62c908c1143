//! Limits, black-box: request rates (GCRA, exact `Retry-After`), token
//! reservations, concurrency caps, the `x-ratelimit-*` headers and stream
//! usage accounting, through the real gateway and the mock provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use mock_provider::MockOptions;
use serde_json::{Value, json};

const T0: i64 = 1_800_000_000_000;

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

fn rid(resp: &reqwest::Response) -> String {
    header(resp, "x-request-id").unwrap().to_owned()
}

/// A 429 from the gateway: OpenAI-shaped, `Retry-After`, and nothing reached the provider.
/// Takes the request unsent, so the provider's count is read before it goes out.
async fn assert_refused(
    h: &Harness,
    send: impl std::future::Future<Output = reqwest::Response>,
    code: &str,
    retry_after: &str,
    mentions: &str,
) -> (reqwest::header::HeaderMap, Value) {
    let before = h.mock.request_count();
    let resp = send.await;
    let headers = resp.headers().clone();
    assert_eq!(
        header(&resp, "retry-after"),
        Some(retry_after),
        "Retry-After"
    );
    let v = assert_error(resp, 429, code).await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(mentions), "{msg}");
    assert_eq!(h.mock.request_count(), before, "the provider was called");
    (headers, v)
}

async fn limited(top: &str) -> Harness {
    Harness::start_with(Opts {
        manual_clock: Some(T0),
        top_extra: top.to_owned(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn request_rate_admits_the_limit_then_answers_with_an_exact_retry_after() {
    let h = limited("limits:\n  defaults:\n    key: {requests_per_minute: 3}\n").await;
    let key = h.key().await;
    let clock = h.clock.clone().unwrap();
    for remaining in ["2", "1", "0"] {
        let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(
            header(&resp, "x-ratelimit-remaining-requests"),
            Some(remaining)
        );
    }
    assert_eq!(h.mock.request_count(), 3);
    let (headers, v) = assert_refused(
        &h,
        h.chat(&key, chat_body("gpt-4o-mini")),
        "rate_limit_exceeded",
        "20",
        "limits.defaults.key.requests_per_minute",
    )
    .await;
    assert_eq!(headers["x-ratelimit-limit-requests"], "3");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert_eq!(headers["x-ratelimit-reset-requests"], "20s");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // One interval later exactly one more fits; a millisecond earlier none does.
    clock.advance_ms(19_999);
    assert_refused(
        &h,
        h.chat(&key, chat_body("gpt-4o-mini")),
        "rate_limit_exceeded",
        "1",
        "3 requests per minute",
    )
    .await;
    clock.advance_ms(1);
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 429);
    // Another key has its own bucket.
    let other = h.key().await;
    assert_eq!(h.chat(&other, chat_body("gpt-4o-mini")).await.status(), 200);
    assert_eq!(h.mock.request_count(), 5);
    h.stop().await;
}

#[tokio::test]
async fn every_request_unit_admits_its_limit_at_the_window_edge() {
    for (unit, period_ms) in [
        ("requests_per_second", 1_000i64),
        ("requests_per_minute", 60_000),
        ("requests_per_hour", 3_600_000),
        ("requests_per_day", 86_400_000),
        ("requests_per_month", 30 * 86_400_000),
    ] {
        let h = limited(&format!("limits:\n  defaults:\n    user: {{{unit}: 2}}\n")).await;
        let key = h.key().await; // user alice
        let clock = h.clock.clone().unwrap();
        // Move to just before a period edge: a fixed window would refill at the edge.
        clock.set_ms(T0 - T0 % period_ms + period_ms - 1);
        let ok = |s: u16| s == 200;
        let mut admitted = 0;
        for _ in 0..4 {
            admitted += usize::from(ok(h
                .chat(&key, chat_body("gpt-4o-mini"))
                .await
                .status()
                .as_u16()));
        }
        assert_eq!(admitted, 2, "{unit}");
        clock.advance_ms(1); // the edge
        let want = ((period_ms / 2 - 1) + 999) / 1000;
        assert_refused(
            &h,
            h.chat(&key, chat_body("gpt-4o-mini")),
            "rate_limit_exceeded",
            &want.max(1).to_string(),
            unit,
        )
        .await;
        clock.advance_ms(period_ms / 2 - 1);
        assert_eq!(
            h.chat(&key, chat_body("gpt-4o-mini")).await.status(),
            200,
            "{unit}"
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn token_limits_reserve_the_estimate_and_settle_the_usage() {
    let h = limited(
        "limits:\n  default_max_tokens: 100\n  defaults:\n    user: {tokens_per_minute: 1000}\n",
    )
    .await;
    let key = h.key().await;
    let body = chat_body("gpt-4o-mini");
    let est_prompt = serde_json::to_vec(&body).unwrap().len() as u64 / 4;
    let resp = h.chat(&key, body.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-limit-tokens"), Some("1000"));
    let reserved = est_prompt + 100;
    assert_eq!(
        header(&resp, "x-ratelimit-remaining-tokens"),
        Some((1000 - reserved).to_string().as_str())
    );
    let id = rid(&resp);
    let v: Value = resp.json().await.unwrap();
    let used = v["usage"]["total_tokens"].as_u64().unwrap();
    // default_max_tokens was sent upstream.
    let sent = h.mock.requests().last().unwrap().json().unwrap();
    assert_eq!(sent["max_completion_tokens"], 100);
    h.usage_record(&id).await;
    // The second request sees the first settled: only its real usage stays taken.
    let resp = h.chat(&key, body.clone()).await;
    assert_eq!(
        header(&resp, "x-ratelimit-remaining-tokens"),
        Some((1000 - used - reserved).to_string().as_str())
    );
    // A request that cannot fit on its own is refused before anything is sent.
    let mut big = body.clone();
    big["max_tokens"] = json!(5000);
    assert_refused(
        &h,
        h.chat(&key, big),
        "rate_limit_exceeded",
        "60",
        "Request too large",
    )
    .await;
    h.stop().await;
}

#[tokio::test]
async fn fifty_parallel_requests_never_exceed_a_token_limit() {
    let h = limited(
        "limits:\n  default_max_tokens: 20\n  defaults:\n    team: {tokens_per_day: 250}\n",
    )
    .await;
    let key = h.key().await;
    let body = chat_body("gpt-4o-mini");
    let est = serde_json::to_vec(&body).unwrap().len() as u64 / 4 + 20;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (http, url, key, body) = (h.http.clone(), h.url.clone(), key.clone(), body.clone());
            tokio::spawn(async move {
                http.post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == 200 || s == 429, "{s}");
        ok += usize::from(s == 200);
    }
    // At most what fits by estimate; settled usage is smaller, so later requests may fit again.
    assert!(
        ok as u64 <= 250 / est && ok >= 1,
        "{ok} admitted, estimate {est}"
    );
    assert_eq!(h.mock.request_count(), ok);
    h.stop().await;
}

#[tokio::test]
async fn concurrency_caps_are_released_on_completion_error_and_disconnect() {
    let h = Harness::start_with(Opts {
        mock: MockOptions {
            chunk_delay: Duration::from_millis(50),
            ..Default::default()
        },
        top_extra: "limits:\n  defaults:\n    user: {concurrent_requests: 1}\n".into(),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    let mut stream_body = chat_body("gpt-4o-mini");
    stream_body["stream"] = json!(true);
    // Completion: a stream holds the slot until it ends.
    let resp = h.chat(&key, stream_body.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_refused(
        &h,
        h.chat(&key, chat_body("gpt-4o-mini")),
        "rate_limit_exceeded",
        "1",
        "1 concurrent requests",
    )
    .await;
    resp.text().await.unwrap();
    wait_until_admitted(&h, &key).await;
    // Error: an upstream failure releases it.
    assert_eq!(
        h.chat(&key, chat_body("mock-error-500")).await.status(),
        500
    );
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    // Disconnect: dropping a stream half-way releases it.
    let resp = h.chat(&key, stream_body.clone()).await;
    let mut s = resp.bytes_stream();
    s.next().await.unwrap().unwrap();
    drop(s);
    wait_until_admitted(&h, &key).await;
    h.stop().await;
}

async fn wait_until_admitted(h: &Harness, key: &str) {
    for _ in 0..100 {
        if h.chat(key, chat_body("gpt-4o-mini")).await.status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the concurrency slot was never released");
}

#[tokio::test]
async fn rules_limit_matching_subjects_and_models_only() {
    let h = limited(
        "limits:\n  rules:\n    - subjects: [\"team:red\"]\n      models: [\"openai/gpt-4o*\"]\n      requests_per_day: 1\n",
    )
    .await;
    let key = h.key().await; // team red
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    assert_refused(
        &h,
        h.chat(&key, chat_body("gpt-4o")),
        "rate_limit_exceeded",
        "86400",
        "limits.rules[0].requests_per_day",
    )
    .await;
    // Another model is not covered; another team is not covered.
    let resp = h
        .http
        .post(format!("{}/v1/embeddings", h.url))
        .bearer_auth(&key)
        .json(&json!({"model": "text-embedding-3-small", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, blue) = h.create_key(json!({"team": "blue"})).await;
    assert_eq!(h.chat(&blue, chat_body("gpt-4o")).await.status(), 200);
    h.stop().await;
}

/// The injected usage request: the provider is asked, the client never sees the chunk.
#[tokio::test]
async fn the_injected_usage_chunk_never_reaches_a_client_that_did_not_ask() {
    let h = Harness::start().await;
    let key = h.key().await;
    let mut body = chat_body("gpt-4o-mini");
    body["stream"] = json!(true);
    let resp = h.chat(&key, body.clone()).await;
    let id = rid(&resp);
    let text = resp.text().await.unwrap();
    assert!(text.contains("data: [DONE]"), "{text}");
    assert!(!text.contains("\"usage\":{"), "{text}");
    let sent = h.mock.requests().last().unwrap().json().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let streamed = h.usage_record(&id).await;
    assert!(streamed.completion_tokens.is_some());

    // A client that asked gets the chunk, and the same accounting.
    body["stream_options"] = json!({"include_usage": true});
    let resp = h.chat(&key, body.clone()).await;
    let id2 = rid(&resp);
    let text = resp.text().await.unwrap();
    assert!(text.contains("\"usage\":{"), "{text}");
    let asked = h.usage_record(&id2).await;

    // Non-streamed: the same exchange, the same tokens and cost.
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    let id3 = rid(&resp);
    resp.text().await.unwrap();
    let plain = h.usage_record(&id3).await;
    for r in [&streamed, &asked] {
        assert_eq!(r.prompt_tokens, plain.prompt_tokens);
        assert_eq!(r.completion_tokens, plain.completion_tokens);
        assert_eq!(r.cost_micros, plain.cost_micros);
    }
    assert!(
        plain.cost_micros.unwrap() > 0,
        "gpt-4o-mini is in the built-in price table"
    );
    h.stop().await;
}

#[tokio::test]
async fn missing_usage_and_client_disconnects_are_charged_the_reservation() {
    let h = Harness::start_with(Opts {
        mock: MockOptions { chunk_delay: Duration::from_millis(30), ..Default::default() },
        top_extra: "limits:\n  default_max_tokens: 1000\n  defaults:\n    user: {tokens_per_day: 100000}\npricing:\n  openai/mock-no-usage: {input: 1000, output: 1000}\n  openai/gpt-4o-mini: {input: 1000, output: 1000}\n".into(),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    let body = chat_body("mock-no-usage");
    let est_prompt = serde_json::to_vec(&body).unwrap().len() as i64 / 4;
    let resp = h.chat(&key, body).await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    resp.text().await.unwrap();
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.prompt_tokens, None);
    // $1000 per million tokens = 1000 µ$ per token, for the reserved prompt + output.
    assert_eq!(rec.cost_micros, Some((est_prompt + 1000) * 1000));
    let stats: Value = h.admin_get("/admin/limits").await;
    assert_eq!(stats["usage_unreported_total"], 1, "{stats}");

    // A client that leaves mid-stream is charged the reservation too.
    let mut body = chat_body("gpt-4o-mini");
    body["stream"] = json!(true);
    let est_prompt = serde_json::to_vec(&body).unwrap().len() as i64 / 4;
    let resp = h.chat(&key, body).await;
    let id = rid(&resp);
    let mut s = resp.bytes_stream();
    s.next().await.unwrap().unwrap();
    drop(s);
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 499);
    assert_eq!(rec.cost_micros, Some((est_prompt + 1000) * 1000));
    h.stop().await;
}

#[tokio::test]
async fn limits_config_errors_name_their_field() {
    let env = |_: &str| None;
    let y = "limits:\n  defaults:\n    user: {requests_per_minute: 0}\n  rules:\n    - subjects: [\"nope\"]\n      models: [\"gpt-4o\"]\n      tokens_per_day: 5\n    - subjects: [\"*\"]\n  default_max_tokens: 0\nbudgets:\n  - subjects: [\"team:*\"]\n    usd: 0\n    period: monthly\n    alert_at_percent: [80]\npricing:\n  gpt-4o: {input: -1}\n";
    let e =
        portcullis::config::Config::from_yaml(y, &env, portcullis::config::ConfigSource::Defaults)
            .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("line"),
        "negative price is refused by the parser: {text}"
    );
    let y = y.replace("  gpt-4o: {input: -1}\n", "  gpt-4o: {input: 1.5}\n");
    let e =
        portcullis::config::Config::from_yaml(&y, &env, portcullis::config::ConfigSource::Defaults)
            .unwrap_err();
    let locs: Vec<_> = e.errors.iter().map(|e| e.location.as_str()).collect();
    for want in [
        "limits.defaults.user.requests_per_minute",
        "limits.rules[0].subjects[0]",
        "limits.rules[0].models[0]",
        "limits.rules[1]",
        "limits.default_max_tokens",
        "budgets[0].usd",
        "budgets[0].webhook",
    ] {
        assert!(locs.contains(&want), "{want} missing from {locs:?}");
    }
    let e = portcullis::config::Config::from_yaml(
        "limits:\n  defaults:\n    user: {requests_per_fortnight: 1}\n",
        &env,
        portcullis::config::ConfigSource::Defaults,
    )
    .unwrap_err();
    assert!(e.to_string().contains("requests_per_fortnight"), "{e}");
}

#[tokio::test]
async fn keys_and_teams_carry_their_own_limits_and_budget() {
    let h = limited("limits:\n  defaults:\n    key: {requests_per_minute: 100}\npricing:\n  openai/gpt-4o-mini: {input: 1000, output: 1000}\n").await;
    let (id, key) = h
        .create_key(json!({"team": "red", "limits": {"requests_per_minute": 1}}))
        .await;
    let shown: Value = h.admin_get(&format!("/admin/keys/{id}")).await;
    assert_eq!(shown["limits"], json!({"requests_per_minute": 1}));
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    assert_refused(
        &h,
        h.chat(&key, chat_body("gpt-4o-mini")),
        "rate_limit_exceeded",
        "60",
        &format!("limits of key:{id}"),
    )
    .await;
    // Removing them falls back to the defaults.
    let patched = h
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/keys/{id}"),
            Some(json!({"limits": null})),
        )
        .await;
    assert_eq!(patched.status(), 200);
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    // Invalid values are 400.
    let bad = h
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/keys/{id}"),
            Some(json!({"limits": {"requests_per_minute": 0}})),
        )
        .await;
    assert_error(bad, 400, "invalid_request").await;

    // A team's own budget.
    let resp = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/teams/red",
            Some(json!({"budget": {"usd": "0.001", "period": "daily"}})),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["budget"], json!({"usd": "0.001000", "period": "daily"}));
    assert_refused(
        &h,
        h.chat(&key, chat_body("gpt-4o-mini")),
        "insufficient_quota",
        "57600",
        "own budget of team:red",
    )
    .await;
    let teams: Value = h.admin_get("/admin/teams").await;
    assert_eq!(teams["data"][0]["id"], "red", "{teams}");
    let audit: Value = h.admin_get("/admin/audit").await;
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "team_updated" && e["target"] == "team:red"),
        "{audit}"
    );
    let b: Value = h.admin_get("/admin/budgets").await;
    assert_eq!(b["data"][0]["budget"], "own budget of team:red", "{b}");
    assert_eq!(b["data"][0]["budget_micros"], 1000, "{b}");
    let del = h
        .admin(reqwest::Method::DELETE, "/admin/teams/red", None)
        .await;
    assert_eq!(del.status(), 200);
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn every_token_unit_admits_its_limit_at_the_window_edge() {
    // `mock-no-usage` reports nothing, so each request is charged exactly its reservation.
    let body = chat_body("mock-no-usage");
    let est = serde_json::to_vec(&body).unwrap().len() as i64 / 4 + 10;
    for (unit, period_ms) in [
        ("tokens_per_minute", 60_000i64),
        ("tokens_per_hour", 3_600_000),
        ("tokens_per_day", 86_400_000),
        ("tokens_per_month", 30 * 86_400_000),
    ] {
        let h = limited(&format!(
            "limits:\n  default_max_tokens: 10\n  defaults:\n    user: {{{unit}: {}}}\n",
            2 * est
        ))
        .await;
        let key = h.key().await;
        let clock = h.clock.clone().unwrap();
        clock.set_ms(T0 - T0 % period_ms + period_ms - 1);
        let mut admitted = 0;
        for _ in 0..4 {
            let r = h.chat(&key, body.clone()).await;
            admitted += usize::from(r.status() == 200);
            r.text().await.unwrap();
        }
        assert_eq!(admitted, 2, "{unit}");
        clock.advance_ms(1);
        let want = (period_ms / 2 - 1 + 999) / 1000;
        assert_refused(
            &h,
            h.chat(&key, body.clone()),
            "rate_limit_exceeded",
            &want.to_string(),
            unit,
        )
        .await;
        clock.advance_ms(period_ms / 2 - 1);
        assert_eq!(h.chat(&key, body.clone()).await.status(), 200, "{unit}");
        h.stop().await;
    }
}

#[tokio::test]
async fn a_provider_dying_mid_stream_is_charged_the_reservation_and_frees_the_slot() {
    let h = limited(
        "limits:\n  default_max_tokens: 50\n  defaults:\n    user: {concurrent_requests: 1, tokens_per_day: 100000}\npricing:\n  openai/mock-die-mid-stream: {input: 1000, output: 1000}\n",
    )
    .await;
    let key = h.key().await;
    let mut body = chat_body("mock-die-mid-stream");
    body["stream"] = json!(true);
    let est = serde_json::to_vec(&body).unwrap().len() as i64 / 4 + 50;
    let resp = h.chat(&key, body).await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    let _ = resp.text().await;
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 502);
    assert_eq!(rec.cost_micros, Some(est * 1000));
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn a_user_named_by_keys_can_get_own_limits() {
    let h = limited("").await;
    let key = h.key().await; // user alice
    let resp = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/users/alice",
            Some(json!({"limits": {"requests_per_hour": 1}})),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["limits"], json!({"requests_per_hour": 1}), "{v}");
    assert_eq!(h.chat(&key, chat_body("gpt-4o-mini")).await.status(), 200);
    assert_refused(
        &h,
        h.chat(&key, chat_body("gpt-4o-mini")),
        "rate_limit_exceeded",
        "3600",
        "limits of user:alice",
    )
    .await;
    // Disabling an unknown user is still 404; bad values are 400 and change nothing.
    let resp = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/users/nobody",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_error(resp, 404, "not_found").await;
    let resp = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/users/alice",
            Some(json!({"budget": {"usd": 0, "period": "daily"}})),
        )
        .await;
    assert_error(resp, 400, "invalid_request").await;
    h.stop().await;
}

#[tokio::test]
async fn a_provider_with_stream_usage_off_gets_the_stream_as_the_client_sent_it() {
    let h = Harness::start_with(Opts {
        provider_extra: "    stream_usage: false\n".into(),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    let mut body = chat_body("gpt-4o-mini");
    body["stream"] = json!(true);
    let resp = h.chat(&key, body).await;
    resp.text().await.unwrap();
    let sent = h.mock.requests().last().unwrap().json().unwrap();
    assert!(sent.get("stream_options").is_none(), "{sent}");
    h.stop().await;
}

#[tokio::test]
async fn limits_budgets_and_prices_change_on_reload() {
    let g = FileGateway::start(
        "",
        "limits:\n  defaults:\n    key: {requests_per_minute: 100}\n",
    )
    .await;
    let (_, key) = g.create_key(json!({"team": "red"})).await;
    let chat = || async {
        g.http
            .post(format!("{}/v1/chat/completions", g.url))
            .bearer_auth(&key)
            .json(&chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(chat().await.status(), 200);
    }

    // A tighter rate: a fresh bucket of the new size, in force at once.
    reload(
        &g,
        "limits:\n  defaults:\n    key: {requests_per_minute: 2}\n",
    )
    .await;
    for _ in 0..2 {
        let r = chat().await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), Some("2"));
    }
    refused(
        &g,
        chat(),
        "rate_limit_exceeded",
        "limits.defaults.key.requests_per_minute",
    )
    .await;

    // A budget and a price: cheap fits, then a price rise no longer fits.
    let cheap = "budgets:\n  - subjects: [\"team:*\"]\n    usd: 1\n    period: monthly\npricing:\n  openai/gpt-4o-mini: {input: 1, output: 1}\n";
    reload(&g, cheap).await;
    assert_eq!(chat().await.status(), 200);
    reload(&g, "budgets:\n  - subjects: [\"team:*\"]\n    usd: 1\n    period: monthly\npricing:\n  openai/gpt-4o-mini: {input: 100000000, output: 100000000}\n").await;
    refused(&g, chat(), "insufficient_quota", "budgets[0]").await;
    // And without limits or budgets, nothing refuses.
    reload(&g, "").await;
    for _ in 0..5 {
        assert_eq!(chat().await.status(), 200);
    }
    // An own budget with thresholds, then a file without `budget_alerts.webhook`:
    // the reload says its alerts have nowhere to go.
    reload(&g, "budget_alerts:\n  webhook: http://127.0.0.1:9/hook\n").await;
    let r = g
        .http
        .patch(format!("{}/admin/teams/red", g.url))
        .bearer_auth(MASTER)
        .json(&json!({"budget": {"usd": 100, "period": "monthly", "alert_at_percent": [50]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    g.rewrite("", "");
    let v: Value = g.reload(MASTER).await.json().await.unwrap();
    assert_eq!(
        v["warnings"],
        json!([
            "the own budget of team:red has alert thresholds, but budget_alerts.webhook is not set: its alerts are not sent"
        ]),
        "{v}"
    );
    // What still needs a restart says so.
    reload_needs_restart(&g).await;
}

/// A 429 with `code` whose message names `mentions`, and nothing reached the provider.
/// (`send` is awaited only after the provider's count is read.)
async fn refused(
    g: &FileGateway,
    send: impl std::future::Future<Output = reqwest::Response>,
    code: &str,
    mentions: &str,
) {
    let before = g.mock.request_count();
    let v = assert_error(send.await, 429, code).await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(mentions), "{msg}");
    assert_eq!(g.mock.request_count(), before);
}

/// Rewrites the file and reloads: 200, nothing waiting for a restart.
async fn reload(g: &FileGateway, top: &str) {
    g.rewrite("", top);
    let r = g.reload(MASTER).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["restart_needed_for"], json!([]), "{v}");
}

async fn reload_needs_restart(g: &FileGateway) {
    g.rewrite("", "limits:\n  max_tracked_subjects: 5000\n");
    let v: Value = g.reload(MASTER).await.json().await.unwrap();
    assert_eq!(
        v["restart_needed_for"],
        json!(["limits.max_tracked_subjects"]),
        "{v}"
    );
}
