//! Resource IDs in provider responses: what a request created, and IDs the
//! provider hands out later (a batch's `output_file_id`, the messages, runs and
//! steps of an owned thread, a response's output items).
//!
//! Only positions the provider fills are read — the top-level object, a list's
//! `data`, a streamed event's `response`/`item`, and a few named derived fields
//! — never echoed client data such as tool schemas or metadata, so a client
//! cannot make the gateway register an ID by mentioning it.

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;

use super::families::Family;
use crate::store::{ResourceRecord, SharedStore, StoreError};

/// How to read one response.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The family the request creates (the top-level `id` when the object has no known `object`).
    pub creates: Option<Family>,
    /// The family of a list's items when they carry no `object` field.
    pub children: Option<Family>,
    /// The last ID of the path: parent of created children.
    pub parent: Option<String>,
    /// Register stored chat completions (the request had `store: true`).
    pub stored: bool,
}

/// A new ID found in a response: family, id, parent.
pub type Found = (Family, String, Option<String>);

/// The IDs in one JSON document (a whole body or one SSE event). `response`
/// remembers the response id of a stream, the parent of its output items.
pub fn extract(v: &Value, r: &Reading, response: &mut Option<String>, out: &mut Vec<Found>) {
    let Value::Object(o) = v else { return };
    if o.get("object").and_then(Value::as_str) == Some("list") {
        for item in o
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            object(item, r.children, r.parent.as_deref(), r, out);
        }
        return;
    }
    if let Some(t) = o.get("type").and_then(Value::as_str)
        && t.starts_with("response.")
        && !o.contains_key("object")
    {
        // A Responses stream event.
        if let Some(resp) = o.get("response").filter(|r| r.is_object()) {
            if let Some(id) = resp.get("id").and_then(Value::as_str) {
                *response = Some(id.to_owned());
            }
            object(resp, None, None, r, out);
        }
        if let Some(item) = o.get("item") {
            item_ids(item, response.as_deref(), out);
        }
        return;
    }
    object(v, r.creates, r.parent.as_deref(), r, out);
}

/// One provider object.
fn object(
    v: &Value,
    default: Option<Family>,
    parent: Option<&str>,
    r: &Reading,
    out: &mut Vec<Found>,
) {
    let Value::Object(o) = v else { return };
    if o.get("deleted").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let Some(id) = o.get("id").and_then(Value::as_str) else {
        return;
    };
    let kind = o.get("object").and_then(Value::as_str);
    let Some(family) = kind.map_or(default, Family::of_object) else {
        return;
    };
    let str_field = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let parent = family
        .parent_field()
        .and_then(str_field)
        .or_else(|| parent.map(str::to_owned));
    if family != Family::ChatCompletion || r.stored {
        out.push((family, id.to_owned(), parent));
    }
    match family {
        Family::Batch => {
            for k in ["output_file_id", "error_file_id"] {
                if let Some(f) = str_field(k) {
                    out.push((Family::File, f, None));
                }
            }
        }
        Family::Run => {
            if let Some(t) = str_field("thread_id") {
                out.push((Family::Thread, t, None));
            }
        }
        Family::RunStep => {
            if let (Some(m), Some(t)) = (
                v.pointer("/step_details/message_creation/message_id")
                    .and_then(Value::as_str),
                str_field("thread_id"),
            ) {
                out.push((Family::Message, m.to_owned(), Some(t)));
            }
        }
        Family::FineTuningJob => {
            let files = o.get("result_files").and_then(Value::as_array);
            for f in files.into_iter().flatten().filter_map(Value::as_str) {
                out.push((Family::File, f.to_owned(), None));
            }
        }
        Family::Upload => {
            if let Some(f) = o
                .get("file")
                .and_then(|f| f.get("id"))
                .and_then(Value::as_str)
            {
                out.push((Family::File, f.to_owned(), None));
            }
        }
        Family::Response => output_items(o.get("output"), id, out),
        Family::ChatCompletion => {
            for c in o
                .get("choices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for at in ["/message/audio/id", "/delta/audio/id"] {
                    if let Some(a) = c.pointer(at).and_then(Value::as_str) {
                        out.push((Family::ChatAudio, a.to_owned(), None));
                    }
                }
            }
        }
        _ => {}
    }
    if kind == Some("response.compaction") {
        output_items(o.get("output"), id, out);
    }
}

fn output_items(output: Option<&Value>, parent: &str, out: &mut Vec<Found>) {
    for item in output.and_then(Value::as_array).into_iter().flatten() {
        item_ids(item, Some(parent), out);
    }
}

/// An output item of a response: the item itself, the container a
/// code-interpreter call created, and the container files its text cites.
fn item_ids(item: &Value, response: Option<&str>, out: &mut Vec<Found>) {
    if let Some(id) = item.get("id").and_then(Value::as_str) {
        out.push((Family::Item, id.to_owned(), response.map(str::to_owned)));
    }
    if let Some(c) = item.get("container_id").and_then(Value::as_str) {
        out.push((Family::Container, c.to_owned(), None));
    }
    let parts = item.get("content").and_then(Value::as_array);
    for part in parts.into_iter().flatten() {
        let notes = part.get("annotations").and_then(Value::as_array);
        for a in notes.into_iter().flatten() {
            if a.get("type").and_then(Value::as_str) == Some("container_file_citation")
                && let (Some(c), Some(f)) = (
                    a.get("container_id").and_then(Value::as_str),
                    a.get("file_id").and_then(Value::as_str),
                )
            {
                out.push((Family::Container, c.to_owned(), None));
                out.push((Family::ContainerFile, f.to_owned(), Some(c.to_owned())));
            }
        }
    }
}

/// Turns found IDs into store records.
pub fn records(
    found: Vec<Found>,
    provider: &str,
    owner: &str,
    now_ms: i64,
    seen: &mut HashSet<(Family, String)>,
) -> Vec<ResourceRecord> {
    found
        .into_iter()
        .filter(|(f, id, _)| !id.is_empty() && seen.insert((*f, id.clone())))
        .map(|(f, id, parent)| ResourceRecord {
            seq: 0,
            provider: provider.to_owned(),
            family: f.as_str().to_owned(),
            id,
            owner: owner.to_owned(),
            parent,
            created_at: now_ms,
        })
        .collect()
}

/// Longest SSE line read for IDs; longer lines pass unread.
const MAX_LINE: usize = 4 * 1024 * 1024;
/// At most this many distinct IDs are remembered per stream (duplicates beyond are re-inserted, harmlessly).
const MAX_SEEN: usize = 4096;

/// Where a stream's new IDs go.
pub struct Sink {
    /// The store.
    pub store: SharedStore,
    /// Provider name.
    pub provider: String,
    /// Owner of everything the stream creates.
    pub owner: String,
    /// How to read it.
    pub reading: Reading,
    /// Wall clock, epoch ms.
    pub now_ms: i64,
}

pin_project_lite::pin_project! {
    /// An SSE body passed through frame by frame. When a frame completes an
    /// event that carries new IDs, the frame is held until they are stored, so
    /// the client never sees an ID the gateway does not know yet.
    pub struct SseRegistrar<B> {
        #[pin]
        inner: B,
        sink: Sink,
        partial: Vec<u8>,
        skipping: bool,
        response: Option<String>,
        seen: HashSet<(Family, String)>,
        held: Option<(Frame<Bytes>, BoxFuture<'static, Result<(), StoreError>>)>,
    }
}

impl<B> SseRegistrar<B> {
    /// Wraps an SSE body.
    pub fn new(inner: B, sink: Sink) -> Self {
        SseRegistrar {
            inner,
            sink,
            partial: Vec::new(),
            skipping: false,
            response: None,
            seen: HashSet::new(),
            held: None,
        }
    }
}

/// The stream was cut because new IDs could not be stored.
#[derive(Debug, thiserror::Error)]
#[error("cannot record streamed resource ids: {0}")]
pub struct RecordFailed(String);

fn found_in_line(line: &[u8], reading: &Reading, response: &mut Option<String>) -> Vec<Found> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(data) = line.strip_prefix(b"data:") else {
        return Vec::new();
    };
    if memchr::memmem::find(data, b"\"id\"").is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        extract(&v, reading, response, &mut out);
    }
    out
}

impl<B> Body for SseRegistrar<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Some((_, fut)) = this.held.as_mut() {
            return match fut.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(())) => Poll::Ready(this.held.take().map(|(f, _)| Ok(f))),
                Poll::Ready(Err(e)) => {
                    this.held.take();
                    tracing::error!(error = %e, "cannot record streamed resource ids; cutting the stream");
                    Poll::Ready(Some(Err(Box::new(RecordFailed(e.to_string())))))
                }
            };
        }
        let frame = match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let mut found = Vec::new();
        if let Some(data) = frame.data_ref() {
            let mut rest: &[u8] = data;
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                let line = &rest[..nl];
                if this.partial.is_empty() {
                    if !*this.skipping {
                        found.extend(found_in_line(line, &this.sink.reading, this.response));
                    }
                } else {
                    let mut whole = std::mem::take(this.partial);
                    whole.extend_from_slice(line);
                    if !*this.skipping {
                        found.extend(found_in_line(&whole, &this.sink.reading, this.response));
                    }
                }
                *this.skipping = false;
                rest = &rest[nl + 1..];
            }
            if !rest.is_empty() && !*this.skipping {
                if this.partial.len() + rest.len() > MAX_LINE {
                    *this.partial = Vec::new();
                    *this.skipping = true;
                } else {
                    this.partial.extend_from_slice(rest);
                }
            }
        }
        if this.seen.len() > MAX_SEEN {
            this.seen.clear();
        }
        let recs = records(
            found,
            &this.sink.provider,
            &this.sink.owner,
            this.sink.now_ms,
            this.seen,
        );
        if recs.is_empty() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let store = this.sink.store.clone();
        let mut fut: BoxFuture<'static, Result<(), StoreError>> =
            Box::pin(async move { store.insert_resources(&recs).await });
        match fut.as_mut().poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Err(e)) => {
                tracing::error!(error = %e, "cannot record streamed resource ids; cutting the stream");
                Poll::Ready(Some(Err(Box::new(RecordFailed(e.to_string())))))
            }
            Poll::Pending => {
                *this.held = Some((frame, fut));
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reading(creates: Option<Family>) -> Reading {
        Reading {
            creates,
            children: None,
            parent: None,
            stored: false,
        }
    }

    #[test]
    fn batch_output_files_and_run_threads() {
        let mut out = Vec::new();
        extract(
            &json!({"id": "batch_1", "object": "batch", "output_file_id": "file-o", "error_file_id": null, "input_file_id": "file-i"}),
            &reading(Some(Family::Batch)),
            &mut None,
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                (Family::Batch, "batch_1".into(), None),
                (Family::File, "file-o".into(), None)
            ]
        );
        let mut out = Vec::new();
        extract(
            &json!({"id": "run_1", "object": "thread.run", "thread_id": "thread_9", "assistant_id": "asst_1"}),
            &reading(Some(Family::Run)),
            &mut None,
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                (Family::Run, "run_1".into(), Some("thread_9".into())),
                (Family::Thread, "thread_9".into(), None)
            ]
        );
    }

    #[test]
    fn stream_events_and_deleted_objects() {
        let r = reading(None);
        let mut resp = None;
        let mut out = Vec::new();
        extract(
            &json!({"type": "response.created", "response": {"id": "resp_1", "object": "response", "output": []}}),
            &r,
            &mut resp,
            &mut out,
        );
        extract(
            &json!({"type": "response.output_item.added", "item": {"id": "msg_1", "type": "message"}}),
            &r,
            &mut resp,
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                (Family::Response, "resp_1".into(), None),
                (Family::Item, "msg_1".into(), Some("resp_1".into()))
            ]
        );
        let mut out = Vec::new();
        extract(
            &json!({"id": "file-1", "object": "file", "deleted": true}),
            &r,
            &mut None,
            &mut out,
        );
        assert!(out.is_empty());
    }
}
