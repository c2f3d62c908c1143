//! The accept loop and the per-request wrapper (counting, recording,
//! latency) around the axum router.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::RecordedRequest;
use crate::error::ApiError;
use crate::router::Shared;

/// Spawns hyper's background futures (HTTP/2 streams) so that they end when
/// the server is closed (when the [`watch::Sender`] is dropped).
#[derive(Clone)]
struct Exec {
    closed: watch::Receiver<()>,
}

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut closed = self.closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = closed.changed() => {}
            }
        });
    }
}

/// Accepts connections until the task is aborted. Connections run in a
/// [`JoinSet`] owned by this task, so aborting it closes them all; HTTP/2
/// stream tasks stop when `closed`'s sender is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    app: Router,
    closed: watch::Receiver<()>,
) {
    let mut builder = auto::Builder::new(Exec { closed });
    builder.http2().max_concurrent_streams(1024);
    let mut conns: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    let shared = shared.clone();
                    let app = app.clone();
                    let builder = builder.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let shared = shared.clone();
                            let app = app.clone();
                            async move { Ok::<_, Infallible>(handle(shared, app, req).await) }
                        });
                        if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                            tracing::debug!(error = %e, "mock provider connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Typically EMFILE: back off a little instead of spinning.
                    tracing::warn!(error = %e, "mock provider accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
}

/// Whether a path is one of the mock's own (uncounted, unrecorded) ones.
fn is_internal(path: &str) -> bool {
    path == "/healthz" || path == "/__mock" || path.starts_with("/__mock/")
}

async fn handle(shared: Arc<Shared>, app: Router, req: Request<Incoming>) -> Response {
    let path = req.uri().path();
    if is_internal(path) {
        return call(app, req.map(Body::new)).await;
    }
    let is_v1 = path == "/v1" || path.starts_with("/v1/");
    shared.count.fetch_add(1, Ordering::Relaxed);
    let req = if shared.opts.record {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(Body::new(body), usize::MAX).await {
            Ok(b) => b,
            Err(e) => {
                return ApiError::bad_request(format!("could not read the request body: {e}"))
                    .into_response();
            }
        };
        shared.record(RecordedRequest {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: bytes.clone(),
        });
        Request::from_parts(parts, Body::from(bytes))
    } else {
        req.map(Body::new)
    };
    if is_v1 && !shared.opts.latency.is_zero() {
        tokio::time::sleep(shared.opts.latency).await;
    }
    call(app, req).await
}

async fn call(app: Router, req: Request<Body>) -> Response {
    match app.oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}
