//! Upstream safety: provider base URLs cannot point at link-local or cloud
//! metadata addresses unless explicitly allowed, and `api_base`-style body
//! fields send nothing anywhere new.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use portcullis::config::{Config, ConfigSource};

fn provider(base_url: &str, extra: &str) -> String {
    format!(
        "providers:\n  - name: p\n    kind: openai_compatible\n    base_url: {base_url}\n    models: [m]\n{extra}"
    )
}

#[test]
fn metadata_and_link_local_base_urls_are_refused_at_load() {
    let env = |_: &str| None;
    for url in [
        "http://169.254.169.254/latest",
        "http://169.254.1.1/v1",
        "http://[fe80::1]/v1",
        "http://[fd00:ec2::254]/v1",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://100.100.100.200/v1",
    ] {
        let e = Config::from_yaml(&provider(url, ""), &env, ConfigSource::Defaults).unwrap_err();
        assert_eq!(e.errors[0].location, "providers[0].base_url", "{url}: {e}");
        assert!(e.errors[0].message.contains("allow_link_local"), "{e}");
        // The explicit opt-in is honoured.
        Config::from_yaml(
            &provider(url, "    allow_link_local: true\n"),
            &env,
            ConfigSource::Defaults,
        )
        .unwrap();
    }
    for url in [
        "ftp://example.com/v1",
        "http://example.com/v1?x=1",
        "not a url",
    ] {
        assert!(
            Config::from_yaml(&provider(url, ""), &env, ConfigSource::Defaults).is_err(),
            "{url}"
        );
    }
    Config::from_yaml(
        &provider("http://127.0.0.1:8000/v1", ""),
        &env,
        ConfigSource::Defaults,
    )
    .unwrap();
}

#[tokio::test]
async fn body_fields_cannot_redirect_the_call() {
    let h = Harness::start().await;
    let key = h.key().await;
    let mut body = chat_body("gpt-4o-mini");
    body["api_base"] = "http://169.254.169.254/".into();
    body["base_url"] = "http://attacker.example/".into();
    body["api_key"] = "sk-attacker".into();
    let resp = h.chat(&key, body).await;
    assert_eq!(resp.status(), 200);
    let seen = h.mock.requests();
    assert_eq!(
        seen.len(),
        1,
        "the call went to the configured provider only"
    );
    let sent = seen[0].json().unwrap();
    assert!(
        sent.get("api_base").is_none()
            && sent.get("base_url").is_none()
            && sent.get("api_key").is_none(),
        "{sent}"
    );
    h.stop().await;
}
