//! What a request may cost before it is sent: prompt tokens (estimated from
//! the body, over-counting on purpose), plus its output maximum; and the body
//! rewrites limits and accounting need (`default_max_tokens`,
//! `stream_options.include_usage`).

use std::collections::BTreeMap;

use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::authz::endpoints::ProviderKind;

/// A request's expected size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Prompt tokens: a quarter of a JSON body's bytes (an over-estimate), 0 for other bodies.
    pub prompt_tokens: u64,
    /// The request's output maximum, `default_max_tokens`, or the fallback.
    pub output_tokens: u64,
}

impl Estimate {
    /// Prompt plus output.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.output_tokens)
    }
}

/// What [`inspect`] found and changed.
#[derive(Debug, Default)]
pub struct Inspection {
    /// The expected size.
    pub estimate: Estimate,
    /// A replacement body, when something had to be added.
    pub body: Option<Bytes>,
    /// The gateway asked for the usage chunk itself: strip it from the stream.
    pub strip_usage_chunk: bool,
}

#[derive(Deserialize, Default)]
struct Knobs {
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

fn looks_like_json(content_type: Option<&str>, body: &[u8]) -> bool {
    let ct_json = content_type.is_none_or(|ct| {
        let ct = ct.split(';').next().unwrap_or("").trim();
        ct.eq_ignore_ascii_case("application/json")
    });
    ct_json && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// True when [`inspect`] has anything to do for a body without limits: it may stream.
pub fn may_stream(body: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memmem::Finder::new(b"\"stream\""));
    FINDER.find(body).is_some()
}

/// Reads the request's maxima and stream flags; adds `default_max_tokens`
/// (when configured and the request names no maximum) and asks for the usage
/// chunk of a stream that did not.
pub fn inspect(
    group: &str,
    kind: ProviderKind,
    stream_usage: bool,
    content_type: Option<&str>,
    body: &Bytes,
    default_max_tokens: Option<u64>,
    fallback_output: u64,
) -> Inspection {
    let mut out = Inspection::default();
    if !looks_like_json(content_type, body) {
        return out;
    }
    out.estimate.prompt_tokens = u64::try_from(body.len() / 4).unwrap_or(u64::MAX);
    let Ok(k) = serde_json::from_slice::<Knobs>(body) else {
        return out;
    };
    // (field the request's maximum is in, field the gateway would add)
    let max_field: Option<(Option<u64>, &str)> = match group {
        "chat" => Some((
            k.max_completion_tokens.or(k.max_tokens),
            if kind == ProviderKind::Openai {
                "max_completion_tokens"
            } else {
                "max_tokens"
            },
        )),
        "completions" => Some((k.max_tokens, "max_tokens")),
        "responses" => Some((k.max_output_tokens, "max_output_tokens")),
        _ => None,
    };
    let mut add: Vec<(&str, String)> = Vec::new();
    if let Some((named, field)) = max_field {
        out.estimate.output_tokens = match (named, default_max_tokens) {
            (Some(n), _) => n,
            (None, Some(d)) => {
                add.push((field, d.to_string()));
                d
            }
            (None, None) => fallback_output,
        };
    }
    let streams_usage_chunk = stream_usage && matches!(group, "chat" | "completions");
    if streams_usage_chunk && k.stream == Some(true) {
        let asked = k.stream_options.as_ref().and_then(|o| o.include_usage);
        if asked.is_none() || asked == Some(false) {
            add.push(("stream_options", String::new()));
            out.strip_usage_chunk = true;
        }
    }
    if add.is_empty() {
        return out;
    }
    match rewrite(body, &add) {
        Some(b) => out.body = Some(b),
        None => out.strip_usage_chunk = false,
    }
    out
}

fn rewrite(body: &Bytes, add: &[(&str, String)]) -> Option<Bytes> {
    let mut map: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body).ok()?;
    for (field, value) in add {
        let raw = if *field == "stream_options" {
            let mut opts: serde_json::Map<String, serde_json::Value> = map
                .get("stream_options")
                .and_then(|v| serde_json::from_str(v.get()).ok())
                .unwrap_or_default();
            opts.insert("include_usage".into(), serde_json::Value::Bool(true));
            serde_json::to_string(&opts).ok()?
        } else {
            value.clone()
        };
        map.insert((*field).to_owned(), RawValue::from_string(raw).ok()?);
    }
    serde_json::to_vec(&map).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &Option<Bytes>) -> serde_json::Value {
        serde_json::from_slice(b.as_deref().unwrap_or(b"null")).unwrap_or_default()
    }

    #[test]
    fn adds_default_max_tokens_and_usage_request() {
        let body = Bytes::from_static(br#"{"model":"m","stream":true,"messages":[]}"#);
        let i = inspect(
            "chat",
            ProviderKind::Openai,
            true,
            None,
            &body,
            Some(64),
            4096,
        );
        assert_eq!(
            i.estimate,
            Estimate {
                prompt_tokens: body.len() as u64 / 4,
                output_tokens: 64
            }
        );
        assert!(i.strip_usage_chunk);
        let v = json(&i.body);
        assert_eq!(v["max_completion_tokens"], 64);
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn leaves_a_request_that_names_everything_alone() {
        let body = Bytes::from_static(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":5}"#,
        );
        let i = inspect(
            "chat",
            ProviderKind::OpenaiCompatible,
            true,
            None,
            &body,
            Some(64),
            4096,
        );
        assert_eq!(i.estimate.output_tokens, 5);
        assert!(i.body.is_none());
        assert!(!i.strip_usage_chunk);
        let i = inspect(
            "embeddings",
            ProviderKind::Openai,
            true,
            None,
            &Bytes::from_static(br#"{"input":"x"}"#),
            Some(64),
            4096,
        );
        assert_eq!(i.estimate.output_tokens, 0);
        assert!(i.body.is_none());
    }

    #[test]
    fn without_a_default_reserves_the_fallback_and_sends_nothing() {
        let body = Bytes::from_static(br#"{"model":"m","input":"hi"}"#);
        let i = inspect(
            "responses",
            ProviderKind::Openai,
            true,
            None,
            &body,
            None,
            4096,
        );
        assert_eq!(i.estimate.output_tokens, 4096);
        assert!(i.body.is_none());
    }
}
