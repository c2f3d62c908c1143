//! Accounting, black-box: what lands in the usage ledger for completed,
//! streamed, refused and concurrent requests, and that a graceful stop keeps
//! the record of a stream still in flight.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use mock_provider::MockOptions;
use portcullis::store::{UsageGroup, UsageRecord};
use serde_json::{Value, json};

fn rid(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_owned()
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

async fn post(
    h: &Harness,
    key: &str,
    path: &str,
    request_id: &str,
    body: &Value,
) -> reqwest::Response {
    h.http
        .post(format!("{}{path}", h.url))
        .bearer_auth(key)
        .header("x-request-id", request_id)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Reads a whole SSE body and checks it ended cleanly with `[DONE]`.
async fn drain_stream(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("data: [DONE]"), "{text}");
    text
}

#[tokio::test]
async fn non_streamed_chat_is_recorded_exactly() {
    let h = Harness::start_with(Opts {
        mock: MockOptions {
            latency: Duration::from_millis(100),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (key_id, key) = h
        .create_key(json!({"name": "acct", "user": "alice", "team": "red"}))
        .await;
    let before = now_ms();
    let body = json!({
        "model": "openai/gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Hello there"}]}
        ],
        "max_completion_tokens": 7
    });
    let resp = post(&h, &key, "/v1/chat/completions", "acct-chat-1", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(rid(&resp), "acct-chat-1");
    let v: Value = resp.json().await.unwrap();
    let after = now_ms();

    // Mock formula: Σ (3 + ceil(chars / 4)) = (3 + 4) + (3 + 3); completion = 7.
    assert_eq!(v["usage"]["prompt_tokens"], 13);
    assert_eq!(v["usage"]["completion_tokens"], 7);
    let rec = h.usage_record("acct-chat-1").await;
    assert_eq!(rec.prompt_tokens, Some(13));
    assert_eq!(rec.completion_tokens, Some(7));
    assert_eq!(rec.request_id, "acct-chat-1");
    assert_eq!(rec.provider.as_deref(), Some("openai"));
    assert_eq!(rec.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(rec.endpoint.as_deref(), Some("chat"));
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.status, 200);
    assert_eq!(rec.error_code, None);
    assert_eq!(rec.key_id.as_deref(), Some(key_id.as_str()));
    assert_eq!(rec.user.as_deref(), Some("alice"));
    assert_eq!(rec.team.as_deref(), Some("red"));
    assert!(
        rec.ts >= before && rec.ts <= after,
        "{} not in [{before}, {after}]",
        rec.ts
    );
    // The mock waits 100 ms before its headers: both clocks include that.
    let ttfb = rec.ttfb_ms.expect("ttfb recorded");
    assert!(ttfb >= 100, "ttfb {ttfb}");
    assert!(
        rec.latency_ms >= ttfb,
        "latency {} < ttfb {ttfb}",
        rec.latency_ms
    );
    assert!(rec.latency_ms <= u64::try_from(after - before).unwrap() + 1);
    h.stop().await;
}

#[tokio::test]
async fn streamed_chat_records_usage_from_the_final_chunk() {
    let h = Harness::start_with(Opts {
        mock: MockOptions {
            chunk_delay: Duration::from_millis(20),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (key_id, key) = h
        .create_key(json!({"name": "s", "user": "dave", "team": "ops"}))
        .await;
    let body = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Hello there"}],
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": 5
    });
    let resp = post(&h, &key, "/v1/chat/completions", "acct-stream-1", &body).await;
    let text = drain_stream(resp).await;
    assert!(text.contains("\"completion_tokens\":5"), "{text}");
    let rec = h.usage_record("acct-stream-1").await;
    assert_eq!(rec.status, 200);
    assert_eq!(rec.prompt_tokens, Some(6));
    assert_eq!(rec.completion_tokens, Some(5));
    assert_eq!(rec.model.as_deref(), Some("gpt-4o"));
    assert_eq!(rec.endpoint.as_deref(), Some("chat"));
    assert_eq!(rec.key_id.as_deref(), Some(key_id.as_str()));
    assert_eq!(rec.user.as_deref(), Some("dave"));
    assert_eq!(rec.team.as_deref(), Some("ops"));
    let ttfb = rec.ttfb_ms.expect("ttfb recorded");
    // The body took at least 7 pauses of 20 ms after the headers.
    assert!(
        rec.latency_ms >= ttfb + 100,
        "latency {} ttfb {ttfb}",
        rec.latency_ms
    );

    // Legacy completions stream their usage the same way.
    let body = json!({
        "model": "gpt-4o-mini",
        "prompt": "Say this is a test",
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    let resp = post(&h, &key, "/v1/completions", "acct-stream-2", &body).await;
    drain_stream(resp).await;
    let rec = h.usage_record("acct-stream-2").await;
    assert_eq!(rec.endpoint.as_deref(), Some("completions"));
    assert_eq!(rec.prompt_tokens, Some(5));
    assert_eq!(rec.completion_tokens, Some(20));
    h.stop().await;
}

#[tokio::test]
async fn embeddings_and_responses_record_usage() {
    let h = Harness::start().await;
    let key = h.key().await;

    let body = json!({"model": "text-embedding-3-small", "input": ["hello world", "abc"]});
    let resp = post(&h, &key, "/v1/embeddings", "acct-emb-1", &body).await;
    assert_eq!(resp.status(), 200);
    let rec = h.usage_record("acct-emb-1").await;
    assert_eq!(rec.status, 200);
    assert_eq!(rec.endpoint.as_deref(), Some("embeddings"));
    assert_eq!(rec.model.as_deref(), Some("text-embedding-3-small"));
    // ceil(11 / 4) + ceil(3 / 4); embeddings have no completion.
    assert_eq!(rec.prompt_tokens, Some(4));
    assert!(matches!(rec.completion_tokens, None | Some(0)));

    // Responses: instructions count as one message, then the input.
    let body = json!({
        "model": "gpt-4o",
        "instructions": "Be brief",
        "input": "Hello there",
        "max_output_tokens": 9
    });
    let resp = post(&h, &key, "/v1/responses", "acct-resp-1", &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["input_tokens"], 11);
    let rec = h.usage_record("acct-resp-1").await;
    assert_eq!(rec.endpoint.as_deref(), Some("responses"));
    assert_eq!(rec.prompt_tokens, Some(11));
    assert_eq!(rec.completion_tokens, Some(9));

    // Streamed responses: usage from the `response.completed` event.
    let mut body = body;
    body["stream"] = json!(true);
    body["max_output_tokens"] = json!(4);
    let resp = post(&h, &key, "/v1/responses", "acct-resp-2", &body).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("response.completed"), "{text}");
    let rec = h.usage_record("acct-resp-2").await;
    assert_eq!(rec.status, 200);
    assert_eq!(rec.prompt_tokens, Some(11));
    assert_eq!(rec.completion_tokens, Some(4));
    h.stop().await;
}

#[tokio::test]
async fn responses_without_usage_are_still_recorded() {
    let h = Harness::start().await;
    let key = h.key().await;
    let resp = post(
        &h,
        &key,
        "/v1/chat/completions",
        "acct-nousage-1",
        &chat_body("mock-no-usage"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v.get("usage").is_none());
    let body = json!({
        "model": "mock-no-usage",
        "messages": [{"role": "user", "content": "Hello there"}],
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    let resp = post(&h, &key, "/v1/chat/completions", "acct-nousage-2", &body).await;
    drain_stream(resp).await;
    for id in ["acct-nousage-1", "acct-nousage-2"] {
        let rec = h.usage_record(id).await;
        assert_eq!(rec.status, 200, "{id}");
        assert_eq!(rec.model.as_deref(), Some("mock-no-usage"), "{id}");
        assert_eq!(rec.prompt_tokens, None, "{id}");
        assert_eq!(rec.completion_tokens, None, "{id}");
        assert_eq!(rec.error_code, None, "{id}");
    }
    h.stop().await;
}

#[tokio::test]
async fn refusals_after_authentication_are_recorded_and_401s_are_not() {
    let h = Harness::start_with(Opts {
        top_extra: "limits:\n  max_body_bytes: 1000\n".into(),
        ..Default::default()
    })
    .await;
    let (key_id, key) = h
        .create_key(json!({"name": "r", "user": "erin", "team": "blue", "models": ["gpt-4o*"], "endpoints": ["chat", "embeddings"]}))
        .await;

    let big = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x".repeat(2000)}]
    });
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "ref-403-model",
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "x"}),
            403,
            "model_not_allowed",
        ),
        (
            "ref-403-endpoint",
            "/v1/responses",
            json!({"model": "gpt-4o", "input": "x"}),
            403,
            "endpoint_not_allowed",
        ),
        (
            "ref-404-model",
            "/v1/chat/completions",
            chat_body("no-such-model"),
            404,
            "model_not_found",
        ),
        (
            "ref-404-provider",
            "/providers/nope/chat/completions",
            chat_body("gpt-4o-mini"),
            404,
            "not_found",
        ),
        (
            "ref-413",
            "/v1/chat/completions",
            big,
            413,
            "request_too_large",
        ),
    ];
    for (id, path, body, status, code) in &cases {
        let resp = post(&h, &key, path, id, body).await;
        assert_error(resp, *status, code).await;
        let rec = h.usage_record(id).await;
        assert_eq!(rec.status, *status, "{id}");
        assert_eq!(rec.error_code.as_deref(), Some(*code), "{id}");
        assert_eq!(rec.key_id.as_deref(), Some(key_id.as_str()), "{id}");
        assert_eq!(rec.user.as_deref(), Some("erin"), "{id}");
        assert_eq!(rec.team.as_deref(), Some("blue"), "{id}");
        assert_eq!(rec.prompt_tokens, None, "{id}");
    }
    let rec = h.usage_record("ref-403-model").await;
    assert_eq!(rec.model.as_deref(), Some("text-embedding-3-small"));
    assert_eq!(rec.endpoint.as_deref(), Some("embeddings"));
    assert_eq!(rec.provider.as_deref(), Some("openai"));
    let rec = h.usage_record("ref-403-endpoint").await;
    assert_eq!(rec.endpoint.as_deref(), Some("responses"));

    // 401s: no key, a garbage key, a revoked key.
    let (revoked_id, revoked) = h.create_key(json!({"name": "gone"})).await;
    let resp = h
        .http
        .delete(format!("{}/admin/keys/{revoked_id}", h.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    for (id, auth) in [
        ("unauth-none", None),
        ("unauth-garbage", Some("pcs_not-a-real-key")),
        ("unauth-revoked", Some(revoked.as_str())),
    ] {
        let mut req = h
            .http
            .post(format!("{}/v1/chat/completions", h.url))
            .header("x-request-id", id)
            .json(&chat_body("gpt-4o-mini"));
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        assert_error(req.send().await.unwrap(), 401, "invalid_api_key").await;
    }
    // A request after them is in the ledger, so they would be by now too.
    let resp = post(
        &h,
        &key,
        "/v1/chat/completions",
        "after-401s",
        &chat_body("gpt-4o-mini"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    h.usage_record("after-401s").await;
    for id in ["unauth-none", "unauth-garbage", "unauth-revoked"] {
        let rows = h.gw.state.store.usage_by_request(id).await.unwrap();
        assert!(rows.is_empty(), "{id} was recorded: {rows:?}");
    }
    assert_eq!(h.mock.request_count(), 1);
    h.stop().await;
}

/// Stops the gateway gracefully, then reads the ledger back from the SQLite
/// file. The temp dir (and the mock) are handed back so they outlive the check.
async fn stop_and_reopen(
    h: Harness,
) -> (
    portcullis::store::SharedStore,
    tempfile::TempDir,
    mock_provider::MockProvider,
) {
    let Harness { mock, gw, dir, .. } = h;
    gw.shutdown().await.unwrap();
    let path = dir.path().join("portcullis.db");
    let store = portcullis::store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    (store, dir, mock)
}

#[tokio::test]
async fn concurrent_requests_are_each_recorded_exactly_once() {
    const N: usize = 50;
    let h = Harness::start().await;
    let (key_id, key) = h.create_key(json!({"name": "many"})).await;
    let streamed = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hello there"}],
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    let plain = chat_body("gpt-4o-mini");
    let calls = (0..N).map(|i| {
        let id = format!("many-{i}");
        let body = if i % 2 == 0 { &streamed } else { &plain };
        let (h, key) = (&h, &key);
        async move {
            let resp = post(h, key, "/v1/chat/completions", &id, body).await;
            assert_eq!(resp.status(), 200, "{id}");
            assert_eq!(rid(&resp), id);
            resp.bytes().await.unwrap();
        }
    });
    futures_util::future::join_all(calls).await;
    for i in 0..N {
        h.usage_record(&format!("many-{i}")).await;
    }
    assert_eq!(h.mock.request_count(), N);

    // After a graceful stop (which flushes everything), each id is there once.
    let (store, _dir, _rest) = stop_and_reopen(h).await;
    for i in 0..N {
        let rows: Vec<UsageRecord> = store.usage_by_request(&format!("many-{i}")).await.unwrap();
        assert_eq!(rows.len(), 1, "many-{i}: {rows:?}");
        assert_eq!(rows[0].status, 200);
        assert_eq!(rows[0].prompt_tokens, Some(6));
        assert_eq!(rows[0].completion_tokens, Some(20));
    }
    let summary = store
        .usage_summary(UsageGroup::Key, None, None, None)
        .await
        .unwrap();
    let mine = summary
        .iter()
        .find(|r| r.group.as_deref() == Some(key_id.as_str()))
        .unwrap_or_else(|| panic!("no row for the key: {summary:?}"));
    assert_eq!(mine.requests, i64::try_from(N).unwrap());
    assert_eq!(mine.prompt_tokens, 6 * i64::try_from(N).unwrap());
    assert_eq!(mine.completion_tokens, 20 * i64::try_from(N).unwrap());
    assert_eq!(mine.errors, 0);
}

#[tokio::test]
async fn graceful_stop_lets_an_in_flight_stream_finish_and_keeps_its_record() {
    use futures_util::StreamExt;
    // 20 content chunks 100 ms apart: the stream is still running when the stop begins.
    let h = Harness::start_with(Opts {
        mock: MockOptions {
            chunk_delay: Duration::from_millis(100),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hello there"}],
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    let resp = post(&h, &key, "/v1/chat/completions", "inflight-1", &body).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("\"content\":\"mock\"") {
        text.push_str(&String::from_utf8_lossy(
            &stream.next().await.unwrap().unwrap(),
        ));
    }
    let url = h.url.clone();

    // Stop while the stream is running, and keep reading it meanwhile.
    let reader = tokio::spawn(async move {
        while let Some(b) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(
                &b.expect("stream broken by the stop"),
            ));
        }
        text
    });
    let (store, _dir, _rest) = stop_and_reopen(h).await;
    let text = reader.await.unwrap();
    assert!(text.contains("data: [DONE]"), "stream cut short: {text}");
    assert_eq!(text.matches("\"content\":\" mock\"").count(), 19);

    // The record of the finished stream made it to disk before the stop returned.
    let rows = store.usage_by_request("inflight-1").await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, 200);
    assert_eq!(rows[0].prompt_tokens, Some(6));
    assert_eq!(rows[0].completion_tokens, Some(20));

    // And the gateway no longer accepts connections.
    let refused = reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(refused.is_err(), "still serving after stop: {refused:?}");
}
