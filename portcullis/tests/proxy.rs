//! Proxying, black-box: body limits, JSON checks, header hygiene, request ids,
//! unbuffered streaming, client disconnects, upstream failures and timeouts,
//! upstream error pass-through, files, and h2c.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use mock_provider::MockOptions;
use serde_json::{Value, json};

fn rid(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_owned()
}

fn limited(max: usize) -> Opts {
    Opts {
        top_extra: format!("limits:\n  max_body_bytes: {max}\n"),
        ..Default::default()
    }
}

fn slow_stream(chunk_delay_ms: u64) -> Opts {
    Opts {
        mock: MockOptions {
            chunk_delay: Duration::from_millis(chunk_delay_ms),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn stream_body(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Hello there"}],
        "stream": true,
        "stream_options": {"include_usage": true}
    })
}

/// A chat body whose serialised length is exactly `len` bytes.
fn chat_body_of_len(len: usize) -> Vec<u8> {
    let base = serde_json::to_vec(&json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": ""}]
    }))
    .unwrap();
    assert!(base.len() <= len);
    let body = serde_json::to_vec(&json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "a".repeat(len - base.len())}]
    }))
    .unwrap();
    assert_eq!(body.len(), len);
    body
}

/// One server-sent event as the client received it.
struct Event {
    data: String,
}

/// Reads SSE events off a streamed response. Returns the events read and how
/// the body ended: `Ok(())` for a clean end, `Err(msg)` for a broken body.
/// Stops early (leaving the body unread) after `stop_after` content events.
async fn read_events(
    resp: reqwest::Response,
    stop_after: Option<usize>,
) -> (Vec<Event>, Result<(), String>) {
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::<u8>::new();
    let mut events = Vec::new();
    let mut content = 0usize;
    loop {
        match stream.next().await {
            None => return (events, Ok(())),
            Some(Err(e)) => return (events, Err(format!("{e:?}"))),
            Some(Ok(bytes)) => {
                buf.extend_from_slice(&bytes);
                while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let raw: Vec<u8> = buf.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    let data = text
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join("\n");
                    if data.contains("\"content\":\"") && !data.contains("\"content\":\"\"") {
                        content += 1;
                    }
                    events.push(Event { data });
                }
                if stop_after.is_some_and(|n| content >= n) {
                    drop(stream);
                    return (events, Ok(()));
                }
            }
        }
    }
}

fn content_events(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| e.data.contains("\"content\":\"") && !e.data.contains("\"content\":\"\""))
        .count()
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_are_not_forwarded() {
    let h = Harness::start_with(limited(1000)).await;
    let key = h.key().await;

    // At the limit: forwarded.
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(chat_body_of_len(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.request_count(), 1);

    // One byte over, with a content-length.
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(chat_body_of_len(1001))
        .send()
        .await
        .unwrap();
    let id = rid(&resp);
    assert_error(resp, 413, "request_too_large").await;
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 413);
    assert_eq!(rec.error_code.as_deref(), Some("request_too_large"));

    // Chunked, no content-length: small enough passes, too large is refused.
    let chunked = |body: Vec<u8>| {
        let parts: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(300)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(parts))
    };
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(chunked(chat_body_of_len(900)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a small chunked body must pass");
    assert_eq!(h.mock.request_count(), 2);
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(chunked(chat_body_of_len(2000)))
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "request_too_large").await;

    // A raw chunked request, so nothing in between can add a length.
    let body = chat_body_of_len(1500);
    let mut req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for c in body.chunks(500) {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let resp = raw_http(&h.url, &req).await;
    assert_eq!(resp.status, 413, "{}", resp.body_text());
    assert_eq!(resp.json()["error"]["code"], "request_too_large");

    // Multipart uploads obey the same limit.
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![b'x'; 5000]).file_name("big.jsonl"),
        );
    let resp = h
        .http
        .post(format!("{}/v1/files", h.url))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "request_too_large").await;

    assert_eq!(
        h.mock.request_count(),
        2,
        "an oversized body reached the provider"
    );
    h.stop().await;
}

#[tokio::test]
async fn malformed_json_and_non_string_models_get_400() {
    let h = Harness::start().await;
    let key = h.key().await;
    let send = |body: &'static str| {
        h.http
            .post(format!("{}/v1/chat/completions", h.url))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "{\"model\": \"gpt-4o-mini\",",
        "not json",
        "{\"model\": \"gpt-4o-mini\"} trailing",
        "{'model': 'gpt-4o-mini'}",
    ] {
        let resp = send(body).await.unwrap();
        let id = rid(&resp);
        assert_error(resp, 400, "invalid_json").await;
        let rec = h.usage_record(&id).await;
        assert_eq!(rec.status, 400);
        assert_eq!(rec.error_code.as_deref(), Some("invalid_json"));
    }
    for body in [
        "{\"model\": 5, \"messages\": []}",
        "{\"model\": [\"gpt-4o-mini\"]}",
        "{\"model\": {\"id\": \"gpt-4o-mini\"}}",
        "{\"model\": true}",
        "42",
    ] {
        let resp = send(body).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}: {v}");
    }
    assert_eq!(h.mock.request_count(), 0);
    h.stop().await;
}

#[tokio::test]
async fn hop_by_hop_and_identifying_headers_are_not_forwarded() {
    let h = Harness::start().await;
    let key = h.key().await;
    let body = serde_json::to_vec(&chat_body("gpt-4o-mini")).unwrap();
    let auth = format!("Authorization: Bearer {key}");
    let headers = [
        auth.as_str(),
        "Content-Type: application/json",
        "Connection: close, X-Hop-Custom",
        "X-Hop-Custom: must-not-pass",
        "Keep-Alive: timeout=5",
        "Proxy-Authorization: Basic dXNlcjpwYXNz",
        "Proxy-Connection: keep-alive",
        "TE: trailers",
        "Trailer: X-Checksum",
        "Cookie: session=client-cookie-secret",
        "X-Forwarded-For: 203.0.113.9",
        "X-Forwarded-Host: evil.example",
        "X-Forwarded-Proto: https",
        "Forwarded: for=203.0.113.9",
        "X-Real-IP: 203.0.113.9",
        "OpenAI-Organization: org-attacker",
        "OpenAI-Project: proj-attacker",
        "X-Custom-Thing: keep-me",
        "OpenAI-Beta: assistants=v2",
        "User-Agent: portcullis-test/1.0",
        "Accept: application/json",
    ];
    let resp = raw_http(
        &h.url,
        &raw_request("POST", "/v1/chat/completions", &headers, &body),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    for name in [
        "x-hop-custom",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "cookie",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "forwarded",
        "x-real-ip",
        "openai-organization",
        "openai-project",
    ] {
        assert_eq!(
            r.header(name),
            None,
            "{name} was forwarded: {:?}",
            r.headers
        );
    }
    for (_, v) in &r.headers {
        assert!(!v.contains("client-cookie-secret"), "{:?}", r.headers);
        assert!(!v.contains("203.0.113.9"), "{:?}", r.headers);
        assert!(!v.contains(&key), "client key forwarded: {:?}", r.headers);
    }
    if let Some(c) = r.header("connection") {
        assert!(!c.to_ascii_lowercase().contains("x-hop-custom"), "{c}");
    }
    // Host names the provider, not the gateway.
    assert_eq!(r.header("host"), Some(h.mock.addr().to_string().as_str()));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    assert_eq!(r.header("x-custom-thing"), Some("keep-me"));
    assert_eq!(r.header("openai-beta"), Some("assistants=v2"));
    assert_eq!(r.header("user-agent"), Some("portcullis-test/1.0"));
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body.as_ref(), body.as_slice(), "body must pass unchanged");

    // Other credential headers are not forwarded either.
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-api-key", &key)
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = h.mock.requests().pop().unwrap();
    assert_eq!(r.header("x-api-key"), None);
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    h.stop().await;
}

#[tokio::test]
async fn a_valid_request_id_is_kept_and_an_invalid_one_replaced() {
    let h = Harness::start().await;
    let key = h.key().await;
    let send = |id: String| {
        h.http
            .post(format!("{}/v1/chat/completions", h.url))
            .bearer_auth(&key)
            .header("x-request-id", id)
            .json(&chat_body("gpt-4o-mini"))
            .send()
    };

    let mine = "client-Req_01.a:b".to_owned();
    let resp = send(mine.clone()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(rid(&resp), mine);
    assert_eq!(
        h.mock.requests().pop().unwrap().header("x-request-id"),
        Some(mine.as_str()),
        "the request id goes upstream"
    );
    assert_eq!(h.usage_record(&mine).await.status, 200);

    for bad in [
        "has spaces in it".to_owned(),
        "a/b".to_owned(),
        "semi;colon".to_owned(),
        "x".repeat(129),
        "".to_owned(),
    ] {
        let resp = send(bad.clone()).await.unwrap();
        assert_eq!(resp.status(), 200, "{bad}");
        let got = rid(&resp);
        assert_ne!(got, bad);
        assert!(
            !got.is_empty()
                && got.len() <= 128
                && got
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)),
            "{got}"
        );
        assert_eq!(
            h.mock.requests().pop().unwrap().header("x-request-id"),
            Some(got.as_str()),
            "upstream sees the replacement"
        );
        assert_eq!(h.usage_record(&got).await.status, 200);
    }

    // Refusals carry the request id too.
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .header("x-request-id", "refused-1")
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(rid(&resp), "refused-1");
    assert_error(resp, 401, "invalid_api_key").await;
    h.stop().await;
}

#[tokio::test]
async fn streamed_and_plain_answers_leave_their_upstream_connection_for_the_next_request() {
    // A streamed answer is chunked: its end is known only once read, and the
    // connection must go back to the pool then (not close), or every stream
    // pays a new connection (a TLS handshake to a real provider).
    let h = Harness::start().await;
    let key = h.key().await;
    for i in 0..3 {
        let resp = h.chat(&key, stream_body("gpt-4o-mini")).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.text().await.unwrap().contains("[DONE]"), "stream {i}");
        // The pool takes a connection back a moment after its body's end.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plain = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    for i in 0..2 {
        let resp = h.chat(&key, plain.clone()).await;
        assert_eq!(resp.status(), 200, "plain {i}");
        resp.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.mock.request_count(), 5);
    assert_eq!(
        h.mock.connection_count(),
        1,
        "one upstream connection for five sequential requests"
    );
    h.stop().await;
}

#[tokio::test]
async fn streamed_chunks_reach_the_client_as_the_provider_sends_them() {
    // 200 ms between events, 20 content chunks: the provider needs > 4 s.
    let h = Harness::start_with(slow_stream(200)).await;
    let key = h.key().await;
    let resp = h.chat(&key, stream_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let id = rid(&resp);
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    // Wait for the first content chunk only.
    while !String::from_utf8_lossy(&buf).contains("\"content\":\"mock\"") {
        buf.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    // The provider has not finished: the gateway has not seen the end of the
    // body, so the request is not yet in the ledger, and no [DONE] arrived.
    assert!(!String::from_utf8_lossy(&buf).contains("[DONE]"));
    assert!(
        h.gw.state
            .store
            .usage_by_request(&id)
            .await
            .unwrap()
            .is_empty(),
        "the request was already accounted when its first chunk arrived"
    );
    // Read the rest, noting when each event arrives.
    let mut arrivals = Vec::new();
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    while let Some(b) = stream.next().await {
        let b = b.unwrap();
        arrivals.push(Instant::now());
        text.push_str(&String::from_utf8_lossy(&b));
    }
    assert!(text.contains("[DONE]"));
    assert_eq!(text.matches("\"content\":\" mock\"").count(), 19);
    // Unbuffered: the remaining events came in many separate deliveries spread
    // over the provider's pacing (a buffering proxy delivers them at once).
    let spaced = arrivals
        .windows(2)
        .filter(|w| w[1] - w[0] >= Duration::from_millis(100))
        .count();
    assert!(
        spaced >= 10,
        "only {spaced} of {} deliveries were spaced out: buffered?",
        arrivals.len()
    );
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 200);
    assert_eq!(rec.completion_tokens, Some(20));
    h.stop().await;
}

/// A TCP relay between the gateway and the mock that reports when the gateway
/// hangs up its upstream connection, and what the mock had sent by then.
struct Relay {
    addr: SocketAddr,
    target: Arc<OnceLock<SocketAddr>>,
    closed: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Relay {
    async fn start() -> Relay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target: Arc<OnceLock<SocketAddr>> = Arc::new(OnceLock::new());
        let (tx, closed) = tokio::sync::mpsc::unbounded_channel();
        let t = target.clone();
        tokio::spawn(async move {
            loop {
                let (down, _) = listener.accept().await.unwrap();
                let up = tokio::net::TcpStream::connect(*t.get().unwrap())
                    .await
                    .unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (mut dr, mut dw) = down.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
                    let seen2 = seen.clone();
                    // mock -> gateway, remembering what passed.
                    let back = tokio::spawn(async move {
                        let mut b = [0u8; 16384];
                        loop {
                            match ur.read(&mut b).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    seen2.lock().unwrap().extend_from_slice(&b[..n]);
                                    if dw.write_all(&b[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    });
                    // gateway -> mock until the gateway hangs up.
                    let mut b = [0u8; 16384];
                    loop {
                        match dr.read(&mut b).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if uw.write_all(&b[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
                    let _ = tx.send(text);
                    back.abort();
                });
            }
        });
        Relay {
            addr,
            target,
            closed,
        }
    }
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_the_upstream_request() {
    let relay = Relay::start().await;
    let mut opts = slow_stream(300);
    opts.base_url_override = Some(format!("http://{}/v1", relay.addr));
    let h = Harness::start_with(opts).await;
    relay.target.set(h.mock.addr()).unwrap();
    let mut closed = relay.closed;
    let key = h.key().await;

    let resp = h.chat(&key, stream_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    let (events, end) = read_events(resp, Some(2)).await;
    assert!(end.is_ok());
    assert_eq!(content_events(&events), 2);
    // The response (and its connection) is dropped here.

    // The gateway hangs up its upstream connection long before the provider
    // would have finished (22 events x 300 ms).
    let upstream_saw = tokio::time::timeout(Duration::from_secs(20), closed.recv())
        .await
        .expect("the gateway never closed its upstream connection")
        .unwrap();
    assert!(
        !upstream_saw.contains("[DONE]"),
        "the provider streamed to the end: the upstream request was not cancelled"
    );
    // The relay did carry the stream (so the check above means something).
    assert!(
        upstream_saw.contains("\"content\":\"mock\""),
        "{upstream_saw}"
    );
    assert!(
        upstream_saw.matches("\" mock\"").count() < 19,
        "{upstream_saw}"
    );

    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 499);
    assert_eq!(rec.error_code.as_deref(), Some("client_disconnected"));
    assert_eq!(
        rec.completion_tokens, None,
        "the final usage chunk was never read"
    );
    assert_eq!(rec.model.as_deref(), Some("gpt-4o-mini"));
    h.stop().await;
}

#[tokio::test]
async fn unreachable_provider_is_502_upstream_unavailable() {
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let h = Harness::start_with(Opts {
        base_url_override: Some(format!("http://127.0.0.1:{closed_port}/v1")),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    let id = rid(&resp);
    let v = assert_error(resp, 502, "upstream_unavailable").await;
    assert_eq!(v["error"]["type"], "api_error");
    assert!(
        !v.to_string().contains(&closed_port.to_string()),
        "upstream address leaked: {v}"
    );
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 502);
    assert_eq!(rec.error_code.as_deref(), Some("upstream_unavailable"));
    // No tokens were reported, so none are charged.
    assert_eq!(rec.prompt_tokens, None);
    h.stop().await;
}

#[tokio::test]
async fn hanging_provider_is_504_after_the_first_byte_timeout() {
    let h = Harness::start_with(Opts {
        provider_extra: "    timeouts: {first_byte: 500ms, idle: 500ms}\n".into(),
        ..Default::default()
    })
    .await;
    let key = h.key().await;
    for body in [chat_body("mock-hang"), stream_body("mock-hang")] {
        let resp = h.chat(&key, body).await;
        let id = rid(&resp);
        let v = assert_error(resp, 504, "upstream_timeout").await;
        assert_eq!(v["error"]["type"], "api_error");
        let rec = h.usage_record(&id).await;
        assert_eq!(rec.status, 504);
        assert_eq!(rec.error_code.as_deref(), Some("upstream_timeout"));
    }
    // A healthy model still works with these timeouts.
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn stalled_stream_ends_with_an_error_after_the_idle_timeout() {
    let h = Harness::start_with(Opts {
        provider_extra: "    timeouts: {first_byte: 5s, idle: 500ms}\n".into(),
        ..Default::default()
    })
    .await;
    let key = h.key().await;

    let resp = h.chat(&key, stream_body("mock-hang-mid-stream")).await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    let (events, end) = read_events(resp, None).await;
    assert!(end.is_err(), "the stream must end abnormally, not cleanly");
    assert_eq!(content_events(&events), 2);
    assert!(events.iter().all(|e| !e.data.contains("[DONE]")));
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 504);
    assert_eq!(rec.error_code.as_deref(), Some("upstream_timeout"));

    // Non-streamed: half a JSON body, then silence.
    let resp = h.chat(&key, chat_body("mock-hang-mid-stream")).await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    assert!(
        resp.bytes().await.is_err(),
        "a truncated body must not end cleanly"
    );
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 504);
    h.stop().await;
}

#[tokio::test]
async fn provider_dying_mid_stream_ends_the_client_stream_abnormally() {
    let h = Harness::start().await;
    let key = h.key().await;

    let resp = h.chat(&key, stream_body("mock-die-mid-stream")).await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    let (events, end) = read_events(resp, None).await;
    assert!(end.is_err(), "the stream must end abnormally, not cleanly");
    assert!(content_events(&events) <= 2);
    assert!(events.iter().all(|e| !e.data.contains("[DONE]")));
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 502);
    assert_eq!(rec.error_code.as_deref(), Some("upstream_broken_stream"));

    let resp = h.chat(&key, chat_body("mock-die-mid-stream")).await;
    assert_eq!(resp.status(), 200);
    let id = rid(&resp);
    assert!(
        resp.bytes().await.is_err(),
        "a truncated body must not end cleanly"
    );
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 502);

    // The gateway is still fine afterwards.
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn provider_rejecting_the_gateway_key_is_502_without_key_fragments() {
    let h = Harness::start().await;
    let key = h.key().await;
    for body in [chat_body("mock-error-401"), stream_body("mock-error-401")] {
        let resp = h.chat(&key, body).await;
        let id = rid(&resp);
        let headers = format!("{:?}", resp.headers());
        let v = assert_error(resp, 502, "upstream_auth_failed").await;
        let text = format!("{v} {headers}");
        let first5 = &PROVIDER_KEY[..5];
        let last4 = &PROVIDER_KEY[PROVIDER_KEY.len() - 4..];
        assert!(!text.contains(first5), "{text}");
        assert!(!text.contains(last4), "{text}");
        assert!(!text.contains("***"), "{text}");
        assert!(!text.contains(&key), "{text}");
        let rec = h.usage_record(&id).await;
        assert_eq!(rec.status, 502);
        assert_eq!(rec.error_code.as_deref(), Some("upstream_auth_failed"));
    }
    // The mock really was asked (and echoed the masked key to the gateway).
    assert_eq!(h.mock.request_count(), 2);
    h.stop().await;
}

#[tokio::test]
async fn provider_errors_pass_through_in_openai_shape() {
    let h = Harness::start_with(Opts {
        // Forwarding is under test here; ownership (tests/ownership.rs) would answer lists itself.
        top_extra: "ownership:\n  scope: off\n".into(),
        ..Default::default()
    })
    .await;
    let key = h.key().await;

    let resp = h.chat(&key, chat_body("mock-error-429")).await;
    assert!(
        resp.headers().get("retry-after").is_some(),
        "a 429 carries Retry-After"
    );
    let id = rid(&resp);
    let v = assert_error(resp, 429, "rate_limit_exceeded").await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Rate limit reached"),
        "{v}"
    );
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 429);

    let resp = h.chat(&key, chat_body("mock-error-500")).await;
    assert_eq!(resp.status(), 500);
    assert!(resp.headers().get("x-request-id").is_some());
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(v["error"]["type"], "server_error", "{v}");
    assert!(v["error"].get("param").is_some(), "{v}");
    assert!(v["error"].get("code").is_some(), "{v}");

    let resp = h.chat(&key, chat_body("mock-error-400")).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"].get("param").is_some(), "{v}");
    assert!(v["error"].get("code").is_some(), "{v}");

    // Streamed requests get the same error (the provider failed before streaming).
    let resp = h.chat(&key, stream_body("mock-error-429")).await;
    assert_error(resp, 429, "rate_limit_exceeded").await;

    // An error about an unknown object from the provider passes through too.
    let resp = h
        .http
        .get(format!("{}/v1/files/file-doesnotexist", h.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(h.mock.request_count(), 5);
    h.stop().await;
}

#[tokio::test]
async fn files_upload_retrieve_content_and_delete() {
    let h = Harness::start().await;
    let key = h.key().await;
    let content = b"{\"custom_id\": \"1\"}\n{\"custom_id\": \"2\"}\n".to_vec();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(content.clone())
                .file_name("input.jsonl")
                .mime_str("application/jsonl")
                .unwrap(),
        );
    let resp = h
        .http
        .post(format!("{}/v1/files", h.url))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let upload_id = rid(&resp);
    let file: Value = resp.json().await.unwrap();
    assert_eq!(file["object"], "file");
    assert_eq!(file["filename"], "input.jsonl");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["bytes"], content.len());
    let fid = file["id"].as_str().unwrap().to_owned();
    // The multipart body went upstream byte for byte.
    let up = h.mock.requests().pop().unwrap();
    assert!(
        up.header("content-type")
            .unwrap()
            .starts_with("multipart/form-data; boundary=")
    );
    assert!(
        up.body
            .windows(content.len())
            .any(|w| w == content.as_slice())
    );

    let resp = h
        .http
        .get(format!("{}/v1/files/{fid}", h.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], fid.as_str());

    let resp = h
        .http
        .get(format!("{}/v1/files?purpose=batch", h.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == fid.as_str())
    );

    let resp = h
        .http
        .get(format!("{}/v1/files/{fid}/content", h.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), content.as_slice());

    let resp = h
        .http
        .delete(format!("{}/v1/files/{fid}", h.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["deleted"], true);
    assert_eq!(v["id"], fid.as_str());

    let resp = h
        .http
        .get(format!("{}/v1/files/{fid}", h.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let rec = h.usage_record(&upload_id).await;
    assert_eq!(rec.status, 200);
    assert_eq!(rec.endpoint.as_deref(), Some("files"));
    assert_eq!(rec.provider.as_deref(), Some("openai"));
    assert_eq!(rec.method, "POST");
    h.stop().await;
}

type H2Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

async fn h2_post(
    client: &H2Client,
    url: &str,
    key: &str,
    body: &Value,
) -> http::Response<hyper::body::Incoming> {
    let req = http::Request::post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(
            serde_json::to_vec(body).unwrap(),
        )))
        .unwrap();
    client.request(req).await.unwrap()
}

#[tokio::test]
async fn h2c_prior_knowledge_works_like_http1() {
    use http_body_util::BodyExt;
    let h = Harness::start().await;
    let key = h.key().await;
    let client: H2Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let url = format!("{}/v1/chat/completions", h.url);

    let resp = h2_post(&client, &url, &key, &chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.status, 200);
    assert_eq!(rec.completion_tokens, Some(20));

    // Streamed over h2.
    let resp = h2_post(&client, &url, &key, &stream_body("gpt-4o-mini")).await;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(text.matches("\"content\":\" mock\"").count(), 19);
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let rec = h.usage_record(&id).await;
    assert_eq!(rec.completion_tokens, Some(20));

    // Refusals look the same over h2.
    let req = http::Request::get(format!("{}/v1/organization/users", h.url))
        .header("authorization", format!("Bearer {key}"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "endpoint_not_allowed");
    let req = http::Request::get(format!("{}/v1/models", h.url))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 401);

    // And HTTP/1.1 on the same port.
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.request_count(), 3);
    h.stop().await;
}
