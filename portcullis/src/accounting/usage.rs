//! Reading token usage out of provider responses without buffering them:
//! a tap over SSE events (the final usage chunk) or over a JSON body.

use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;

/// Token counts a provider reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Prompt / input tokens.
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: Option<u64>,
    /// Completion / output tokens.
    #[serde(default, alias = "output_tokens")]
    pub completion_tokens: Option<u64>,
    /// Prompt tokens served from the provider's cache (`prompt_tokens_details.cached_tokens`,
    /// `input_tokens_details.cached_tokens`), part of `prompt_tokens`.
    #[serde(
        default,
        rename = "prompt_tokens_details",
        alias = "input_tokens_details",
        deserialize_with = "cached_tokens"
    )]
    pub cached_tokens: Option<u64>,
}

fn cached_tokens<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Details {
        #[serde(default)]
        cached_tokens: Option<u64>,
    }
    Ok(Option::<Details>::deserialize(d)?.and_then(|x| x.cached_tokens))
}

/// Chat/completions/embeddings carry `usage` at the top; the Responses API
/// nests it in `response` (streamed `response.completed` events).
#[derive(Deserialize)]
struct Carrier {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    response: Option<Box<Carrier>>,
}

impl Carrier {
    fn into_usage(self) -> Option<Usage> {
        self.usage
            .or_else(|| self.response.and_then(|r| r.into_usage()))
    }
}

/// Usage from one JSON document, if it has any.
pub fn from_json(bytes: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<Carrier>(bytes)
        .ok()
        .and_then(Carrier::into_usage)
}

/// True if a JSON text has a non-null `"usage"` object somewhere.
fn mentions_usage(line: &[u8]) -> bool {
    // Built once: this runs for every SSE line of every stream.
    static FINDER: std::sync::LazyLock<memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
    FINDER.find_iter(line).any(|i| {
        line[i + 7..]
            .iter()
            .copied()
            .find(|b| !b.is_ascii_whitespace() && *b != b':')
            == Some(b'{')
    })
}

/// What kind of body a tap is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapKind {
    /// `text/event-stream`.
    Sse,
    /// `application/json`.
    Json,
    /// Anything else: nothing to read.
    None,
}

impl TapKind {
    /// From a `content-type` value.
    pub fn of(content_type: Option<&str>) -> TapKind {
        let ct = content_type.unwrap_or("").trim_start();
        let starts = |p: &str| ct.get(..p.len()).is_some_and(|s| s.eq_ignore_ascii_case(p));
        if starts("text/event-stream") {
            TapKind::Sse
        } else if starts("application/json") {
            TapKind::Json
        } else {
            TapKind::None
        }
    }
}

/// Longest SSE line or JSON body the tap keeps; beyond it usage is not read.
const MAX_KEEP: usize = 8 * 1024 * 1024;

/// Watches a response body go by and remembers the last usage it saw.
#[derive(Debug)]
pub struct UsageTap {
    kind: TapKind,
    /// SSE: the unfinished line. JSON: the frames so far.
    partial: Vec<u8>,
    frames: Vec<Bytes>,
    kept: usize,
    overflow: bool,
    usage: Option<Usage>,
}

impl UsageTap {
    /// A tap for a body of `kind`.
    pub fn new(kind: TapKind) -> Self {
        UsageTap {
            kind,
            partial: Vec::new(),
            frames: Vec::new(),
            kept: 0,
            overflow: false,
            usage: None,
        }
    }

    /// Sees one body frame.
    pub fn feed(&mut self, data: &Bytes) {
        match self.kind {
            TapKind::None => {}
            TapKind::Json => {
                if self.overflow {
                    return;
                }
                self.kept += data.len();
                if self.kept > MAX_KEEP {
                    self.overflow = true;
                    self.frames = Vec::new();
                } else {
                    self.frames.push(data.clone());
                }
            }
            TapKind::Sse => self.feed_sse(data),
        }
    }

    fn feed_sse(&mut self, data: &[u8]) {
        let mut rest = data;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let line = &rest[..nl];
            if self.partial.is_empty() {
                self.sse_line(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                if !self.overflow {
                    self.sse_line(&whole);
                }
                self.overflow = false;
            }
            rest = &rest[nl + 1..];
        }
        if !rest.is_empty() && !self.overflow {
            if self.partial.len() + rest.len() > MAX_KEEP {
                self.partial = Vec::new();
                self.overflow = true;
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if mentions_usage(data)
            && let Some(u) = from_json(data)
        {
            self.usage = Some(u);
        }
    }

    /// The usage seen, once the body has ended.
    pub fn finish(&mut self) -> Option<Usage> {
        if self.kind == TapKind::Json && !self.overflow && !self.frames.is_empty() {
            let frames = std::mem::take(&mut self.frames);
            self.usage = if frames.len() == 1 {
                from_json(&frames[0])
            } else {
                from_json(&frames.concat())
            };
        }
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_final_sse_usage_across_split_frames() {
        let mut tap = UsageTap::new(TapKind::Sse);
        let events = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        for chunk in events.as_bytes().chunks(5) {
            tap.feed(&Bytes::copy_from_slice(chunk));
        }
        assert_eq!(
            tap.finish(),
            Some(Usage {
                prompt_tokens: Some(7),
                completion_tokens: Some(3),
                cached_tokens: None,
            })
        );
    }

    #[test]
    fn reads_responses_api_usage() {
        let mut tap = UsageTap::new(TapKind::Sse);
        tap.feed(&Bytes::from_static(
            b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":9}}}\n\n",
        ));
        assert_eq!(
            tap.finish(),
            Some(Usage {
                prompt_tokens: Some(4),
                completion_tokens: Some(9),
                cached_tokens: None,
            })
        );
    }

    #[test]
    fn reads_cached_prompt_tokens() {
        let u = from_json(br#"{"usage":{"prompt_tokens":100,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":64}}}"#);
        assert_eq!(u.and_then(|u| u.cached_tokens), Some(64));
        let u = from_json(br#"{"usage":{"input_tokens":10,"output_tokens":1,"input_tokens_details":{"cached_tokens":8}}}"#);
        assert_eq!(u.and_then(|u| u.cached_tokens), Some(8));
        let u = from_json(br#"{"usage":{"prompt_tokens":10,"prompt_tokens_details":null}}"#);
        assert_eq!(
            u.map(|u| (u.prompt_tokens, u.cached_tokens)),
            Some((Some(10), None))
        );
    }

    #[test]
    fn reads_json_usage_from_several_frames() {
        let mut tap = UsageTap::new(TapKind::Json);
        tap.feed(&Bytes::from_static(b"{\"id\":\"x\",\"usage\":{\"prompt_"));
        tap.feed(&Bytes::from_static(b"tokens\":5,\"completion_tokens\":2}}"));
        assert_eq!(
            tap.finish(),
            Some(Usage {
                prompt_tokens: Some(5),
                completion_tokens: Some(2),
                cached_tokens: None,
            })
        );
    }
}
