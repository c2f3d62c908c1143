//! Streamed bodies: one body frame per pre-rendered event, optional delay
//! between events, and a configurable ending (normal, stall, abort).

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};

use crate::fault::{FOREVER, Fault};

/// How a streamed body ends after its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// End the body normally.
    Done,
    /// Never end it (and never send anything else).
    Hang,
    /// Fail the body so that hyper aborts the connection / resets the stream.
    Die,
}

impl Tail {
    /// The tail for a fault, and how many content events may be sent before
    /// it (`None` = all).
    pub fn of(fault: Fault) -> (Tail, Option<usize>) {
        match fault {
            Fault::HangMidStream => (Tail::Hang, Some(2)),
            Fault::DieMidStream => (Tail::Die, Some(2)),
            _ => (Tail::Done, None),
        }
    }
}

/// Pause before failing a dying body, so that the chunks before it reach
/// the client first.
const DIE_FLUSH_DELAY: Duration = Duration::from_millis(10);

struct State {
    events: std::vec::IntoIter<Bytes>,
    first: bool,
    delay: Duration,
    tail: Option<Tail>,
}

/// A `200` response streaming `events`, one body frame each, sleeping `delay`
/// between two events, then ending as `tail` says.
pub(crate) fn stream_response(
    events: Vec<Bytes>,
    delay: Duration,
    tail: Tail,
    content_type: &'static str,
) -> Response {
    let state = State {
        events: events.into_iter(),
        first: true,
        delay,
        tail: Some(tail),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let next = st.events.next();
        if !st.first
            && !st.delay.is_zero()
            && (next.is_some() || matches!(st.tail, Some(Tail::Hang | Tail::Die)))
        {
            tokio::time::sleep(st.delay).await;
        }
        st.first = false;
        if let Some(ev) = next {
            return Some((Ok::<Bytes, io::Error>(ev), st));
        }
        match st.tail.take()? {
            Tail::Done => None,
            Tail::Hang => {
                tokio::time::sleep(FOREVER).await;
                None
            }
            Tail::Die => {
                // Let hyper flush what was sent so far (it flushes when the
                // body is pending), then fail the body.
                tokio::time::sleep(DIE_FLUSH_DELAY).await;
                Some((
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "mock-die-mid-stream: aborting the response body",
                    )),
                    st,
                ))
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == SSE {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    resp
}

/// The SSE content type.
pub(crate) const SSE: &str = "text/event-stream";

/// `event: name\ndata: {json}\n\n`.
pub(crate) fn named_event(name: &str, json: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(json.len() + name.len() + 16);
    v.extend_from_slice(b"event: ");
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(b"\ndata: ");
    v.extend_from_slice(json);
    v.extend_from_slice(b"\n\n");
    Bytes::from(v)
}

/// `data: [DONE]\n\n`.
pub(crate) const DONE: Bytes = Bytes::from_static(b"data: [DONE]\n\n");

/// A non-streamed JSON body cut in half then stalled or aborted, for the
/// mid-stream faults on non-streaming requests.
pub(crate) fn broken_json(body: Vec<u8>, tail: Tail) -> Response {
    let half = body.len() / 2;
    let mut body = Bytes::from(body);
    let first = body.split_to(half);
    stream_response(vec![first], Duration::ZERO, tail, "application/json")
}
