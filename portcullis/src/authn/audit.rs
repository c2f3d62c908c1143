//! The audit log of authentication failures: events leave the request path
//! through a bounded queue and are written in batches. Under a flood the queue
//! can fill; further events are counted and reported as one summary line
//! rather than letting an attacker grow memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{AuditEvent, SharedStore};

/// Events buffered before new ones are counted and dropped.
pub const QUEUE: usize = 10_000;

/// Sending side of the audit log.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
}

/// The writer task.
#[derive(Debug)]
pub struct AuditWriter {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl AuditLog {
    /// Starts the writer.
    pub fn start(store: SharedStore) -> (AuditLog, AuditWriter) {
        let (tx, mut rx) = mpsc::channel::<AuditEvent>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let counter = dropped.clone();
        let handle = tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stop_rx => break,
                    n = rx.recv_many(&mut batch, 512) => if n == 0 { break },
                }
                write(&store, &mut batch).await;
                let lost = counter.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    tracing::warn!(
                        dropped = lost,
                        "audit queue full: authentication failures were counted but not stored"
                    );
                }
            }
            rx.close();
            while let Ok(e) = rx.try_recv() {
                batch.push(e);
            }
            write(&store, &mut batch).await;
        });
        (
            AuditLog { tx, dropped },
            AuditWriter {
                stop: stop_tx,
                handle,
            },
        )
    }

    /// Queues an event; never blocks.
    pub fn record(&self, e: AuditEvent) {
        if self.tx.try_send(e).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write(store: &SharedStore, batch: &mut Vec<AuditEvent>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = store.insert_audit(batch).await {
        tracing::warn!(events = batch.len(), error = %e, "could not store audit events");
    }
    batch.clear();
}

impl AuditWriter {
    /// Writes what is queued and stops.
    pub async fn flush_and_stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}
