//! Removing the usage chunk the gateway asked for from a stream whose client
//! did not: a line filter over SSE that holds back only an unfinished line.

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Drops `data:` events with an empty `choices` and a `usage` object (the
/// final usage chunk of chat and legacy completions), and the blank line
/// that ends them.
#[derive(Debug, Default)]
pub struct UsageChunkFilter {
    partial: BytesMut,
    drop_blank: bool,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    usage: Option<IgnoredAny>,
}

fn is_usage_chunk(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(data) = line.strip_prefix(b"data:") else {
        return false;
    };
    serde_json::from_slice::<Chunk>(data)
        .is_ok_and(|c| c.usage.is_some() && c.choices.is_some_and(|c| c.is_empty()))
}

fn mentions_usage(b: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memmem::Finder::new(b"\"usage\":{"));
    FINDER.find(b).is_some()
}

impl UsageChunkFilter {
    /// The part of `data` (with what was held back) the client may see now.
    pub fn filter(&mut self, data: &Bytes) -> Bytes {
        let Some(last_nl) = memchr::memrchr(b'\n', data) else {
            self.partial.extend_from_slice(data);
            return Bytes::new();
        };
        let complete: Bytes = if self.partial.is_empty() {
            data.slice(..=last_nl)
        } else {
            self.partial.extend_from_slice(&data[..=last_nl]);
            std::mem::take(&mut self.partial).freeze()
        };
        self.partial.extend_from_slice(&data[last_nl + 1..]);
        if !self.drop_blank && !mentions_usage(&complete) {
            return complete;
        }
        let mut out = BytesMut::with_capacity(complete.len());
        for line in complete.split_inclusive(|b| *b == b'\n') {
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let body = body.strip_suffix(b"\r").unwrap_or(body);
            if self.drop_blank && body.is_empty() {
                self.drop_blank = false;
                continue;
            }
            self.drop_blank = false;
            if is_usage_chunk(body) {
                self.drop_blank = true;
                continue;
            }
            out.extend_from_slice(line);
        }
        out.freeze()
    }

    /// Whatever was held back when the stream ends.
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.partial).freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_the_usage_chunk_whatever_the_framing() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n\
                      data: [DONE]\n\n";
        let want = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: [DONE]\n\n";
        for size in [1, 2, 5, 17, 64, stream.len()] {
            let mut f = UsageChunkFilter::default();
            let mut out = Vec::new();
            for chunk in stream.as_bytes().chunks(size) {
                out.extend_from_slice(&f.filter(&Bytes::copy_from_slice(chunk)));
            }
            out.extend_from_slice(&f.finish());
            assert_eq!(String::from_utf8_lossy(&out), want, "chunk size {size}");
        }
    }
}
