//! The connection pool of one upstream: keep-alive HTTP/1.1 connections
//! (and one shared HTTP/2 connection where TLS negotiates `h2`) to the
//! provider's one origin, over hyper's connection-level client.
//!
//! Why not `hyper_util`'s pooled `Client`: it serves any number of origins,
//! so every request hashes its origin (byte by byte, with SipHash) twice, to
//! check a connection out and to put it back, and it spawns a task per
//! request that waits for the connection to be idle again. A provider has
//! one origin: here a connection is checked out from a plain stack, and
//! goes back onto it when its response body has been read to the end (the
//! moment hyper can send the next request on it), from the body itself.
//! What it keeps from that client: a request that a reused connection
//! refused before sending it (the provider closed it while idle) is sent
//! again on a new connection; idle connections expire.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

use super::ssrf::GuardedResolver;
use crate::error::ApiError;

/// What a pool connects with: TCP (through the SSRF-guarded resolver), then
/// TLS for `https` origins.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

type ReqBody = Full<Bytes>;

/// A provider's response, its body still streaming from the connection.
pub type UpstreamResponse = Response<PooledBody>;

/// The pool of one origin. Cloning shares it.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

struct Inner {
    connector: Connector,
    /// `scheme://authority/`: what the connector connects to, and the
    /// origin of HTTP/2 requests.
    origin: Uri,
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: Mutex<VecDeque<Idle>>,
    /// The HTTP/2 connection, when the origin negotiated `h2`.
    h2: Mutex<Option<http2::SendRequest<ReqBody>>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Whether the task that drops expired idle connections runs.
    reaper: std::sync::Once,
}

struct Idle {
    tx: http1::SendRequest<ReqBody>,
    since: Instant,
}

enum Sender {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

impl Pool {
    /// A pool for `scheme://authority`, keeping at most `max_idle` idle
    /// connections for at most `idle_timeout` each.
    pub fn new(
        connector: Connector,
        scheme: http::uri::Scheme,
        authority: http::uri::Authority,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Result<Pool, String> {
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("upstream origin: {e}"))?;
        Ok(Pool {
            inner: Arc::new(Inner {
                connector,
                origin,
                idle: Mutex::new(VecDeque::new()),
                h2: Mutex::new(None),
                max_idle,
                idle_timeout,
                reaper: std::sync::Once::new(),
            }),
        })
    }

    /// Sends `req` (its URI the path and query only) to the origin: on an
    /// idle connection when there is one, else on a new one. A reused
    /// connection that turns out closed before the request went out is
    /// replaced, and the request sent again.
    pub async fn send(&self, mut req: Request<ReqBody>) -> Result<UpstreamResponse, ApiError> {
        loop {
            let (sender, reused) = match self.inner.checkout() {
                Some(s) => (s, true),
                // Boxed: the connect future (resolver, TCP, TLS, handshakes)
                // is large, and inline it would make every request's future
                // that much larger to move, though few requests connect.
                None => (Box::pin(self.connect()).await?, false),
            };
            let sent = match sender {
                Sender::H2(mut tx) => {
                    let h1_uri = std::mem::take(req.uri_mut());
                    *req.uri_mut() = self.inner.absolute(h1_uri)?;
                    req.headers_mut().remove(http::header::HOST);
                    tx.try_send_request(req)
                        .await
                        .map(|r| r.map(|body| PooledBody { body, back: None }))
                }
                Sender::H1(mut tx) => match tx.try_send_request(req).await {
                    Ok(r) => {
                        let back = Some(Back {
                            tx,
                            pool: Arc::downgrade(&self.inner),
                        });
                        let mut resp = r.map(|body| PooledBody { body, back });
                        // A response without a body (204, 304, HEAD) is already read.
                        resp.body_mut().put_back_if_ended();
                        Ok(resp)
                    }
                    Err(e) => Err(e),
                },
            };
            match sent {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        tracing::debug!(origin = %self.inner.origin, "a pooled connection was closed; sending on a new one");
                        req = unsent;
                        if req.uri().scheme().is_some() {
                            // It went to an HTTP/2 connection: back to origin form.
                            let pq = req.uri().path_and_query().cloned();
                            *req.uri_mut() = pq.map(Uri::from).unwrap_or_default();
                        }
                    }
                    _ => return Err(classify(e.error())),
                },
            }
        }
    }

    /// A new connection to the origin, its task spawned.
    async fn connect(&self) -> Result<Sender, ApiError> {
        let inner = &self.inner;
        inner
            .reaper
            .call_once(|| spawn_reaper(Arc::downgrade(inner)));
        let io = inner
            .connector
            .clone()
            .oneshot(inner.origin.clone())
            .await
            .map_err(|e| classify(&*e))?;
        let h2 = io.connected().is_negotiated_h2();
        if h2 {
            let (tx, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| classify(&e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            *lock(&inner.h2) = Some(tx.clone());
            Ok(Sender::H2(tx))
        } else {
            let (tx, conn) = http1::handshake(io).await.map_err(|e| classify(&e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
            Ok(Sender::H1(tx))
        }
    }

    /// Idle HTTP/1.1 connections now (for tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        lock(&self.inner.idle).len()
    }
}

impl Inner {
    /// The shared HTTP/2 connection, else the most recently used idle
    /// HTTP/1.1 connection that is still open and not expired.
    fn checkout(&self) -> Option<Sender> {
        if let Some(tx) = lock(&self.h2).as_ref().filter(|tx| !tx.is_closed()) {
            return Some(Sender::H2(tx.clone()));
        }
        let mut idle = lock(&self.idle);
        while let Some(c) = idle.pop_back() {
            if c.tx.is_ready() && c.since.elapsed() < self.idle_timeout {
                return Some(Sender::H1(c.tx));
            }
        }
        None
    }

    /// Takes back an HTTP/1.1 connection whose response has been read.
    fn put_back(&self, tx: http1::SendRequest<ReqBody>) {
        let mut idle = lock(&self.idle);
        if idle.len() < self.max_idle {
            idle.push_back(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }

    /// `path_and_query` made absolute at the origin (HTTP/2 requests carry it).
    fn absolute(&self, path_and_query: Uri) -> Result<Uri, ApiError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = self.origin.scheme().cloned();
        parts.authority = self.origin.authority().cloned();
        parts.path_and_query = path_and_query.path_and_query().cloned();
        Uri::from_parts(parts).map_err(|_| ApiError::InvalidPath("cannot form the upstream URL"))
    }
}

/// Drops idle connections that expired or closed, every quarter of the idle
/// timeout, until the pool is gone.
fn spawn_reaper(pool: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            let every = match pool.upgrade() {
                Some(p) => p.idle_timeout / 4,
                None => return,
            };
            tokio::time::sleep(every.max(Duration::from_millis(100))).await;
            let Some(p) = pool.upgrade() else { return };
            let expired: VecDeque<Idle> = {
                let mut idle = lock(&p.idle);
                let (keep, expired): (VecDeque<Idle>, VecDeque<Idle>) = idle
                    .drain(..)
                    .partition(|c| !c.tx.is_closed() && c.since.elapsed() < p.idle_timeout);
                *idle = keep;
                expired
            };
            // Dropped outside the lock: each drop ends a connection.
            drop(expired);
        }
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Classifies a connection or request error into 502 or 504.
pub fn classify(e: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut timed_out = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            timed_out = true;
        }
        if s.to_string().contains("timed out") {
            timed_out = true;
        }
        source = s.source();
    }
    if timed_out {
        ApiError::UpstreamTimeout("connect")
    } else {
        ApiError::UpstreamUnavailable(error_chain(e))
    }
}

/// `e: its source: …` (for the log; the client sees a fixed message).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Where an HTTP/1.1 connection goes once its response is read.
struct Back {
    tx: http1::SendRequest<ReqBody>,
    pool: Weak<Inner>,
}

/// A provider's response body; an HTTP/1.1 connection goes back to its pool
/// when the body has been read to its end (dropped before that, it closes).
pub struct PooledBody {
    body: Incoming,
    back: Option<Back>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").finish_non_exhaustive()
    }
}

impl PooledBody {
    /// Puts the connection back if the body is known to be read to its end
    /// (a sized body whose bytes have all come).
    fn put_back_if_ended(&mut self) {
        if self.body.is_end_stream() {
            self.put_back();
        }
    }

    /// Puts the connection back: its response has been read to the end.
    fn put_back(&mut self) {
        let Some(Back { mut tx, pool }) = self.back.take() else {
            return;
        };
        let Some(pool) = pool.upgrade() else { return };
        if tx.is_ready() {
            pool.put_back(tx);
            return;
        }
        // The connection task has not yet taken up the end of the response
        // (another worker thread runs it): wait for it off the request path.
        // Without a runtime (a body dropped while it shuts down) the
        // connection just closes.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if tx.ready().await.is_ok() {
                    pool.put_back(tx);
                }
            });
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match polled {
            // The end, whatever the framing. A chunked body (an SSE stream)
            // is never `is_end_stream` before it, nor after it: hyper knows
            // its end only once read.
            Poll::Ready(None) => self.put_back(),
            Poll::Ready(Some(Ok(_))) => self.put_back_if_ended(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to its end without the last poll (a sized body's reader may
        // stop at its length): the connection is reusable all the same.
        self.put_back_if_ended();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pool_for(port: u16, idle_timeout: Duration) -> Pool {
        let connector =
            super::super::upstream::connector(false, Duration::from_secs(5)).expect("connector");
        Pool::new(
            connector,
            http::uri::Scheme::HTTP,
            format!("127.0.0.1:{port}").parse().expect("authority"),
            8,
            idle_timeout,
        )
        .expect("pool")
    }

    fn get(path: &str) -> Request<ReqBody> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = path.parse().expect("uri");
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("x"));
        req
    }

    /// A server on a free port serving each connection it accepts with
    /// `serve`; returns its port and how many connections it accepted.
    async fn listen<F, Fut>(serve: F) -> (u16, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(sock));
            }
        });
        (port, accepted)
    }

    /// A server answering `ok` to every request; with `close_idle`, it closes
    /// each connection right after its first response (as a provider whose
    /// keep-alive timeout ran out does), without saying so.
    async fn server(close_idle: bool) -> (u16, Arc<AtomicUsize>) {
        listen(move |mut sock| async move {
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            loop {
                let Ok(n) = sock.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&buf[..n]);
                while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    seen.drain(..end + 4);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if sock.write_all(answer).await.is_err() {
                        return;
                    }
                    if close_idle {
                        return;
                    }
                }
            }
        })
        .await
    }

    async fn read(resp: UpstreamResponse) -> Bytes {
        resp.into_body().collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn a_read_response_puts_its_connection_back_for_the_next_request() {
        let (port, accepted) = server(false).await;
        let pool = pool_for(port, Duration::from_secs(90));
        for _ in 0..5 {
            let resp = pool.send(get("/a")).await.expect("send");
            assert_eq!(read(resp).await, "ok");
            assert_eq!(pool.idle_count(), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_that_all_come_back() {
        let (port, accepted) = server(false).await;
        let pool = pool_for(port, Duration::from_secs(90));
        let held: Vec<UpstreamResponse> =
            futures_util::future::join_all((0..3).map(|_| pool.send(get("/a"))))
                .await
                .into_iter()
                .map(|r| r.expect("send"))
                .collect();
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(pool.idle_count(), 0, "busy connections are not idle");
        for resp in held {
            read(resp).await;
        }
        assert_eq!(pool.idle_count(), 3);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_does_not_return_its_connection() {
        let (port, _) = listen(|mut sock| async move {
            let mut buf = vec![0u8; 4096];
            let _ = sock.read(&mut buf).await;
            // Promises 10 bytes, sends 2, then waits.
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok")
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let pool = pool_for(port, Duration::from_secs(90));
        let resp = pool.send(get("/a")).await.expect("send");
        drop(resp);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_request_refused_by_a_connection_the_provider_closed_is_sent_again() {
        let (port, accepted) = server(true).await;
        let pool = pool_for(port, Duration::from_secs(90));
        assert_eq!(read(pool.send(get("/a")).await.expect("first")).await, "ok");
        // Let the client side see the close.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..3 {
            let resp = pool.send(get("/b")).await;
            let resp = resp.map_err(|e| format!("{i}: {e:?}")).expect("sent");
            assert_eq!(read(resp).await, "ok");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            4,
            "a new connection each time"
        );
    }

    #[tokio::test]
    async fn expired_idle_connections_are_not_used_and_are_reaped() {
        let (port, accepted) = server(false).await;
        let pool = pool_for(port, Duration::from_millis(400));
        read(pool.send(get("/a")).await.expect("send")).await;
        assert_eq!(pool.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(pool.idle_count(), 0, "the reaper dropped it");
        read(pool.send(get("/a")).await.expect("send")).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_chunked_body_sent_slowly_is_read_whole_and_its_connection_reused() {
        // Chunks sent apart in time, then the last chunk: the body ends only
        // when the connection has read it, and the connection comes back.
        let (port, accepted) = listen(|mut sock| async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head).await.is_err() {
                    return;
                }
                for part in ["one", "two", "three"] {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let chunk = format!("{:x}\r\n{part}\r\n", part.len());
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                if sock.write_all(b"0\r\n\r\n").await.is_err() {
                    return;
                }
            }
        })
        .await;
        let pool = pool_for(port, Duration::from_secs(90));
        for _ in 0..3 {
            let resp = pool.send(get("/s")).await.expect("send");
            assert_eq!(read(resp).await, "onetwothree");
            // The connection may come back a moment after its body's end.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_502_and_no_pool_entry() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let pool = pool_for(port, Duration::from_secs(90));
        let err = pool.send(get("/a")).await.expect_err("refused");
        assert!(matches!(err, ApiError::UpstreamUnavailable(_)), "{err:?}");
        assert_eq!(pool.idle_count(), 0);
    }
}
