//! Micro-benchmarks of the per-request hot path: `cargo bench -p portcullis`.
//!
//! * key parse + checksum + digest (`authn::keys`);
//! * a key-cache hit through `Authenticator::client` (SQLite store in a temp dir);
//! * the endpoint allowlist's path check (`authz::endpoints::check_path`);
//! * reading `model` from a request body (`authz::requested_model`);
//! * the SSE usage tap over a realistic 20-chunk stream (`accounting::usage`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header};
use portcullis::accounting::usage::{TapKind, UsageTap};
use portcullis::authn::keys;
use portcullis::authz::endpoints::check_path;
use portcullis::authz::requested_model;
use portcullis::config::{Config, ConfigSource};
use portcullis::server;
use portcullis::store::ApiKeyRecord;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn key_format(c: &mut Criterion) {
    let (_, key) = keys::generate();
    let key = key.expose().to_owned();
    let stored = keys::digest(&key);
    let mut g = c.benchmark_group("key");
    g.bench_function("parse+checksum", |b| {
        b.iter(|| keys::parse(black_box(&key)).is_ok())
    });
    g.bench_function("digest", |b| b.iter(|| keys::digest(black_box(&key))));
    g.bench_function("parse+checksum+verify", |b| {
        b.iter(|| {
            let k = black_box(&key);
            keys::parse(k).is_ok() && keys::verify(k, black_box(&stored))
        })
    });
    g.finish();
}

fn key_cache_hit(c: &mut Criterion) {
    let rt = current_thread();
    let dir = tempfile::tempdir().expect("tempdir");
    // The authenticator exactly as the gateway builds it, on a real SQLite store.
    let yaml = format!(
        "listen: 127.0.0.1:0\ndatabase: sqlite://{}\nadmin:\n  master_key: pcm_benchmark-master-key-0123456789\n\
         providers:\n  - name: mock\n    kind: openai_compatible\n    base_url: http://127.0.0.1:9/v1\n    models: [gpt-4o-mini]\n",
        dir.path().join("bench.db").display()
    );
    let cfg = Config::from_yaml(&yaml, &|_| None, ConfigSource::Defaults).expect("config");
    let (id, key) = keys::generate();
    let gateway = rt.block_on(async {
        let gateway = server::build(cfg, None).await.expect("gateway");
        gateway
            .state
            .store
            .insert_key(&ApiKeyRecord {
                name: Some("bench".into()),
                user: Some("bench-user".into()),
                team: Some("bench-team".into()),
                models: Some(vec!["gpt-4o-mini".into()]),
                endpoints: Some(vec!["chat".into()]),
                ..ApiKeyRecord::new(id, keys::digest(key.expose()).to_vec())
            })
            .await
            .expect("insert");
        gateway
    });
    let authn = &gateway.state.authn;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", key.expose())).expect("header"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Fill the cache once.
    rt.block_on(authn.client(&headers, None))
        .expect("valid key");
    c.bench_function("authn/cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { authn.client(black_box(&headers), None).await.is_ok() })
    });
}

fn allowlist(c: &mut Criterion) {
    let mut g = c.benchmark_group("check_path");
    for (name, path) in [
        ("chat", "/chat/completions"),
        (
            "threads_deep",
            "/threads/thread_abc123/runs/run_def456/steps",
        ),
        ("percent_encoded", "/files/file-abc%20x%2Bdef"),
        ("hostile", "/files/..%2F..%2Forganization/users"),
    ] {
        g.bench_function(name, |b| b.iter(|| check_path(black_box(path)).is_ok()));
    }
    g.finish();
}

fn model_from_body(c: &mut Criterion) {
    let rt = current_thread();
    let small = Bytes::from_static(
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello! How are you today?"}]}"#,
    );
    // A realistic long conversation with the model named last.
    let long_messages: Vec<_> = (0..40)
        .map(|i| {
            serde_json::json!({
                "role": if i % 2 == 0 { "user" } else { "assistant" },
                "content": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. \"Quoted\" text \\ and unicode \u{00e9}\u{4e2d}. ".repeat(8),
            })
        })
        .collect();
    let long = Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "messages": long_messages,
            "temperature": 0.2,
            "stream": true,
            "model": "gpt-4o-mini",
        }))
        .expect("json"),
    );
    let mut g = c.benchmark_group("requested_model");
    for (name, body) in [("small", &small), ("long_40_messages", &long)] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                requested_model(Some("application/json"), black_box(body))
                    .await
                    .expect("model")
            })
        });
    }
    g.finish();
}

/// A 20-chunk chat completion stream as OpenAI sends it, one event a frame,
/// with the final usage chunk (`stream_options.include_usage`).
fn sse_stream() -> Vec<Bytes> {
    let head = r#""id":"chatcmpl-9x8Yb2mQ4kD7pL1vR3sT6uW0","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_mock""#;
    let mut events = Vec::new();
    events.push(Bytes::from(format!(
        "data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
    )));
    for i in 0..20 {
        events.push(Bytes::from(format!(
            "data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
        )));
    }
    events.push(Bytes::from(format!(
        "data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n"
    )));
    events.push(Bytes::from(format!(
        "data: {{{head},\"choices\":[],\"usage\":{{\"prompt_tokens\":17,\"completion_tokens\":20,\"total_tokens\":37,\"prompt_tokens_details\":{{\"cached_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":0}}}}}}\n\n"
    )));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn usage_tap(c: &mut Criterion) {
    let events = sse_stream();
    let total: usize = events.iter().map(Bytes::len).sum();
    // The same stream cut into 61-byte frames: lines straddle frames.
    let whole: Vec<u8> = events.iter().flat_map(|e| e.iter().copied()).collect();
    let split: Vec<Bytes> = whole.chunks(61).map(Bytes::copy_from_slice).collect();
    let json_body = Bytes::from_static(
        br#"{"id":"chatcmpl-9x8Yb2mQ4kD7pL1vR3sT6uW0","object":"chat.completion","created":1767225600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Once upon a time a portcullis guarded a castle gate against every forged key.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":17,"completion_tokens":20,"total_tokens":37},"system_fingerprint":"fp_mock"}"#,
    );
    let mut g = c.benchmark_group("usage_tap");
    g.throughput(Throughput::Bytes(total as u64));
    for (name, frames) in [("sse_20_chunks", &events), ("sse_20_chunks_split", &split)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut tap = UsageTap::new(TapKind::Sse);
                for f in black_box(frames) {
                    tap.feed(f);
                }
                tap.finish().expect("usage")
            })
        });
    }
    g.throughput(Throughput::Bytes(json_body.len() as u64));
    g.bench_function("json_body", |b| {
        b.iter(|| {
            let mut tap = UsageTap::new(TapKind::Json);
            tap.feed(black_box(&json_body));
            tap.finish().expect("usage")
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    key_format,
    key_cache_hit,
    allowlist,
    model_from_body,
    usage_tap
);
criterion_main!(benches);
