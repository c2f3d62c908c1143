//! The usage ledger: records leave the request path through a bounded queue
//! and are written in batches by one task. Nothing is dropped: when the queue
//! is full a record goes to a small overflow list the writer drains; when the
//! store is down records wait in memory and are retried; at shutdown whatever
//! the store cannot take is written to a JSON-lines spill file that the next
//! start imports.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::LedgerConfig;
use crate::store::{SharedStore, UsageRecord};

/// Sending side of the ledger. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger {
    tx: mpsc::Sender<UsageRecord>,
    overflow: Arc<Mutex<Vec<UsageRecord>>>,
    wake: Arc<Notify>,
}

/// The writer task; stop it with [`LedgerWriter::flush_and_stop`].
#[derive(Debug)]
pub struct LedgerWriter {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl Ledger {
    /// Starts the writer. `spill` is where records go that the store cannot take at shutdown.
    pub fn start(
        store: SharedStore,
        cfg: LedgerConfig,
        spill: Option<PathBuf>,
    ) -> (Ledger, LedgerWriter) {
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let overflow = Arc::new(Mutex::new(Vec::new()));
        let wake = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = oneshot::channel();
        let writer = Writer {
            store,
            rx,
            overflow: overflow.clone(),
            wake: wake.clone(),
            batch: cfg.batch_size,
            gather: cfg.flush_interval,
            pending: Vec::new(),
            spill,
        };
        let handle = tokio::spawn(writer.run(stop_rx));
        (
            Ledger { tx, overflow, wake },
            LedgerWriter {
                stop: stop_tx,
                handle,
            },
        )
    }

    /// Queues a record. Never blocks and never drops.
    pub fn record(&self, r: UsageRecord) {
        if let Err(e) = self.tx.try_send(r) {
            let r = match e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            if let Ok(mut o) = self.overflow.lock() {
                o.push(r);
            }
            self.wake.notify_one();
        }
    }
}

impl LedgerWriter {
    /// Writes every queued record and stops the writer.
    pub async fn flush_and_stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

struct Writer {
    store: SharedStore,
    rx: mpsc::Receiver<UsageRecord>,
    overflow: Arc<Mutex<Vec<UsageRecord>>>,
    wake: Arc<Notify>,
    batch: usize,
    /// How long the writer gathers records before writing a batch smaller than `batch_size`.
    gather: Duration,
    pending: Vec<UsageRecord>,
    spill: Option<PathBuf>,
}

/// Records kept in memory while the store is down before the oldest are spilled to disk.
const MAX_PENDING: usize = 1_000_000;

impl Writer {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut backoff = Duration::ZERO;
        let mut stopping = false;
        while !stopping {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                n = self.rx.recv_many(&mut self.pending, self.batch), if self.pending.len() < MAX_PENDING => {
                    if n == 0 { break; }
                }
                () = self.wake.notified() => {}
                () = tokio::time::sleep(backoff), if !backoff.is_zero() && !self.pending.is_empty() => {}
            }
            self.take_overflow();
            if self.pending.is_empty() {
                continue;
            }
            // Gather for a moment before writing: one transaction for many
            // records costs the store far less than one each. Records are
            // visible within `gather` of their request's end. The writer sleeps
            // meanwhile instead of waking for every record the request path
            // queues (on a busy core each of those wake-ups was a task switch);
            // a full queue cuts the sleep short.
            if self.pending.len() < self.batch {
                tokio::select! {
                    biased;
                    _ = &mut stop => stopping = true,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(self.gather) => {}
                }
                let queued = self.rx.len();
                if queued > 0 && self.pending.len() < MAX_PENDING {
                    self.rx.recv_many(&mut self.pending, queued).await;
                }
                self.take_overflow();
            }
            match self.write_pending().await {
                Ok(()) => backoff = Duration::ZERO,
                Err(e) => {
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(250), Duration::from_secs(10));
                    tracing::warn!(pending = self.pending.len(), error = %e, "usage ledger write failed; will retry");
                    if self.pending.len() >= MAX_PENDING {
                        self.spill_pending();
                    }
                }
            }
        }
        // Drain everything that is left.
        self.rx.close();
        while let Ok(r) = self.rx.try_recv() {
            self.pending.push(r);
        }
        self.take_overflow();
        for _ in 0..3 {
            if self.pending.is_empty() {
                break;
            }
            if let Err(e) = self.write_pending().await {
                tracing::warn!(pending = self.pending.len(), error = %e, "final usage ledger flush failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if !self.pending.is_empty() {
            self.spill_pending();
        }
        if let Err(e) = self.store.flush().await {
            tracing::warn!(error = %e, "could not flush the store at shutdown; the next start catches up from the ledger");
        }
    }

    fn take_overflow(&mut self) {
        if let Ok(mut o) = self.overflow.lock()
            && !o.is_empty()
        {
            self.pending.append(&mut o);
        }
    }

    async fn write_pending(&mut self) -> Result<(), crate::store::StoreError> {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(self.batch.max(1) * 4);
            self.store.insert_usage(&self.pending[..n]).await?;
            self.pending.drain(..n);
        }
        Ok(())
    }

    fn spill_pending(&mut self) {
        let Some(path) = &self.spill else {
            tracing::error!(
                lost = self.pending.len(),
                "usage records could not be stored and no spill file is configured"
            );
            self.pending.clear();
            return;
        };
        match append_spill(path, &self.pending) {
            Ok(()) => {
                tracing::error!(records = self.pending.len(), path = %path.display(), "store unavailable: usage records spilled to disk; they are imported on the next start");
                self.pending.clear();
            }
            Err(e) => {
                tracing::error!(lost = self.pending.len(), error = %e, "could not write the usage spill file");
                self.pending.clear();
            }
        }
    }
}

fn append_spill(path: &PathBuf, records: &[UsageRecord]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut buf = Vec::new();
    for r in records {
        serde_json::to_writer(&mut buf, r).map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    f.write_all(&buf)?;
    f.sync_all()
}

/// Imports a spill file left by an earlier run, then removes it.
pub async fn import_spill(store: &SharedStore, path: &PathBuf) -> Result<usize, String> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.to_string()),
    };
    let records: Vec<UsageRecord> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    store
        .insert_usage(&records)
        .await
        .map_err(|e| e.to_string())?;
    tokio::fs::remove_file(path)
        .await
        .map_err(|e| e.to_string())?;
    Ok(records.len())
}
