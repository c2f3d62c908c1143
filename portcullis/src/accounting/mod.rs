//! Accounting: every request that got past authentication leaves exactly one
//! [`UsageRecord`] in the ledger, whether it completed, was refused, failed
//! upstream, or lost its client half-way through a stream.
//!
//! A [`Meter`] is created when the request arrives and finishes once: when the
//! response body ends ([`MeteredBody`]), when the request is refused, or — on
//! drop — when the client went away first (status 499).

pub mod ledger;
pub mod usage;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

pub use ledger::{Ledger, LedgerWriter};
use usage::{TapKind, Usage, UsageTap};

use crate::authn::Principal;
use crate::authz::RouteFacts;
use crate::store::UsageRecord;

/// Status recorded when the client disconnected before the response ended.
pub const CLIENT_CLOSED: u16 = 499;

/// Accounts for one request; finishes exactly once.
#[derive(Debug)]
pub struct Meter {
    ledger: Ledger,
    record: UsageRecord,
    started: Instant,
    done: bool,
}

impl Meter {
    /// Starts metering a request from `principal`.
    pub fn new(
        ledger: Ledger,
        ts_ms: i64,
        request_id: &str,
        method: &str,
        principal: &Principal,
    ) -> Self {
        Meter {
            ledger,
            record: UsageRecord {
                ts: ts_ms,
                request_id: request_id.to_owned(),
                key_id: principal.key_id().map(str::to_owned),
                user: principal.user().map(str::to_owned),
                team: principal.team().map(str::to_owned),
                method: method.to_owned(),
                ..UsageRecord::default()
            },
            started: Instant::now(),
            done: false,
        }
    }

    /// Notes the provider, endpoint and model once known.
    pub fn route(&mut self, facts: RouteFacts) {
        self.record.provider = facts.provider;
        self.record.endpoint = facts.group;
        self.record.model = facts.model;
    }

    /// Notes that the response headers arrived now.
    pub fn first_byte(&mut self) {
        self.record.ttfb_ms = Some(ms(self.started.elapsed()));
    }

    /// Finishes with a status, usage and error code.
    pub fn finish(&mut self, status: u16, usage: Option<Usage>, error_code: Option<&str>) {
        if self.done {
            return;
        }
        self.done = true;
        let r = &mut self.record;
        r.status = status;
        if let Some(u) = usage {
            r.prompt_tokens = u.prompt_tokens;
            r.completion_tokens = u.completion_tokens;
        }
        r.error_code = error_code.map(str::to_owned);
        r.latency_ms = ms(self.started.elapsed());
        let record = std::mem::take(r);
        tracing::info!(
            target: "portcullis::access",
            request_id = %record.request_id,
            key_id = record.key_id.as_deref().unwrap_or(""),
            provider = record.provider.as_deref().unwrap_or(""),
            model = record.model.as_deref().unwrap_or(""),
            endpoint = record.endpoint.as_deref().unwrap_or(""),
            status = record.status,
            prompt_tokens = record.prompt_tokens,
            completion_tokens = record.completion_tokens,
            latency_ms = record.latency_ms,
            error = record.error_code.as_deref().unwrap_or(""),
            "request"
        );
        self.ledger.record(record);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish(CLIENT_CLOSED, None, Some("client_disconnected"));
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The upstream idle timeout fired between two body chunks.
#[derive(Debug, thiserror::Error)]
#[error("upstream idle timeout")]
pub struct IdleTimeout;

pin_project_lite::pin_project! {
    /// A response body streamed through unchanged, while the usage tap reads
    /// it, the idle timeout watches it and the meter waits for its end.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        #[pin]
        idle: Sleep,
        idle_timeout: Duration,
        tap: UsageTap,
        meter: Meter,
        status: u16,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let usage = this.tap.finish();
            this.meter.finish(CLIENT_CLOSED, usage, Some("client_disconnected"));
        }
    }
}

impl<B> MeteredBody<B> {
    /// Wraps `inner`, a body sent with `status`.
    pub fn new(inner: B, kind: TapKind, meter: Meter, status: u16, idle_timeout: Duration) -> Self {
        MeteredBody {
            inner,
            idle: tokio::time::sleep(idle_timeout),
            idle_timeout,
            tap: UsageTap::new(kind),
            meter,
            status,
        }
    }
}

impl<B> Body for MeteredBody<B>
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
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.tap.feed(data);
                }
                if this.inner.is_end_stream() {
                    let usage = this.tap.finish();
                    this.meter.finish(*this.status, usage, None);
                } else {
                    let deadline = Instant::now() + *this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let usage = this.tap.finish();
                this.meter
                    .finish(502, usage, Some("upstream_broken_stream"));
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                let usage = this.tap.finish();
                this.meter.finish(*this.status, usage, None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.poll(cx).is_ready() {
                    let usage = this.tap.finish();
                    this.meter.finish(504, usage, Some("upstream_timeout"));
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
