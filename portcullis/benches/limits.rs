//! Micro-benchmarks of what limits add per request: `cargo bench -p portcullis --bench limits`.
//!
//! * a GCRA take + refund (one request-rate or token bucket);
//! * a budget reserve + settle (one budget);
//! * reading a chat body's maxima and stream flags, adding `default_max_tokens`;
//! * removing the injected usage chunk from a 20-chunk stream cut into 61-byte frames.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::authz::endpoints::ProviderKind;
use portcullis::limits::budget::BudgetState;
use portcullis::limits::estimate::inspect;
use portcullis::limits::gcra::{Gcra, Spec};
use portcullis::limits::sse::UsageChunkFilter;

fn gcra(c: &mut Criterion) {
    let spec = Spec {
        limit: 600,
        period_ms: 60_000,
    };
    let mut g = Gcra::default();
    let mut now = 0i64;
    c.bench_function("limits/gcra_take_refund", |b| {
        b.iter(|| {
            now += 1;
            let t = g.take(spec, black_box(now), 1);
            g.refund(spec, 1);
            t
        })
    });
}

fn budget(c: &mut Criterion) {
    let s = BudgetState::default();
    c.bench_function("limits/budget_reserve_settle", |b| {
        b.iter(|| {
            assert!(s.try_reserve(i64::MAX / 2, black_box(26_000)));
            s.settle(26_000, 0)
        })
    });
}

fn estimate(c: &mut Criterion) {
    let body = Bytes::from_static(
        br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Tell me a story about a portcullis that guarded a castle gate."}],"temperature":0.2}"#,
    );
    c.bench_function("limits/inspect_chat_body_add_max", |b| {
        b.iter(|| {
            inspect(
                "chat",
                ProviderKind::Openai,
                true,
                None,
                black_box(&body),
                Some(256),
                4096,
            )
        })
    });
}

fn strip(c: &mut Criterion) {
    let head = r#""id":"chatcmpl-9x8Yb2mQ4kD7pL1vR3sT6uW0","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-mini","system_fingerprint":"fp_mock""#;
    let mut s = String::new();
    for i in 0..20 {
        s.push_str(&format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"));
    }
    s.push_str(&format!("data: {{{head},\"choices\":[],\"usage\":{{\"prompt_tokens\":17,\"completion_tokens\":20,\"total_tokens\":37}}}}\n\ndata: [DONE]\n\n"));
    let frames: Vec<Bytes> = s
        .as_bytes()
        .chunks(61)
        .map(Bytes::copy_from_slice)
        .collect();
    let mut g = c.benchmark_group("limits");
    g.throughput(Throughput::Bytes(s.len() as u64));
    g.bench_function("strip_usage_chunk_20_chunks_split", |b| {
        b.iter(|| {
            let mut f = UsageChunkFilter::default();
            let mut n = 0;
            for fr in black_box(&frames) {
                n += f.filter(fr).len();
            }
            n + f.finish().len()
        })
    });
    g.finish();
}

criterion_group!(benches, gcra, budget, estimate, strip);
criterion_main!(benches);
