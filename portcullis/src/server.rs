//! Building the gateway from a [`Config`] and serving it: HTTP/1.1 and h2c on
//! one port (HTTPS with h2 and HTTP/1.1 by ALPN when `tls` is configured, see
//! [`crate::tls`]), a connection cap, and graceful shutdown that lets in-flight
//! requests and streams finish (up to `server.shutdown_grace`), then flushes
//! the usage ledger.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use crate::accounting::ledger::{self, Ledger, LedgerWriter};
use crate::authn::audit::{AuditLog, AuditWriter};
use crate::authn::{Authenticator, keys};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::proxy::upstream::Upstreams;
use crate::secret::Secret;
use crate::store::{self, SharedStore};
use crate::tls::{self, PeerCertificate, TlsError, TlsState};
use crate::{AppState, Inner, admin_router, router};

/// Setting under which a generated master key's digest is stored.
pub const MASTER_KEY_SETTING: &str = "master_key_sha256";

/// A gateway ready to serve.
#[derive(Debug)]
pub struct Gateway {
    /// Shared state.
    pub state: AppState,
    /// The ledger writer, flushed at shutdown.
    pub writer: LedgerWriter,
    /// The audit writer, flushed at shutdown.
    pub audit_writer: AuditWriter,
    /// A master key generated on this start (shown once, then only its digest exists).
    pub generated_master_key: Option<Secret>,
}

/// Where usage records go when the store cannot take them at shutdown.
pub fn spill_path(database: &str) -> Option<PathBuf> {
    let path = database
        .strip_prefix("sqlite://")
        .or_else(|| database.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(PathBuf::from(format!("{path}.usage-spill.jsonl")))
}

/// Opens the store, settles the master key, starts the ledger.
pub async fn build(config: Config, clock: Option<SharedClock>) -> anyhow::Result<Gateway> {
    let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
    let store = store::open(&config.database).await?;
    let (master_digest, generated_master_key) =
        master_key(&store, config.master_key.as_ref()).await?;
    let spill = spill_path(&config.database);
    if let Some(path) = &spill {
        match ledger::import_spill(&store, path).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(records = n, path = %path.display(), "imported usage records spilled by an earlier run")
            }
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "could not import the usage spill file")
            }
        }
    }
    let (ledger, writer) = Ledger::start(store.clone(), config.ledger, spill);
    let upstreams = Upstreams::new(&config).map_err(anyhow::Error::msg)?;
    let tls = match &config.tls {
        Some(t) => Some(Arc::new(TlsState::new(t.clone())?)),
        None => None,
    };
    let (audit, audit_writer) = AuditLog::start(store.clone());
    let authn = Authenticator::new(
        store.clone(),
        clock.clone(),
        master_digest,
        &config.auth,
        &config.admin,
        audit,
    );
    if config.auth.disabled {
        tracing::warn!(
            "AUTHENTICATION IS DISABLED: every request is anonymous and reaches the providers with the gateway's keys. Never run this way where anyone else can connect."
        );
    }
    if config.providers.is_empty() {
        tracing::warn!(
            "no providers configured: set OPENAI_API_KEY or write a config file; every model request will get 404"
        );
    }
    if !config.rules.configured && !config.auth.jwt.is_empty() {
        tracing::warn!(
            "identity providers are configured but there is no `rules` section: JWT users are refused every model until rules grant them some"
        );
    }
    let rules = arc_swap::ArcSwap::from_pointee(config.rules.clone());
    let ownership = arc_swap::ArcSwap::from_pointee(config.ownership.clone());
    let limits = crate::limits::Limiter::new(&config, store.clone(), clock.clone());
    limits.load_overrides().await?;
    for w in limits.silent_alerts() {
        tracing::warn!("{w}");
    }
    let state = AppState::new(Inner {
        rules,
        ownership,
        config,
        store,
        authn,
        ledger,
        limits,
        upstreams,
        clock,
        tls,
    });
    // Warm the identity providers' key sets without delaying the start.
    let warm = state.clone();
    tokio::spawn(async move { warm.authn.prefetch().await });
    Ok(Gateway {
        state,
        writer,
        audit_writer,
        generated_master_key,
    })
}

/// The master key's digest: from the configuration, else from the store, else
/// a new key is generated (and returned so the caller can show it once).
async fn master_key(
    store: &SharedStore,
    configured: Option<&Secret>,
) -> anyhow::Result<([u8; 32], Option<Secret>)> {
    if let Some(k) = configured {
        return Ok((keys::digest(k.expose()), None));
    }
    if let Some(hex) = store.get_setting(MASTER_KEY_SETTING).await? {
        return Ok((decode_hex(&hex)?, None));
    }
    let key = keys::generate_master();
    if store
        .put_setting_if_absent(MASTER_KEY_SETTING, &keys::digest_hex(key.expose()))
        .await?
    {
        return Ok((keys::digest(key.expose()), Some(key)));
    }
    let hex = store
        .get_setting(MASTER_KEY_SETTING)
        .await?
        .ok_or_else(|| anyhow::anyhow!("master key setting vanished"))?;
    Ok((decode_hex(&hex)?, None))
}

fn decode_hex(hex: &str) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        anyhow::bail!("stored master key digest is malformed");
    }
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// Waits for a connection on the main listener or the admin listener; true
/// when it came to the admin listener.
async fn accept(
    main: &TcpListener,
    admin: Option<&TcpListener>,
) -> (std::io::Result<(tokio::net::TcpStream, SocketAddr)>, bool) {
    match admin {
        None => (main.accept().await, false),
        Some(a) => tokio::select! {
            r = main.accept() => (r, false),
            r = a.accept() => (r, true),
        },
    }
}

/// Serves until `shutdown` resolves, then drains connections (up to the grace
/// period), aborts what is left, and flushes the ledger. `admin_listener`
/// (for `admin.listen`) serves the admin API only; the main listener then
/// serves everything else.
pub async fn serve(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Gateway {
        state,
        writer,
        audit_writer,
        ..
    } = gateway;
    let grace = state.config.server.shutdown_grace;
    let app = router(state.clone());
    let admin_app = admin_listener.as_ref().map(|_| admin_router(state.clone()));
    let limit = Arc::new(Semaphore::new(state.config.server.max_connections));
    let sighup = tokio::spawn(crate::reload::on_sighup(state.clone()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut conns = JoinSet::new();
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = limit.clone().acquire_owned() => p?,
        };
        let (stream, peer, to_admin) = tokio::select! {
            () = &mut shutdown => break,
            (r, to_admin) = accept(&listener, admin_listener.as_ref()) => match r {
                Ok((s, p)) => (s, p, to_admin),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = match (&admin_app, to_admin) {
            (Some(a), true) => a.clone(),
            _ => app.clone(),
        };
        let builder = builder.clone();
        let watcher = graceful.watcher();
        // The TLS configuration of this connection is the one in force when it
        // was accepted; a reload affects only later connections.
        let tls = state.tls.as_ref().map(|t| t.current());
        let mut stopping = stopping_rx.clone();
        conns.spawn(async move {
            match tls {
                None => serve_connection(&builder, stream, peer, None, app, watcher).await,
                Some(tls) => {
                    // Inside the connection's task, bounded: a slow or silent
                    // client cannot hold up the accept loop. A handshake still
                    // running at shutdown is dropped: no request has started.
                    tokio::select! {
                        r = tls::handshake(&tls, stream, peer) => if let Some((stream, cert)) = r {
                            serve_connection(&builder, stream, peer, cert, app, watcher).await;
                        },
                        _ = stopping.changed() => {}
                    }
                }
            }
            drop(permit);
        });
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    drop(admin_listener);
    let _ = stopping_tx.send(());
    tracing::info!(in_flight = conns.len(), grace = ?grace, "shutting down: no new connections; letting in-flight requests finish");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(remaining = conns.len(), "shutdown grace period over; closing the remaining connections");
        }
    }
    conns.shutdown().await;
    sighup.abort();
    drop(app);
    drop(admin_app);
    let limiter = state.limits.clone();
    drop(state);
    writer.flush_and_stop().await;
    audit_writer.flush_and_stop().await;
    tracing::info!("usage ledger flushed");
    limiter
        .finish_alerts(crate::limits::ALERT_SHUTDOWN_WAIT)
        .await;
    tracing::info!("bye");
    Ok(())
}

/// Serves one connection (plain TCP or TLS) until it closes or graceful
/// shutdown finishes it. Every request carries the peer address and, on an
/// mTLS connection, the client certificate.
async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    peer: SocketAddr,
    cert: Option<PeerCertificate>,
    app: crate::App,
    watcher: Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(cert) = &cert {
            req.extensions_mut().insert(cert.clone());
        }
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(app.call(req.map(axum::body::Body::new)).await) }
    });
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// A gateway running in the background (tests, quickstart).
#[derive(Debug)]
pub struct Running {
    /// Bound address.
    pub addr: SocketAddr,
    /// The admin listener's bound address, when `admin.listen` is set.
    pub admin_addr: Option<SocketAddr>,
    /// Shared state (store, config, ...).
    pub state: AppState,
    /// Generated master key, if any.
    pub generated_master_key: Option<Secret>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// `http://addr`, or `https://addr` when TLS is configured.
    pub fn url(&self) -> String {
        let scheme = if self.state.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Re-reads the TLS certificate, key and client CA, as SIGHUP does. A file
    /// that does not load is refused and the certificates in use stay.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.state.tls {
            Some(t) => t.reload(),
            None => Err(TlsError {
                field: "cert",
                message: "TLS is not configured".into(),
            }),
        }
    }

    /// Graceful shutdown, as on SIGTERM; waits for the ledger flush.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await?
    }
}

/// Binds `admin.listen`, when set.
pub async fn bind_admin(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    match config.admin.listen {
        None => Ok(None),
        Some(a) => Ok(Some(TcpListener::bind(a).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {a} (admin.listen): {e}")
        })?)),
    }
}

/// Builds and serves a gateway on `config.listen` in a background task.
pub async fn spawn(config: Config, clock: Option<SharedClock>) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let admin_listener = bind_admin(&config).await?;
    let admin_addr = admin_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let mut gateway = build(config, clock).await?;
    let generated_master_key = gateway.generated_master_key.take();
    let state = gateway.state.clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, admin_listener, gateway, async move {
        let _ = stop_rx.await;
    }));
    Ok(Running {
        addr,
        admin_addr,
        state,
        generated_master_key,
        stop: Some(stop_tx),
        task,
    })
}
