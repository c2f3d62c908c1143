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
use crate::limits::config::Price;
use crate::limits::{Outcome, Reservation};
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
    price: Option<Price>,
    reservation: Option<Reservation>,
    answered: bool,
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
            price: None,
            reservation: None,
            answered: false,
        }
    }

    /// Notes the model's price (what reported usage costs).
    pub fn price(&mut self, price: Option<Price>) {
        self.price = price;
    }

    /// Takes over the request's reservation, settled when the meter finishes.
    pub fn reserve(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    /// Notes that the provider answered with a success status: from now on,
    /// a request that ends without reported usage is charged its reservation.
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// Notes the provider, endpoint and model once known.
    /// Facts already noted are kept when `facts` lacks them.
    pub fn route(&mut self, facts: RouteFacts) {
        if facts.provider.is_some() {
            self.record.provider = facts.provider;
        }
        if facts.group.is_some() {
            self.record.endpoint = facts.group;
        }
        if facts.model.is_some() {
            self.record.model = facts.model;
        }
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
        let reported = usage.filter(|u| u.prompt_tokens.is_some() || u.completion_tokens.is_some());
        match (reported, self.reservation.take()) {
            (Some(u), res) => {
                let (p, c) = (
                    u.prompt_tokens.unwrap_or(0),
                    u.completion_tokens.unwrap_or(0),
                );
                let cached = u.cached_tokens.unwrap_or(0);
                r.cost_micros = self.price.map(|price| price.cost(p, cached, c));
                if let Some(res) = res {
                    res.settle(Outcome::Reported {
                        tokens: p.saturating_add(c),
                        cost_micros: r.cost_micros.unwrap_or(0),
                    });
                }
            }
            // Never silently zero: a stream the client left, or an answer
            // without usage, is charged what was reserved.
            (None, Some(res)) if res.billable() && (self.answered || status == CLIENT_CLOSED) => {
                if self.answered {
                    res.count_unreported();
                    tracing::warn!(target: "portcullis::usage_unreported", request_id = %r.request_id, "the provider reported no usage: charged the reservation");
                }
                let charged = res.settle(Outcome::Unreported);
                r.cost_micros = self.price.map(|_| charged);
            }
            (None, Some(res)) => {
                res.settle(Outcome::NotCharged);
            }
            (None, None) => {}
        }
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
        strip: Option<crate::limits::sse::UsageChunkFilter>,
        ended: bool,
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
            strip: None,
            ended: false,
        }
    }

    /// Removes the usage chunk the gateway asked for (the client did not) from an SSE body.
    pub fn strip_usage_chunk(mut self) -> Self {
        self.strip = Some(crate::limits::sse::UsageChunkFilter::default());
        self
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
        if *this.ended {
            return Poll::Ready(None);
        }
        loop {
            return match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.tap.feed(data);
                    }
                    let end = this.inner.is_end_stream();
                    if end {
                        let usage = this.tap.finish();
                        this.meter.finish(*this.status, usage, None);
                    } else {
                        let deadline = Instant::now() + *this.idle_timeout;
                        this.idle.as_mut().reset(deadline);
                    }
                    let frame = match this.strip.as_mut() {
                        None => frame,
                        Some(f) => match frame.into_data() {
                            Ok(data) => {
                                let mut out = f.filter(&data);
                                if end {
                                    let rest = f.finish();
                                    if !rest.is_empty() {
                                        out = [out, rest].concat().into();
                                    }
                                }
                                if out.is_empty() && !end {
                                    continue;
                                }
                                Frame::data(out)
                            }
                            Err(frame) => frame,
                        },
                    };
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
                    if let Some(rest) = this.strip.as_mut().map(|f| f.finish())
                        && !rest.is_empty()
                    {
                        *this.ended = true;
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
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
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || (self.strip.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.strip.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
