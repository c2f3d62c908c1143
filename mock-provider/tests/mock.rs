//! Black-box tests of the mock provider over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mock_provider::{MockOptions, MockProvider};
use serde_json::{Value, json};

async fn start(opts: MockOptions) -> MockProvider {
    MockProvider::start("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or_else(|| panic!("event without data: {e:?}"))
                .to_owned()
        })
        .collect()
}

/// `(event, data)` pairs of a named-event SSE body.
fn sse_named(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap()
                .to_owned();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name, serde_json::from_str(data).unwrap_or(Value::Null))
        })
        .collect()
}

async fn post(mock: &MockProvider, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", mock.base_url()))
        .bearer_auth("sk-test-key")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn post_json(mock: &MockProvider, path: &str, body: Value) -> Value {
    let r = post(mock, path, body).await;
    assert_eq!(r.status(), 200, "POST {path}");
    r.json().await.unwrap()
}

async fn get_json(mock: &MockProvider, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}{path}", mock.base_url()))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn plain_chat_has_exact_usage() {
    let mock = start(MockOptions::default()).await;
    let body = post_json(
        &mock,
        "/chat/completions",
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                // 16 chars -> 3 + 19/4 = 7
                {"role": "system", "content": "You are helpful."},
                // "Hello " + "there" = 11 chars -> 3 + 14/4 = 6
                {"role": "user", "content": [
                    {"type": "text", "text": "Hello "},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {"type": "text", "text": "there"}
                ]}
            ],
            "max_tokens": 5
        }),
    )
    .await;
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "mock mock mock mock mock");
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], 13);
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["total_tokens"], 18);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 0);

    // Default: opts.chunks words; max_completion_tokens wins over max_tokens.
    let body = post_json(
        &mock,
        "/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(body["usage"]["completion_tokens"], 20);
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    let body = post_json(
        &mock,
        "/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9, "max_completion_tokens": 2}),
    )
    .await;
    assert_eq!(body["choices"][0]["message"]["content"], "mock mock");

    // mock-no-usage: no usage field at all.
    let body = post_json(
        &mock,
        "/chat/completions",
        json!({"model": "mock-no-usage", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert!(body.get("usage").is_none());
    mock.shutdown().await;
}

#[tokio::test]
async fn stream_with_include_usage() {
    let mock = start(MockOptions {
        chunks: 4,
        ..MockOptions::default()
    })
    .await;
    let r = post(
        &mock,
        "/chat/completions",
        json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "abcd"}],
            "stream": true,
            "stream_options": {"include_usage": true}
        }),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let data = sse_data(&text);
    // role + 4 content + stop + usage + [DONE]
    assert_eq!(data.len(), 8, "{text}");
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..7]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks[1..5]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, "mock mock mock mock");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    for c in &chunks[..6] {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c.get("usage").unwrap().is_null());
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    let usage_chunk = &chunks[6];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 4);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 4);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 8);

    // Without include_usage: no usage key, no usage chunk.
    let text = post(
        &mock,
        "/chat/completions",
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": true}),
    )
    .await
    .text()
    .await
    .unwrap();
    let data = sse_data(&text);
    assert_eq!(data.len(), 7);
    assert!(!text.contains("\"usage\""));

    // mock-no-usage ignores include_usage.
    let text = post(
        &mock,
        "/chat/completions",
        json!({"model": "mock-no-usage", "messages": [{"role": "user", "content": "x"}],
               "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await
    .text()
    .await
    .unwrap();
    assert_eq!(sse_data(&text).len(), 7);
    assert!(!text.contains("\"usage\""));

    // Legacy completions stream the same way.
    let text = post(
        &mock,
        "/completions",
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": "abcdefgh", "stream": true,
               "stream_options": {"include_usage": true}}),
    )
    .await
    .text()
    .await
    .unwrap();
    let data = sse_data(&text);
    assert_eq!(data.len(), 7); // 4 content + stop + usage + [DONE]
    let usage: Value = serde_json::from_str(&data[5]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 2);
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    mock.shutdown().await;
}

#[tokio::test]
async fn chunk_delay_spaces_chunks() {
    let delay = Duration::from_millis(60);
    let mock = start(MockOptions {
        chunks: 3,
        chunk_delay: delay,
        ..MockOptions::default()
    })
    .await;
    let r = post(
        &mock,
        "/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}),
    )
    .await;
    let mut stream = r.bytes_stream();
    let mut arrivals = Vec::new();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        arrivals.push(Instant::now());
        body.extend_from_slice(&chunk);
    }
    // role + 3 content + stop + [DONE] = 6 events, 5 gaps.
    assert_eq!(sse_data(&String::from_utf8(body).unwrap()).len(), 6);
    assert_eq!(arrivals.len(), 6, "each event is its own frame");
    for w in arrivals.windows(2) {
        assert!(
            w[1] - w[0] >= delay - Duration::from_millis(15),
            "gap {:?}",
            w[1] - w[0]
        );
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn file_round_trip() {
    let mock = start(MockOptions::default()).await;
    let c = client();
    let content = b"{\"a\":1}\n{\"b\":2}\n".to_vec();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(content.clone()).file_name("input.jsonl"),
        );
    let r = c
        .post(format!("{}/files", mock.base_url()))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let file: Value = r.json().await.unwrap();
    let id = file["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("file-"));
    assert_eq!(id.len(), "file-".len() + 24);
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], content.len());
    assert_eq!(file["filename"], "input.jsonl");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["status"], "processed");

    let (status, got) = get_json(&mock, &format!("/files/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got, file);

    let r = c
        .get(format!("{}/files/{id}/content", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), content.as_slice());

    let (_, list) = get_json(&mock, "/files?purpose=batch").await;
    assert_eq!(list["data"][0]["id"], id.as_str());
    let (_, list) = get_json(&mock, "/files?purpose=assistants").await;
    assert_eq!(list["data"], json!([]));

    let r = c
        .delete(format!("{}/files/{id}", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let del: Value = r.json().await.unwrap();
    assert_eq!(del, json!({"id": id, "object": "file", "deleted": true}));

    let (status, err) = get_json(&mock, &format!("/files/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(
        err["error"]["message"],
        format!("No such File object: {id}")
    );
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert!(err["error"]["code"].is_null());

    // A batch over an uploaded file completes with an output file.
    let lines = [
        json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}}),
        json!({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "mock-error-500", "messages": [{"role": "user", "content": "hi"}]}}),
    ];
    let jsonl = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(jsonl.into_bytes()).file_name("in.jsonl"),
        );
    let input: Value = c
        .post(format!("{}/files", mock.base_url()))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch = post_json(
        &mock,
        "/batches",
        json!({"input_file_id": input["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
    )
    .await;
    assert_eq!(batch["status"], "completed");
    assert!(batch["error_file_id"].is_null());
    assert_eq!(
        batch["request_counts"],
        json!({"total": 2, "completed": 1, "failed": 1})
    );
    let out = c
        .get(format!(
            "{}/files/{}/content",
            mock.base_url(),
            batch["output_file_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let out: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["custom_id"], "a");
    assert_eq!(out[0]["response"]["status_code"], 200);
    assert_eq!(
        out[0]["response"]["body"]["choices"][0]["message"]["content"],
        "mock mock"
    );
    assert_eq!(out[1]["response"]["status_code"], 500);

    let r = post(
        &mock,
        "/batches",
        json!({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
    )
    .await;
    assert_eq!(r.status(), 404);
    mock.shutdown().await;
}

#[tokio::test]
async fn list_pagination() {
    let mock = start(MockOptions::default()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let a = post_json(
            &mock,
            "/assistants",
            json!({"model": "gpt-4o", "name": format!("a{i}")}),
        )
        .await;
        assert!(a["id"].as_str().unwrap().starts_with("asst_"));
        ids.push(a["id"].as_str().unwrap().to_owned());
    }
    // Default order: newest first.
    let (_, page) = get_json(&mock, "/assistants?limit=2").await;
    assert_eq!(page["object"], "list");
    let got: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()]);
    assert_eq!(page["first_id"], ids[4].as_str());
    assert_eq!(page["last_id"], ids[3].as_str());
    assert_eq!(page["has_more"], true);

    // Walk ascending with `after`.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("/assistants?order=asc&limit=2&after={a}"),
            None => "/assistants?order=asc&limit=2".to_owned(),
        };
        let (status, page) = get_json(&mock, &q).await;
        assert_eq!(status, 200);
        for a in page["data"].as_array().unwrap() {
            seen.push(a["id"].as_str().unwrap().to_owned());
        }
        if page["has_more"] != true {
            break;
        }
        after = page["last_id"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, ids);

    let (_, page) = get_json(&mock, &format!("/assistants?order=asc&before={}", ids[2])).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], false);

    // Delete then 404.
    let r = client()
        .delete(format!("{}/assistants/{}", mock.base_url(), ids[0]))
        .send()
        .await
        .unwrap();
    let del: Value = r.json().await.unwrap();
    assert_eq!(del["object"], "assistant.deleted");
    let (status, _) = get_json(&mock, &format!("/assistants/{}", ids[0])).await;
    assert_eq!(status, 404);
    mock.shutdown().await;
}

#[tokio::test]
async fn error_401_echoes_the_key() {
    let mock = start(MockOptions::default()).await;
    let r = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth("sk-test-0123456-wxyz")
        .json(&json!({"model": "mock-error-401", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert_eq!(
        err,
        json!({"error": {
            "message": "Incorrect API key provided: sk-te********wxyz. You can find your API key at https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key"
        }})
    );

    for (model, status, typ) in [
        ("mock-error-400", 400, "invalid_request_error"),
        ("mock-error-429", 429, "requests"),
        ("mock-error-500", 500, "server_error"),
        ("mock-error-503", 503, "server_error"),
    ] {
        let r = post(
            &mock,
            "/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": true}),
        )
        .await;
        assert_eq!(r.status(), status);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["type"], typ);
    }

    // Unknown routes are OpenAI-shaped 404s.
    let (status, err) = get_json(&mock, "/nope").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["message"], "Invalid URL (GET /v1/nope)");
    mock.shutdown().await;
}

#[tokio::test]
async fn stream_faults() {
    let mock = start(MockOptions::default()).await;
    let body = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": true});

    // Die: two content chunks then a broken body.
    let r = post(&mock, "/chat/completions", body("mock-die-mid-stream")).await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(c) = stream.next().await {
        match c {
            Ok(c) => got.extend_from_slice(&c),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body must end with an error");
    let text = String::from_utf8(got).unwrap();
    assert_eq!(sse_data(&text).len(), 3); // role + 2 content
    assert!(!text.contains("[DONE]"));

    // Hang mid-stream: headers and 2 chunks arrive, then nothing.
    let r = post(&mock, "/chat/completions", body("mock-hang-mid-stream")).await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = Vec::new();
    let stalled = tokio::time::timeout(Duration::from_millis(300), async {
        while let Some(c) = stream.next().await {
            got.extend_from_slice(&c.unwrap());
        }
    })
    .await
    .is_err();
    assert!(stalled);
    assert_eq!(sse_data(&String::from_utf8(got).unwrap()).len(), 3);

    // Hang: no headers at all.
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        post(&mock, "/chat/completions", body("mock-hang")),
    )
    .await
    .is_err();
    assert!(hung);
    mock.shutdown().await;
}

#[tokio::test]
async fn recording_on_and_off() {
    let mock = start(MockOptions::default()).await;
    let c = client();
    let r = c
        .post(format!("{}/embeddings?x=1", mock.base_url()))
        .header("X-Custom", "Yes")
        .json(&json!({"model": "text-embedding-3-small", "input": ["abcd", "efghi"]}))
        .send()
        .await
        .unwrap();
    let emb: Value = r.json().await.unwrap();
    assert_eq!(emb["data"].as_array().unwrap().len(), 2);
    assert_eq!(emb["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(emb["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let r = c
        .get(mock.base_url().replace("/v1", "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    assert_eq!(mock.request_count(), 1, "healthz is not counted");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v1/embeddings?x=1");
    assert_eq!(reqs[0].header("x-custom"), Some("Yes"));
    assert!(reqs[0].headers.iter().any(|(n, _)| n == "x-custom"));
    assert_eq!(reqs[0].json().unwrap()["input"][1], "efghi");

    let (_, over_http) = {
        let r = c
            .get(mock.base_url().replace("/v1", "/__mock/requests"))
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(over_http[0]["path"], "/v1/embeddings?x=1");
    assert!(over_http[0]["body"].as_str().unwrap().contains("efghi"));

    mock.clear();
    assert_eq!(mock.request_count(), 0);
    assert!(mock.requests().is_empty());
    mock.shutdown().await;

    let mock = start(MockOptions {
        record: false,
        ..MockOptions::default()
    })
    .await;
    for _ in 0..3 {
        post_json(
            &mock,
            "/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    }
    assert_eq!(mock.request_count(), 3);
    assert!(mock.requests().is_empty());
    mock.shutdown().await;
}

#[tokio::test]
async fn latency_delays_headers() {
    let mock = start(MockOptions {
        latency: Duration::from_millis(150),
        ..MockOptions::default()
    })
    .await;
    let t = Instant::now();
    let (status, _) = get_json(&mock, "/models").await;
    assert_eq!(status, 200);
    assert!(t.elapsed() >= Duration::from_millis(140));
    mock.shutdown().await;
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let mock = start(MockOptions::default()).await;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let req = http::Request::post(format!("{}/chat/completions", mock.base_url()))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    let data = sse_data(std::str::from_utf8(&text).unwrap());
    assert_eq!(data.len(), 23); // role + 20 + stop + [DONE]
    mock.shutdown().await;
}

#[tokio::test]
async fn assistants_threads_runs() {
    let mock = start(MockOptions {
        chunks: 3,
        ..MockOptions::default()
    })
    .await;
    let asst = post_json(
        &mock,
        "/assistants",
        json!({"model": "gpt-4o", "instructions": "Be brief."}),
    )
    .await;
    let thread = post_json(
        &mock,
        "/threads",
        json!({"messages": [{"role": "user", "content": "abcdefgh"}]}),
    )
    .await;
    let tid = thread["id"].as_str().unwrap();
    assert!(tid.starts_with("thread_"));
    let run = post_json(
        &mock,
        &format!("/threads/{tid}/runs"),
        json!({"assistant_id": asst["id"]}),
    )
    .await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["usage"]["prompt_tokens"], 3 + 2);
    assert_eq!(run["usage"]["completion_tokens"], 3);
    let rid = run["id"].as_str().unwrap();
    let (_, msgs) = get_json(&mock, &format!("/threads/{tid}/messages?order=asc")).await;
    let msgs = msgs["data"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["run_id"], rid);
    assert_eq!(msgs[1]["content"][0]["text"]["value"], "mock mock mock");
    let (_, steps) = get_json(&mock, &format!("/threads/{tid}/runs/{rid}/steps")).await;
    let sid = steps["data"][0]["id"].as_str().unwrap();
    assert!(sid.starts_with("step_"));
    let (status, _) = get_json(&mock, &format!("/threads/{tid}/runs/{rid}/steps/{sid}")).await;
    assert_eq!(status, 200);

    // Streaming create-thread-and-run.
    let text = post(
        &mock,
        "/threads/runs",
        json!({"assistant_id": asst["id"], "stream": true,
               "thread": {"messages": [{"role": "user", "content": "hi"}]}}),
    )
    .await
    .text()
    .await
    .unwrap();
    let events = sse_named(&text);
    assert_eq!(events[0].0, "thread.created");
    assert_eq!(
        events
            .iter()
            .filter(|(n, _)| n == "thread.message.delta")
            .count(),
        3
    );
    assert_eq!(events[events.len() - 2].0, "thread.run.completed");
    assert_eq!(events.last().unwrap().0, "done");

    // Unknown assistant.
    let r = post(
        &mock,
        &format!("/threads/{tid}/runs"),
        json!({"assistant_id": "asst_nope"}),
    )
    .await;
    assert_eq!(r.status(), 404);
    mock.shutdown().await;
}

#[tokio::test]
async fn responses_and_vector_stores() {
    let mock = start(MockOptions {
        chunks: 3,
        ..MockOptions::default()
    })
    .await;
    let resp = post_json(
        &mock,
        "/responses",
        json!({"model": "gpt-4.1", "input": "abcd", "instructions": "x"}),
    )
    .await;
    assert_eq!(resp["object"], "response");
    assert_eq!(resp["status"], "completed");
    assert_eq!(resp["output"][0]["content"][0]["text"], "mock mock mock");
    assert_eq!(resp["usage"]["input_tokens"], (3 + 1) + (3 + 1));
    assert_eq!(resp["usage"]["output_tokens"], 3);
    let id = resp["id"].as_str().unwrap();
    let (status, again) = get_json(&mock, &format!("/responses/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], id);
    let (_, items) = get_json(&mock, &format!("/responses/{id}/input_items")).await;
    assert_eq!(items["data"][0]["content"][0]["text"], "abcd");

    let r = post(
        &mock,
        "/responses",
        json!({"model": "gpt-4.1", "input": "x", "previous_response_id": "resp_nope"}),
    )
    .await;
    assert_eq!(r.status(), 404);

    let text = post(
        &mock,
        "/responses",
        json!({"model": "gpt-4.1", "input": "x", "previous_response_id": id, "stream": true}),
    )
    .await
    .text()
    .await
    .unwrap();
    let events = sse_named(&text);
    assert_eq!(events[0].0, "response.created");
    assert_eq!(
        events
            .iter()
            .filter(|(n, _)| n == "response.output_text.delta")
            .count(),
        3
    );
    let (last, completed) = events.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(completed["response"]["usage"]["output_tokens"], 3);
    for (i, (_, e)) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i);
    }

    let vs = post_json(&mock, "/vector_stores", json!({"name": "docs"})).await;
    let vid = vs["id"].as_str().unwrap();
    assert!(vid.starts_with("vs_"));
    let r = post(
        &mock,
        &format!("/vector_stores/{vid}/files"),
        json!({"file_id": "file-nope"}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let (status, _) = get_json(&mock, "/vector_stores/vs_nope").await;
    assert_eq!(status, 404);
    mock.shutdown().await;
}

#[tokio::test]
async fn drop_stops_the_server() {
    let mock = start(MockOptions::default()).await;
    let addr = mock.addr();
    drop(mock);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
