//! Request bodies: the resource IDs they reference, the few top-level facts
//! ownership needs (`store`, audio output), and mass-assignment stripping.
//!
//! A JSON body is parsed strictly (a duplicate member at any depth is a 400:
//! two parsers could disagree on which one counts) and walked for the fields
//! of [`families::BODY_FIELDS`] and friends, skipping free-form subtrees
//! ([`families::OPAQUE_FIELDS`]). A cheap byte scan decides first whether a
//! body can contain any of them at all, so plain chat bodies are not parsed
//! twice; a body with a `\u` escape is always parsed, since an escape can spell
//! any key.

use std::fmt;

use bytes::Bytes;
use memchr::memmem;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::families::{self, Family};
use crate::error::ApiError;

/// What a request body told ownership.
#[derive(Debug, Default)]
pub struct BodyFacts {
    /// Resource IDs the body references.
    pub ids: Vec<(Family, String)>,
    /// Top-level `store` (`None` when absent).
    pub store: Option<bool>,
    /// The request asks for audio output (`modalities` has `audio`, or `audio` is set).
    pub audio: bool,
    /// The body that goes upstream when fields were stripped.
    pub rewritten: Option<Bytes>,
    /// Names of the stripped fields (for the log).
    pub stripped: Vec<String>,
}

/// Byte strings at least one of which every interesting JSON body contains.
const NEEDLES: &[&str] = &[
    "\\u",
    "_id\"",
    "_ids\"",
    "_file\"",
    "\"id\"",
    "\"conversation\"",
    "\"container\"",
    "\"voice\"",
    "\"video\"",
    "\"audio\"",
    "\"source\"",
    "\"store\"",
    "\"modalities\"",
    // Stripped fields.
    "\"api_",
    "\"base_url\"",
    "\"organization\"",
    "\"project\"",
    "\"extra_",
    "headers\"",
    "\"default_",
    "\"custom_llm_provider\"",
    "\"azure_",
    "\"deployment_id\"",
    "\"aws_",
    "\"vertex_",
    "\"region_name\"",
    "\"timeout\"",
    "\"max_retries\"",
    "\"http_client\"",
    "\"prox",
    "\"litellm_",
];

/// [`NEEDLES`] arranged for one pass over a body. Every needle holds a quote
/// or a backslash (its *anchor*, the first such byte), so every occurrence of
/// a needle is found at one of the body's quotes and backslashes; the byte
/// next to the anchor picks the few needles worth comparing there.
struct NeedleSet {
    /// By anchor (0 quote, 1 backslash) × the byte after it: (anchor offset, needle).
    after: Vec<Vec<(usize, &'static [u8])>>,
    /// Needles whose anchor is their last byte, by anchor × the byte before it.
    before: Vec<Vec<(usize, &'static [u8])>>,
    /// Needles without a neighbour to the anchor, or without an anchor: searched on their own.
    others: Vec<memmem::Finder<'static>>,
}

fn anchor_index(b: u8) -> Option<usize> {
    match b {
        b'"' => Some(0),
        b'\\' => Some(1),
        _ => None,
    }
}

impl NeedleSet {
    fn new() -> Self {
        let mut set = NeedleSet {
            after: vec![Vec::new(); 512],
            before: vec![Vec::new(); 512],
            others: Vec::new(),
        };
        for n in NEEDLES.iter().map(|n| n.as_bytes()) {
            let found = n
                .iter()
                .enumerate()
                .find_map(|(at, &b)| anchor_index(b).map(|a| (at, a)));
            let slot = found.and_then(|(at, a)| match (n.get(at + 1), at.checked_sub(1)) {
                (Some(&next), _) => set.after.get_mut(a * 256 + usize::from(next)),
                (None, Some(p)) => n
                    .get(p)
                    .and_then(|&prev| set.before.get_mut(a * 256 + usize::from(prev))),
                (None, None) => None,
            });
            match (slot, found) {
                (Some(list), Some((at, _))) => list.push((at, n)),
                _ => set.others.push(memmem::Finder::new(n)),
            }
        }
        set
    }

    fn any_in(&self, body: &[u8]) -> bool {
        if self.others.iter().any(|f| f.find(body).is_some()) {
            return true;
        }
        let hit = |list: Option<&Vec<(usize, &[u8])>>, i: usize| {
            list.is_some_and(|l| {
                l.iter().any(|(at, n)| {
                    i.checked_sub(*at)
                        .and_then(|start| body.get(start..))
                        .is_some_and(|rest| rest.starts_with(n))
                })
            })
        };
        memchr::memchr2_iter(b'"', b'\\', body).any(|i| {
            let Some(a) = body.get(i).copied().and_then(anchor_index) else {
                return false;
            };
            let next = body.get(i + 1).map(|&b| a * 256 + usize::from(b));
            let prev = i
                .checked_sub(1)
                .and_then(|p| body.get(p))
                .map(|&b| a * 256 + usize::from(b));
            hit(next.and_then(|k| self.after.get(k)), i)
                || hit(prev.and_then(|k| self.before.get(k)), i)
        })
    }
}

fn worth_parsing(body: &[u8]) -> bool {
    // Built once: this runs on every JSON request. One `memchr2` pass over the
    // body instead of one `memmem` search per needle (31 passes per request
    // were a profiled hot spot).
    static NEEDLE_SET: std::sync::LazyLock<NeedleSet> = std::sync::LazyLock::new(NeedleSet::new);
    NEEDLE_SET.any_in(body)
}

/// Reads a JSON body (already known to be JSON by authorization).
pub fn json_facts(body: &Bytes, group: &str) -> Result<BodyFacts, ApiError> {
    let mut facts = BodyFacts::default();
    if !worth_parsing(body) {
        return Ok(facts);
    }
    let value = parse_strict(body)?;
    let Value::Object(root) = &value else {
        return Ok(facts);
    };
    facts.store = root.get("store").and_then(Value::as_bool);
    facts.audio = root.get("audio").is_some_and(|a| !a.is_null())
        || root
            .get("modalities")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|x| x.as_str() == Some("audio")));
    ids_in(root, group, &mut facts.ids)?;
    facts.stripped = root
        .keys()
        .filter(|k| families::is_stripped(k))
        .cloned()
        .collect();
    if !facts.stripped.is_empty() {
        facts.rewritten = Some(strip(body)?);
    }
    Ok(facts)
}

/// The resource IDs a parsed request body of endpoint group `group` references.
pub fn ids_in(
    root: &Map<String, Value>,
    group: &str,
    ids: &mut Vec<(Family, String)>,
) -> Result<(), ApiError> {
    walk_object(root, ids)?;
    if families::ITEM_GROUPS.contains(&group) {
        for key in ["input", "items"] {
            for item in root
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(id) = item.get("id").and_then(Value::as_str) {
                    ids.push((Family::Item, id.to_owned()));
                }
            }
        }
    }
    Ok(())
}

fn walk_object(o: &Map<String, Value>, ids: &mut Vec<(Family, String)>) -> Result<(), ApiError> {
    if let Some(t) = o.get("type").and_then(Value::as_str)
        && let Some((_, f)) = families::TYPED_IDS.iter().find(|(name, _)| *name == t)
        && let Some(id) = o.get("id").and_then(Value::as_str)
    {
        ids.push((*f, id.to_owned()));
    }
    for (k, v) in o {
        if families::OPAQUE_FIELDS.contains(&k.as_str()) {
            continue;
        }
        if k == "source" && v.get("type").and_then(Value::as_str) == Some("responses") {
            // An eval data source that samples every stored response of the
            // provider account, whoever created it.
            return Err(ApiError::BadRequest {
                message: "A `responses` data source reads every stored response of the provider account; it is not available through this gateway.".into(),
                param: Some("data_source"),
            });
        }
        if let Some((_, f)) = families::BODY_FIELDS.iter().find(|(name, _)| name == k) {
            match v {
                Value::String(s) => ids.push((*f, s.clone())),
                Value::Array(items) => {
                    for s in items.iter().filter_map(Value::as_str) {
                        ids.push((*f, s.to_owned()));
                    }
                }
                _ => {}
            }
        }
        if let Value::Object(inner) = v
            && let Some((_, f)) = families::BODY_OBJECT_IDS.iter().find(|(name, _)| name == k)
            && let Some(id) = inner.get("id").and_then(Value::as_str)
        {
            ids.push((*f, id.to_owned()));
        }
        walk_value(v, ids)?;
    }
    Ok(())
}

fn walk_value(v: &Value, ids: &mut Vec<(Family, String)>) -> Result<(), ApiError> {
    match v {
        Value::Object(o) => walk_object(o, ids),
        Value::Array(items) => items.iter().try_for_each(|i| walk_value(i, ids)),
        _ => Ok(()),
    }
}

/// Removes the stripped top-level fields, keeping every other member's raw text.
fn strip(body: &Bytes) -> Result<Bytes, ApiError> {
    let map: Vec<(String, Box<serde_json::value::RawValue>)> =
        serde_json::from_slice::<OrderedRaw>(body)
            .map_err(|e| ApiError::InvalidJson(e.to_string()))?
            .0;
    let mut out = Vec::with_capacity(body.len());
    out.push(b'{');
    let mut first = true;
    for (k, v) in map.iter().filter(|(k, _)| !families::is_stripped(k)) {
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, k).map_err(|e| ApiError::Internal(e.to_string()))?;
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}

/// Sets `safety_identifier` to `id`, dropping any client-sent `safety_identifier` and `user`.
pub fn set_user_id(body: &Bytes, id: &str) -> Result<Bytes, ApiError> {
    let map = serde_json::from_slice::<OrderedRaw>(body)
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?
        .0;
    let mut out = Vec::with_capacity(body.len() + id.len() + 24);
    out.extend_from_slice(b"{\"safety_identifier\":");
    serde_json::to_writer(&mut out, id).map_err(|e| ApiError::Internal(e.to_string()))?;
    for (k, v) in map
        .iter()
        .filter(|(k, _)| k != "safety_identifier" && k != "user")
    {
        out.push(b',');
        serde_json::to_writer(&mut out, k).map_err(|e| ApiError::Internal(e.to_string()))?;
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}

/// A JSON object's members in document order, values kept as raw text.
struct OrderedRaw(Vec<(String, Box<serde_json::value::RawValue>)>);

impl<'de> serde::Deserialize<'de> for OrderedRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedRaw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<OrderedRaw, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry()? {
                    out.push((k, v));
                }
                Ok(OrderedRaw(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses JSON into a [`Value`], refusing duplicate object members at any depth.
pub fn parse_strict(body: &[u8]) -> Result<Value, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = StrictSeed
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            if e.to_string().starts_with("duplicate member") {
                ApiError::BadRequest {
                    message: format!("The request body is ambiguous: {e}."),
                    param: None,
                }
            } else {
                ApiError::InvalidJson(e.to_string())
            }
        })?;
    Ok(v)
}

struct StrictSeed;

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = s.next_element_seed(StrictSeed)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = m.next_key::<String>()? {
            let v = m.next_value_seed(StrictSeed)?;
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!("duplicate member `{k}`")));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// The family a form field names (multipart or URL-encoded), if any.
fn form_field(name: &str) -> Option<Family> {
    let last = name
        .rsplit_once('[')
        .and_then(|(_, r)| r.strip_suffix(']'))
        .unwrap_or(name);
    families::FORM_FIELDS
        .iter()
        .find(|(n, _)| *n == name)
        .or_else(|| families::BODY_FIELDS.iter().find(|(n, _)| *n == last))
        .map(|(_, f)| *f)
}

/// The resource IDs in a URL-encoded form body (OpenAI does not take these,
/// but a compatible server might).
pub fn urlencoded_ids(body: &[u8]) -> Vec<(Family, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| form_field(&k).map(|f| (f, v)))
        .collect()
}

/// Reads the text fields of a multipart form for resource IDs
/// ([`families::FORM_FIELDS`], and any field whose name, or last `[...]` part,
/// is one of [`families::BODY_FIELDS`]). Other parts (the file itself) are not read.
pub async fn form_ids(content_type: &str, body: Bytes) -> Result<Vec<(Family, String)>, ApiError> {
    let bad = || ApiError::BadRequest {
        message: "Malformed multipart body.".into(),
        param: None,
    };
    let boundary = multer::parse_boundary(content_type).map_err(|_| bad())?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut ids = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|_| bad())? {
        let family = form_field(field.name().unwrap_or(""));
        // Read even when sent as a file part: a server could take it as text.
        if let Some(f) = family {
            let text = field.text().await.map_err(|_| bad())?;
            ids.push((f, text));
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn the_one_pass_scan_finds_what_a_search_per_needle_finds() {
        let by_needle = |body: &[u8]| {
            NEEDLES
                .iter()
                .any(|n| memmem::find(body, n.as_bytes()).is_some())
        };
        let mut bodies: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\"".to_vec(),
            b"\\".to_vec(),
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
            br#"{"model":"m","x":"a\"id\"b"}"#.to_vec(),
            br#"{"model":"m","x":"\u0041"}"#.to_vec(),
            br#"{"model":"m","x":"\\"}"#.to_vec(),
        ];
        for n in NEEDLES {
            let n = n.as_bytes();
            bodies.push(n.to_vec());
            bodies.push([b"{\"a\":1,".as_slice(), n, b"}"].concat());
            // Each needle cut short at either end, and with a byte changed.
            bodies.push(n[1..].to_vec());
            bodies.push(n[..n.len() - 1].to_vec());
            for i in 0..n.len() {
                let mut m = n.to_vec();
                m[i] ^= 0x20;
                bodies.push([b"xx".as_slice(), &m, b"yy"].concat());
            }
        }
        for b in &bodies {
            assert_eq!(
                worth_parsing(b),
                by_needle(b),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        assert!(NEEDLES.iter().all(|n| worth_parsing(n.as_bytes())));
    }

    fn ids(v: Value, group: &str) -> Vec<(Family, String)> {
        let mut got = json_facts(&Bytes::from(v.to_string()), group).unwrap().ids;
        got.sort();
        got
    }

    #[test]
    fn finds_ids_at_any_depth_but_not_in_free_form_data() {
        let got = ids(
            json!({
                "model": "m",
                "previous_response_id": "resp_1",
                "conversation": {"id": "conv_1"},
                "tools": [{"type": "file_search", "vector_store_ids": ["vs_1", "vs_2"]},
                          {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-2"]}},
                          {"type": "function", "function": {"parameters": {"properties": {"file_id": {"type": "string"}}, "examples": []}}}],
                "input": [{"type": "message", "role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]},
                          {"type": "item_reference", "id": "msg_9"},
                          {"type": "reasoning", "id": "rs_1", "summary": []}],
                "metadata": {"file_id": "not-an-id"},
            }),
            "responses",
        );
        let want: Vec<(Family, String)> = vec![
            (Family::File, "file-1".into()),
            (Family::File, "file-2".into()),
            (Family::VectorStore, "vs_1".into()),
            (Family::VectorStore, "vs_2".into()),
            (Family::Response, "resp_1".into()),
            (Family::Item, "msg_9".into()),
            (Family::Item, "msg_9".into()),
            (Family::Item, "rs_1".into()),
            (Family::Conversation, "conv_1".into()),
        ];
        let mut want = want;
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn assistants_bodies() {
        let got = ids(
            json!({"assistant_id": "asst_1",
                   "thread": {"messages": [{"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": "file-3"}}],
                                             "attachments": [{"file_id": "file-4", "tools": []}]}],
                              "tool_resources": {"code_interpreter": {"file_ids": ["file-5"]}}}}),
            "threads",
        );
        assert_eq!(got.len(), 4);
        assert!(got.contains(&(Family::Assistant, "asst_1".into())));
    }

    #[test]
    fn escapes_and_duplicates() {
        let body = Bytes::from_static(br#"{"file\u005fid": "file-x"}"#);
        assert_eq!(
            json_facts(&body, "files").unwrap().ids,
            vec![(Family::File, "file-x".into())]
        );
        let dup = Bytes::from_static(
            br#"{"model":"m","input":[{"previous_response_id":"a","previous_response_id":"b"}]}"#,
        );
        assert!(json_facts(&dup, "responses").is_err());
        let plain =
            Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert!(json_facts(&plain, "chat").unwrap().ids.is_empty());
    }

    #[test]
    fn strips_redirecting_fields_keeping_the_rest() {
        let body = Bytes::from_static(
            br#"{"model":"gpt","api_base":"http://evil","messages":[{"role":"user","content":"x"}],"api_key":"sk-1","litellm_params":{},"temperature":0.1}"#,
        );
        let f = json_facts(&body, "chat").unwrap();
        assert_eq!(f.stripped, vec!["api_base", "api_key", "litellm_params"]);
        let out: Value = serde_json::from_slice(&f.rewritten.unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"model":"gpt","messages":[{"role":"user","content":"x"}],"temperature":0.1})
        );
    }

    #[test]
    fn eval_responses_sources_are_refused() {
        let body = Bytes::from(
            json!({"data_source": {"type": "completions", "source": {"type": "responses", "model": "m"}}})
                .to_string(),
        );
        assert!(json_facts(&body, "evals").is_err());
    }
}
