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

/// Usage from one JSON document, if it has any: the top-level `usage` object
/// (chat, completions, embeddings), else the one in a top-level `response`
/// object (the Responses API's `response.completed` events), and so on down.
///
/// Every response body goes through here, so the document is not parsed:
/// [`top_level`] walks its structure (strings skipped with `memchr`) to the
/// top-level keys, and only the `usage` object itself is deserialized. A
/// body that is not a JSON object has no usage; a key spelled with escapes
/// (`"us\u0061ge"`) is not recognised (no provider writes one).
pub fn from_json(bytes: &[u8]) -> Option<Usage> {
    from_json_at(bytes, 0)
}

fn from_json_at(bytes: &[u8], nesting: usize) -> Option<Usage> {
    // `response` inside `response` is not a shape any provider sends; a bound
    // keeps a hostile document from recursing deep.
    const MAX_NESTING: usize = 4;
    if let Some(u) = sole_top_level_usage(bytes) {
        return Some(u);
    }
    let [usage, response] = top_level(bytes, [b"usage", b"response"])?;
    let parsed = usage.and_then(read_usage);
    parsed.or_else(|| {
        response
            .filter(|_| nesting < MAX_NESTING)
            .and_then(|v| from_json_at(v, nesting + 1))
    })
}

/// The values (each from its first byte to the end of `doc`) of the first
/// occurrence of each of `keys` among the keys of the top-level object of
/// `doc`; `None` when `doc` does not start with an object. Structure only:
/// nothing else of the document is checked.
fn top_level<'a, const N: usize>(doc: &'a [u8], keys: [&[u8]; N]) -> Option<Fields<'a, N>> {
    walk_top_level(doc, keys, false).map(|(found, _)| found)
}

/// The values [`top_level`] found, one per key (each from its first byte to
/// the end of the document).
type Fields<'a, const N: usize> = [Option<&'a [u8]>; N];

/// [`top_level`]; with `to_end`, walked on to the object's closing bracket
/// whatever it found, and also the index of that bracket (`None` when the
/// object is not closed).
fn walk_top_level<'a, const N: usize>(
    doc: &'a [u8],
    keys: [&[u8]; N],
    to_end: bool,
) -> Option<(Fields<'a, N>, Option<usize>)> {
    let skip_ws = |mut i: usize| {
        while doc.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(0);
    if doc.get(i) != Some(&b'{') {
        return None;
    }
    let mut found = [None; N];
    let mut end = None;
    let mut depth = 0usize;
    // The next string at depth 1 is a key (after `{` or `,`), not a value.
    let mut key_next = false;
    while i < doc.len() {
        match doc[i] {
            b'"' => {
                let start = i + 1;
                let end = string_end(doc, start)?;
                i = end + 1;
                if depth == 1 && key_next {
                    key_next = false;
                    let name = &doc[start..end];
                    if let Some(k) = keys.iter().position(|k| *k == name)
                        && found[k].is_none()
                    {
                        let colon = skip_ws(i);
                        if doc.get(colon) != Some(&b':') {
                            return None;
                        }
                        let value = skip_ws(colon + 1);
                        found[k] = doc.get(value..);
                        if !to_end && found.iter().all(Option::is_some) {
                            break;
                        }
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                key_next = depth == 1;
                i += 1;
            }
            b'}' | b']' => {
                if depth <= 1 {
                    end = Some(i);
                    break; // the top-level object ends
                }
                depth -= 1;
                i += 1;
            }
            b',' => {
                key_next = depth == 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    Some((found, end))
}

/// The usage value at the start of `v` (an object, or `null`).
fn read_usage(v: &[u8]) -> Option<Usage> {
    plain_usage(v).unwrap_or_else(|| serde_usage(v))
}

fn serde_usage(v: &[u8]) -> Option<Usage> {
    Option::<Usage>::deserialize(&mut serde_json::Deserializer::from_slice(v))
        .ok()
        .flatten()
}

/// The top-level `usage` object, read without walking the whole document,
/// when that is certain: `"usage"` occurs once, as a key (after `{` or `,`: in
/// JSON a quote inside a string is escaped), its value is an object, and what
/// follows it closes the document's object. `None` otherwise (a `null` usage
/// included); [`top_level`] then walks the document. Chat and completion
/// responses end with their usage, so this reads the usage object and the
/// bytes after it instead of every string of the answer (the walk was the
/// largest cost of reading usage), and the usage object once: its fields and
/// its extent come from one walk.
fn sole_top_level_usage(doc: &[u8]) -> Option<Usage> {
    static KEY: std::sync::LazyLock<memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
    // Two forward searches (the first occurrence, then none after it): the
    // forward searcher is vectorised, the reverse one is not (it was most of
    // this function's cost).
    let at = KEY.find(doc)?;
    if KEY.find(&doc[at + 7..]).is_some() {
        return None;
    }
    let before = doc[..at].iter().rev().find(|b| !b.is_ascii_whitespace())?;
    if !matches!(before, b'{' | b',') {
        return None;
    }
    let skip_ws = |mut i: usize| {
        while doc.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    let colon = skip_ws(at + 7);
    if doc.get(colon) != Some(&b':') {
        return None;
    }
    let start = skip_ws(colon + 1);
    let value = &doc[start..];
    let (fields, len) = usage_object(value)?;
    // The rest must close exactly the object the key is in, and that must
    // be the document's last byte.
    let rest = &doc[start + len..];
    let close = unclosed_end(rest)?;
    if rest[close] != b'}' || !rest[close + 1..].iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    plain_usage_of(fields).unwrap_or_else(|| serde_usage(&value[..len]))
}

/// The usage object at the start of `v` read without serde, when it has the
/// plain shape every provider sends: each count a non-negative integer or
/// `null`, no field under both of its names. `None` when it has not: serde
/// then decides. The answers agree, except that a field repeated under the
/// same name (which serde refuses whole) counts its first value here. Every
/// response carries a usage object, and deserializing it was most of the
/// cost of reading usage.
fn plain_usage(v: &[u8]) -> Option<Option<Usage>> {
    if literal_null(v) {
        return Some(None);
    }
    let (fields, _) = usage_object(v)?;
    plain_usage_of(fields)
}

/// The [`USAGE_FIELDS`] of the object that starts `v`, and its length, from
/// one walk; `None` when `v` does not start with a whole object (serde
/// refuses one cut short).
fn usage_object(v: &[u8]) -> Option<(Fields<'_, 6>, usize)> {
    let (fields, end) = walk_top_level(v, USAGE_FIELDS, true)?;
    Some((fields, end? + 1))
}

/// The fields a usage object may count in, each under either of its names
/// (chat completions, then responses); read by [`plain_usage_of`].
const USAGE_FIELDS: [&[u8]; 6] = [
    b"prompt_tokens",
    b"input_tokens",
    b"completion_tokens",
    b"output_tokens",
    b"prompt_tokens_details",
    b"input_tokens_details",
];

/// [`plain_usage`] from the values of an object's [`USAGE_FIELDS`].
fn plain_usage_of(fields: Fields<'_, 6>) -> Option<Option<Usage>> {
    let [
        prompt,
        input,
        completion,
        output,
        prompt_details,
        input_details,
    ] = fields;
    fn one<'a>(a: Option<&'a [u8]>, b: Option<&'a [u8]>) -> Option<Option<&'a [u8]>> {
        match (a, b) {
            (Some(_), Some(_)) => None, // serde's duplicate field: let it refuse
            (a, b) => Some(a.or(b)),
        }
    }
    let cached = match one(prompt_details, input_details)? {
        None => None,
        Some(d) if literal_null(d) => None,
        Some(d) => {
            let [cached] = top_level(d, [b"cached_tokens"])?;
            count(cached)?
        }
    };
    Some(Some(Usage {
        prompt_tokens: count(one(prompt, input)?)?,
        completion_tokens: count(one(completion, output)?)?,
        cached_tokens: cached,
    }))
}

/// A count at the start of `v`: `Some(None)` for a missing field or `null`,
/// `Some(Some(n))` for a plain integer, `None` for anything else.
fn count(v: Option<&[u8]>) -> Option<Option<u64>> {
    let Some(v) = v else {
        return Some(None);
    };
    if literal_null(v) {
        return Some(None);
    }
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    // No leading zero (not JSON), at most 19 digits (fits a u64).
    if digits == 0 || digits > 19 || (digits > 1 && v[0] == b'0') || !ends_value(v.get(digits)) {
        return None;
    }
    std::str::from_utf8(&v[..digits])
        .ok()?
        .parse()
        .ok()
        .map(Some)
}

/// The index of the first closing bracket of `v` that nothing in `v` opened
/// (strings skipped); `None` when there is none.
fn unclosed_end(v: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'"' => i = string_end(v, i + 1)?,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return Some(i),
            b'}' | b']' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn literal_null(v: &[u8]) -> bool {
    v.starts_with(b"null") && ends_value(v.get(4))
}

/// True when `next` (the byte after a scalar) may follow a value.
fn ends_value(next: Option<&u8>) -> bool {
    next.is_none_or(|b| b.is_ascii_whitespace() || matches!(b, b',' | b'}' | b']'))
}

/// The index of the quote that ends the string whose content starts at `start`.
fn string_end(doc: &[u8], mut start: usize) -> Option<usize> {
    loop {
        let at = start + memchr::memchr2(b'"', b'\\', doc.get(start..)?)?;
        if doc[at] == b'"' {
            return Some(at);
        }
        start = at + 2; // an escape: skip the escaped byte
    }
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
    #![allow(clippy::unwrap_used)]
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

    /// The full parse the scanner replaced: the oracle for valid documents.
    #[derive(Deserialize)]
    struct Carrier {
        #[serde(default)]
        usage: Option<Usage>,
        #[serde(default)]
        response: Option<Box<Carrier>>,
    }

    fn parsed(doc: &str) -> Option<Usage> {
        fn into(c: Carrier) -> Option<Usage> {
            c.usage.or_else(|| c.response.and_then(|r| into(*r)))
        }
        serde_json::from_str::<Carrier>(doc).ok().and_then(into)
    }

    type Tokens = Option<(Option<u64>, Option<u64>, Option<u64>)>;

    fn tokens(u: Option<Usage>) -> Tokens {
        u.map(|u| (u.prompt_tokens, u.completion_tokens, u.cached_tokens))
    }

    #[test]
    fn only_top_level_usage_counts_and_it_agrees_with_a_full_parse() {
        let cases: &[(&str, Tokens)] = &[
            (
                r#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
                Some((Some(1), Some(2), None)),
            ),
            (
                " \n{ \"usage\" :\t{ \"prompt_tokens\" : 1 } }",
                Some((Some(1), None, None)),
            ),
            // A nested `usage` (a tool's input, a message field) is not the usage.
            (
                r#"{"choices":[{"usage":{"prompt_tokens":999}}],"usage":{"prompt_tokens":1}}"#,
                Some((Some(1), None, None)),
            ),
            (
                r#"{"choices":[{"message":{"usage":{"prompt_tokens":999}}}]}"#,
                None,
            ),
            (
                r#"{"content":[{"type":"tool_use","input":{"usage":{"input_tokens":999}}}],"usage":{"input_tokens":5,"output_tokens":6}}"#,
                Some((Some(5), Some(6), None)),
            ),
            // Strings that look like keys, escapes, a string ending in a backslash.
            (
                r#"{"content":"x\"usage\":{\"prompt_tokens\":5}","usage":{"prompt_tokens":2}}"#,
                Some((Some(2), None, None)),
            ),
            (
                r#"{"a":"c:\\","usage":{"prompt_tokens":3}}"#,
                Some((Some(3), None, None)),
            ),
            (
                r#"{"a":"\"}","b":["{","usage"],"usage":{"prompt_tokens":4}}"#,
                Some((Some(4), None, None)),
            ),
            (r#"{"usage":"usage","x":1}"#, None),
            // The Responses API: nested in `response`; a null `usage` falls through to it.
            (
                r#"{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":4,"output_tokens":9}}}"#,
                Some((Some(4), Some(9), None)),
            ),
            (
                r#"{"usage":null,"response":{"usage":{"input_tokens":4}}}"#,
                Some((Some(4), None, None)),
            ),
            (
                r#"{"usage":{"prompt_tokens":7},"response":{"usage":{"input_tokens":4}}}"#,
                Some((Some(7), None, None)),
            ),
            (
                r#"{"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":6,"audio_tokens":0}}}"#,
                Some((Some(10), None, Some(6))),
            ),
            (r#"{"id":"x","usage":null}"#, None),
            // A sole `usage` key that is not at the top level, near the end.
            (r#"{"a":{"usage":{"prompt_tokens":1}}}"#, None),
            (r#"{"a":{"usage":{"prompt_tokens":1}},"b":2}"#, None),
            (r#"{"x":[{"usage":{"prompt_tokens":9}}]}"#, None),
            (r#"{"x":[1,{"usage":null}],"y":{}}"#, None),
            // A sole top-level one with keys after it, nested values among them.
            (
                r#"{"id":"c","usage":{"prompt_tokens":4,"completion_tokens":20},"tier":"default","x":{"y":[1,{"z":"}"}]}}"#,
                Some((Some(4), Some(20), None)),
            ),
            (
                "{\"usage\" : { \"prompt_tokens\" : 2 } ,\n \"a\":\"b\" }\n",
                Some((Some(2), None, None)),
            ),
            (r#"{}"#, None),
            (r#"[{"usage":{"prompt_tokens":1}}]"#, None),
            (r#""usage""#, None),
            ("", None),
        ];
        for (doc, want) in cases {
            assert_eq!(tokens(from_json(doc.as_bytes())), *want, "{doc}");
            // (serde reads a struct from an array too, positionally: not a usage.)
            if !doc.starts_with('[') {
                assert_eq!(tokens(parsed(doc)), *want, "oracle: {doc}");
            }
        }
    }

    #[test]
    fn a_chat_completion_is_read_without_walking_it() {
        let doc = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"mock \"usage\": mock","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":20,"total_tokens":24,"prompt_tokens_details":{"cached_tokens":0}},"service_tier":"default","system_fingerprint":"fp_mock"}"#;
        assert_eq!(
            tokens(sole_top_level_usage(doc.as_bytes())),
            Some((Some(4), Some(20), Some(0))),
            "read from the usage object alone"
        );
        // Keys after the usage object are fine when they close the document's object.
        assert_eq!(
            tokens(sole_top_level_usage(
                br#"{"usage":{"prompt_tokens":1},"b":[2]}"#
            )),
            Some((Some(1), None, None))
        );
        // A `null` usage, a usage object not at the top level, or a document
        // not closed after it, is left to the walk.
        assert!(sole_top_level_usage(br#"{"a":1,"usage":null }"#).is_none());
        assert!(sole_top_level_usage(br#"{"a":{"usage":{"prompt_tokens":1}},"b":2}"#).is_none());
        assert!(sole_top_level_usage(br#"{"usage":{"prompt_tokens":1}"#).is_none());
        assert!(sole_top_level_usage(br#"{"usage":{"prompt_tokens":1"#).is_none());
        assert_eq!(
            tokens(from_json(doc.as_bytes())),
            Some((Some(4), Some(20), Some(0)))
        );
        // Two `usage` keys (one nested): the walk decides.
        let two = r#"{"choices":[{"usage":{"prompt_tokens":9}}],"usage":{"prompt_tokens":1}}"#;
        assert!(sole_top_level_usage(two.as_bytes()).is_none());
        assert_eq!(
            tokens(from_json(two.as_bytes())),
            Some((Some(1), None, None))
        );
    }

    #[test]
    fn broken_documents_yield_no_usage_and_never_panic() {
        let doc = r#"{"id":"x","choices":[{"message":{"content":"a \"quoted\" word"}}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        // Every prefix: no panic; a prefix that holds the whole usage object still reads it
        // (a body cut short after its usage was reported), a shorter one reads nothing.
        let at = doc.find(r#""usage""#).unwrap();
        for n in 0..doc.len() {
            let u = from_json(&doc.as_bytes()[..n]);
            if n < at + r#""usage":{"prompt_tokens":3,"completion_tokens":4}"#.len() {
                assert_eq!(u, None, "{n}");
            } else {
                assert_eq!(tokens(u), Some((Some(3), Some(4), None)), "{n}");
            }
        }
        for doc in [
            r#"{"usage""#,
            r#"{"usage" 1}"#,
            r#"{"a":"\"#,
            "{\"a\":\"\\",
            r#"{"usage":{"prompt_tokens":-1}}"#,
        ] {
            assert_eq!(from_json(doc.as_bytes()), None, "{doc}");
        }
        // `response` nesting is bounded.
        let deep = format!(
            "{}{{\"usage\":{{\"prompt_tokens\":1}}}}{}",
            r#"{"response":"#.repeat(50),
            "}".repeat(50)
        );
        assert_eq!(from_json(deep.as_bytes()), None);
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
    fn the_plain_usage_reader_agrees_with_serde() {
        let serde = |v: &str| {
            Option::<Usage>::deserialize(&mut serde_json::Deserializer::from_slice(v.as_bytes()))
                .ok()
                .flatten()
        };
        let shapes = [
            r#"{"prompt_tokens":4,"completion_tokens":20,"total_tokens":24,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}"#,
            r#"{"input_tokens":10,"output_tokens":1,"input_tokens_details":{"cached_tokens":8}}"#,
            r#"{ "prompt_tokens" : 7 , "completion_tokens" :3 }"#,
            r#"{"prompt_tokens":null,"completion_tokens":null}"#,
            r#"{"prompt_tokens":10,"prompt_tokens_details":null}"#,
            r#"{"prompt_tokens":10,"prompt_tokens_details":{}}"#,
            r#"{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":null}}"#,
            r#"{}"#,
            "null",
            r#"{"prompt_tokens":18446744073709551615}"#,
            r#"{"prompt_tokens":18446744073709551616}"#,
            r#"{"prompt_tokens":1234567890123456789}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{"prompt_tokens":4.0}"#,
            r#"{"prompt_tokens":4e2}"#,
            r#"{"prompt_tokens":04}"#,
            r#"{"prompt_tokens":0}"#,
            r#"{"prompt_tokens":"4"}"#,
            r#"{"prompt_tokens":true}"#,
            r#"{"prompt_tokens":nul}"#,
            r#"{"prompt_tokens":nullx}"#,
            r#"{"prompt_tokens":1,"input_tokens":2}"#,
            r#"{"completion_tokens":1,"output_tokens":2}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":1},"input_tokens_details":{"cached_tokens":2}}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":1.5}}"#,
            r#"{"prompt_tokens_details":[1]}"#,
            r#"{"prompt_tokens_details":3}"#,
            r#"{"nested":{"prompt_tokens":9},"prompt_tokens":2}"#,
            r#"{"x":"\"prompt_tokens\":9","prompt_tokens":2}"#,
            r#"[1,2]"#,
            "17",
            r#"{"prompt_tokens":5"#,
        ];
        for v in shapes {
            assert_eq!(
                plain_usage(v.as_bytes()).unwrap_or_else(|| serde(v)),
                serde(v),
                "{v}"
            );
        }
        // The shape every provider sends is read without serde.
        assert!(plain_usage(shapes[0].as_bytes()).is_some());
        assert!(plain_usage(shapes[1].as_bytes()).is_some());
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
