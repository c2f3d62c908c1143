//! The harness itself works: a chat completion goes through and is recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;

#[tokio::test]
async fn chat_completion_round_trip() {
    let h = Harness::start().await;
    let key = h.key().await;
    let resp = h.chat(&key, chat_body("gpt-4o-mini")).await;
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    let rec = h.usage_record(&rid).await;
    assert_eq!(rec.status, 200);
    assert_eq!(rec.completion_tokens, Some(20));
    assert_eq!(rec.model.as_deref(), Some("gpt-4o-mini"));
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    h.stop().await;
}
