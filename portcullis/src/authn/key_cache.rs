//! The gateway key cache: key id → what authentication needs of the key,
//! read through from the store.
//!
//! A lookup that misses does not read the store itself: it queues the id and
//! waits. One loader task reads every queued id in one statement (up to
//! [`LOAD_BATCH`] at a time), so a burst of misses — a restart under load, a
//! fleet of new keys — costs one store round trip per batch instead of one
//! per request, and concurrent misses of the same id are one read (single
//! flight). Hits never wait: a read is a hash, a shard read lock and a copy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Principal;
use crate::store::{KeyAuth, SharedStore, StoreError};

/// How long a key read from the store is trusted before it is read again (a
/// revocation made on another gateway instance takes effect within this).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// Keys held in the cache at most.
const KEY_CACHE_CAPACITY: usize = 200_000;

/// Ids one store read covers at most.
const LOAD_BATCH: usize = 256;

/// What authentication needs of a key, built once when it is read: its
/// digest and state inline, everything else in its [`Principal`] (the
/// record's name, metadata and history stay in the store).
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// SHA-256 of the full key; `None` when the stored digest is malformed
    /// (nothing then matches it).
    digest: Option<[u8; 32]>,
    revoked: bool,
    expires_at: Option<i64>,
    /// The stored `admin_role` (`None` for a client key).
    admin_role: Option<Arc<str>>,
    principal: Principal,
}

impl KeyEntry {
    fn of(r: &KeyAuth) -> Self {
        KeyEntry {
            digest: <[u8; 32]>::try_from(r.digest.as_slice()).ok(),
            revoked: r.revoked_at.is_some(),
            expires_at: r.expires_at,
            admin_role: r.admin_role.as_deref().map(Arc::from),
            principal: Principal::api_key(r),
        }
    }

    /// True when `token` hashes to the stored digest (constant time).
    pub fn matches(&self, token: &str) -> bool {
        self.digest
            .is_some_and(|d| super::keys::verify(token, d.as_slice()))
    }

    /// True when the key was revoked.
    pub fn revoked(&self) -> bool {
        self.revoked
    }

    /// True when the key has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at.is_some_and(|t| now_ms >= t)
    }

    /// The stored admin role, for an admin key.
    pub fn admin_role(&self) -> Option<&str> {
        self.admin_role.as_deref()
    }

    /// The principal the key stands for (its id, user, team, lists).
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

/// One cache slot: the key, or `None` for an id the store does not know (a
/// negative entry), and when it was read.
#[derive(Clone)]
struct CachedKey {
    entry: Option<KeyEntry>,
    loaded: Instant,
}

/// A cache key: a key id's bytes. Every id the gateway issues has this
/// length; an id of another length is read from the store but not cached.
type Slot = [u8; super::keys::ID_LEN];

fn slot(id: &str) -> Option<Slot> {
    Slot::try_from(id.as_bytes()).ok()
}

/// What a lookup answers: the key, `None` for an unknown id, or why the
/// store could not say.
pub type Loaded = Result<Option<KeyEntry>, StoreError>;

/// The cache and its loader.
pub struct KeyCache(Arc<Shared>);

struct Shared {
    store: SharedStore,
    /// `quick_cache` rather than `moka` (used for the other caches): this
    /// lookup runs on every request, and a read here is a hash, a shard read
    /// lock and a clone, with no read log or deque to maintain; expiry is
    /// checked on read against [`CachedKey::loaded`]. Keyed by the id's
    /// bytes inline, so a probe compares in place instead of following a
    /// pointer to a heap string (one cache miss less per lookup when keys
    /// are many).
    entries: quick_cache::sync::Cache<Slot, CachedKey>,
    loads: Mutex<Loads>,
    /// Store reads the loader made (batches and single ids).
    reads: AtomicU64,
}

#[derive(Default)]
struct Loads {
    /// Ids asked for and not yet answered (queued or being read), and who
    /// waits for each.
    waiting: HashMap<String, Vec<oneshot::Sender<Loaded>>>,
    /// The ids of `waiting` not yet taken into a batch, oldest first.
    queued: Vec<String>,
    /// Whether a loader task is running.
    running: bool,
    /// Moved by every invalidation: a batch read across one is answered but
    /// not cached (it may predate the change).
    epoch: u64,
}

impl Shared {
    fn loads(&self) -> MutexGuard<'_, Loads> {
        self.loads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl KeyCache {
    /// An empty cache over `store`.
    pub fn new(store: SharedStore) -> Self {
        KeyCache(Arc::new(Shared {
            store,
            entries: quick_cache::sync::Cache::new(KEY_CACHE_CAPACITY),
            loads: Mutex::new(Loads::default()),
            reads: AtomicU64::new(0),
        }))
    }

    /// How many store reads the cache has made.
    #[cfg(test)]
    fn store_reads(&self) -> u64 {
        self.0.reads.load(Ordering::Relaxed)
    }

    /// Forgets a key so the next lookup reads the store.
    pub fn invalidate(&self, id: &str) {
        let mut loads = self.0.loads();
        loads.epoch = loads.epoch.wrapping_add(1);
        if let Some(s) = slot(id) {
            self.0.entries.remove(&s);
        }
    }

    /// The key with this id: from the cache while fresh, else read (with
    /// every other id missed meanwhile) by the loader.
    pub async fn get(&self, id: &str) -> Loaded {
        if let Some(hit) = slot(id).and_then(|s| self.0.entries.get(&s))
            && hit.loaded.elapsed() < KEY_CACHE_TTL
        {
            return Ok(hit.entry);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut loads = self.0.loads();
            match loads.waiting.get_mut(id) {
                Some(waiters) => waiters.push(tx),
                None => {
                    loads.waiting.insert(id.to_owned(), vec![tx]);
                    loads.queued.push(id.to_owned());
                    if !loads.running {
                        loads.running = true;
                        tokio::spawn(load(self.0.clone()));
                    }
                }
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the key lookup was interrupted".into(),
            ))
        })
    }
}

/// What one batch read found.
enum Batch {
    /// The keys that exist; an id not here is unknown.
    Read(HashMap<String, KeyEntry>),
    /// Each id on its own (after a batch read met a row it could not decode,
    /// so one bad row fails only its own lookups).
    Each(HashMap<String, Loaded>),
    /// The store could not be read.
    Failed(StoreError),
}

impl Batch {
    fn answer(&self, id: &str) -> Loaded {
        match self {
            Batch::Read(found) => Ok(found.get(id).cloned()),
            Batch::Each(each) => each
                .get(id)
                .cloned()
                .unwrap_or(Err(StoreError::Unavailable("key not read".into()))),
            Batch::Failed(e) => Err(e.clone()),
        }
    }
}

/// The loader: reads queued ids in batches until none are left.
async fn load(shared: Arc<Shared>) {
    let mut running = Running {
        shared: &shared,
        batch: Vec::new(),
        finished: false,
    };
    // Let every request that is ready to run queue its miss first: one read
    // for all of them.
    tokio::task::yield_now().await;
    loop {
        let epoch = {
            let mut loads = shared.loads();
            if loads.queued.is_empty() {
                loads.running = false;
                running.finished = true;
                return;
            }
            let n = loads.queued.len().min(LOAD_BATCH);
            running.batch = loads.queued.drain(..n).collect();
            loads.epoch
        };
        let batch = read(&shared, &running.batch).await;
        let loaded = Instant::now();
        let mut loads = shared.loads();
        let fresh = loads.epoch == epoch;
        for id in running.batch.drain(..) {
            let answer = batch.answer(&id);
            if fresh
                && let Ok(entry) = &answer
                && let Some(s) = slot(&id)
            {
                shared.entries.insert(
                    s,
                    CachedKey {
                        entry: entry.clone(),
                        loaded,
                    },
                );
            }
            for tx in loads.waiting.remove(&id).unwrap_or_default() {
                let _ = tx.send(answer.clone());
            }
        }
    }
}

async fn read(shared: &Shared, ids: &[String]) -> Batch {
    let store = &shared.store;
    shared.reads.fetch_add(1, Ordering::Relaxed);
    match store.get_key_auths(ids).await {
        Ok(records) => Batch::Read(
            records
                .iter()
                .map(|r| (r.id.clone(), KeyEntry::of(r)))
                .collect(),
        ),
        Err(StoreError::Corrupt(_)) => {
            let mut each = HashMap::with_capacity(ids.len());
            for id in ids {
                shared.reads.fetch_add(1, Ordering::Relaxed);
                let one = store
                    .get_key_auths(std::slice::from_ref(id))
                    .await
                    .map(|found| found.first().map(KeyEntry::of));
                each.insert(id.clone(), one);
            }
            Batch::Each(each)
        }
        Err(e) => Batch::Failed(e),
    }
}

/// The loader's state for its drop: if it ends early (its task aborted at
/// shutdown, a panic), everyone still waiting is told instead of waiting
/// forever, and the next miss starts a new loader.
struct Running<'a> {
    shared: &'a Shared,
    batch: Vec<String>,
    finished: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut loads = self.shared.loads();
        let queued = std::mem::take(&mut loads.queued);
        for id in self.batch.drain(..).chain(queued) {
            for tx in loads.waiting.remove(&id).unwrap_or_default() {
                let _ = tx.send(Err(StoreError::Unavailable(
                    "the key lookup was interrupted".into(),
                )));
            }
        }
        loads.running = false;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store;
    use crate::store::ApiKeyRecord;

    /// A key id of the issued length.
    fn id(i: usize) -> String {
        format!("k{i:011}")
    }

    const UNKNOWN: &str = "unknownkey00";

    fn record(id: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            user: Some(format!("u-{id}")),
            ..ApiKeyRecord::new(
                id.to_owned(),
                super::super::keys::digest(&format!("secret-{id}")).to_vec(),
            )
        }
    }

    /// A store on a file with `n` keys, and a second connection to the same
    /// file (to break it from outside).
    async fn store_with(n: usize) -> (tempfile::TempDir, SharedStore, sqlx::SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let store = store::open(&url).await.unwrap();
        for i in 0..n {
            store.insert_key(&record(&id(i))).await.unwrap();
        }
        let side = sqlx::SqlitePool::connect(&url).await.unwrap();
        (dir, store, side)
    }

    fn lookups(
        cache: &Arc<KeyCache>,
        ids: impl IntoIterator<Item = String>,
    ) -> Vec<tokio::task::JoinHandle<Loaded>> {
        ids.into_iter()
            .map(|id| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(&id).await })
            })
            .collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_misses_are_one_read_and_each_id_is_read_once() {
        let (_dir, store, _side) = store_with(300).await;
        let cache = Arc::new(KeyCache::new(store));
        // 300 distinct ids, each asked for twice, and an unknown one, all at once.
        let ids = (0..600).map(|i| id(i % 300)).chain([UNKNOWN.to_owned()]);
        let mut found = 0;
        for t in lookups(&cache, ids) {
            if let Some(e) = t.await.unwrap().unwrap() {
                let id = e.principal().key_id().unwrap().to_owned();
                assert!(e.matches(&format!("secret-{id}")));
                assert!(!e.matches("secret-other"));
                assert_eq!(e.principal().user(), Some(format!("u-{id}").as_str()));
                found += 1;
            }
        }
        assert_eq!(found, 600);
        // 301 ids in batches of at most 256: two reads.
        assert_eq!(cache.store_reads(), 2);
        // Now cached, the unknown id too.
        assert!(cache.get(&id(7)).await.unwrap().is_some());
        assert!(cache.get(UNKNOWN).await.unwrap().is_none());
        assert_eq!(cache.store_reads(), 2);
        // An invalidated id is read again.
        cache.invalidate(&id(7));
        assert!(cache.get(&id(7)).await.unwrap().is_some());
        assert_eq!(cache.store_reads(), 3);
        // An id of another length is read, never cached.
        assert!(cache.get("short").await.unwrap().is_none());
        assert!(cache.get("short").await.unwrap().is_none());
        assert_eq!(cache.store_reads(), 5);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_store_failure_answers_every_waiter_and_is_not_cached() {
        let (_dir, store, side) = store_with(3).await;
        let cache = Arc::new(KeyCache::new(store));
        sqlx::query("ALTER TABLE api_keys RENAME TO gone")
            .execute(&side)
            .await
            .unwrap();
        for t in lookups(&cache, (0..3).map(id)) {
            assert!(matches!(t.await.unwrap(), Err(StoreError::Unavailable(_))));
        }
        sqlx::query("ALTER TABLE gone RENAME TO api_keys")
            .execute(&side)
            .await
            .unwrap();
        assert!(cache.get(&id(1)).await.unwrap().is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_corrupt_row_fails_only_its_own_lookup() {
        let (_dir, store, side) = store_with(3).await;
        sqlx::query("UPDATE api_keys SET models = '[' WHERE id = 'k00000000001'")
            .execute(&side)
            .await
            .unwrap();
        let cache = Arc::new(KeyCache::new(store));
        let mut answers = Vec::new();
        for t in lookups(&cache, (0..3).map(id)) {
            answers.push(t.await.unwrap());
        }
        assert!(answers[0].as_ref().unwrap().is_some());
        assert!(matches!(answers[1], Err(StoreError::Corrupt(_))));
        assert!(answers[2].as_ref().unwrap().is_some());
        // One batch read, then each id on its own.
        assert_eq!(cache.store_reads(), 4);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_invalidation_during_a_read_keeps_its_answer_out_of_the_cache() {
        let (_dir, store, _side) = store_with(1).await;
        let cache = Arc::new(KeyCache::new(store));
        let lookup = lookups(&cache, [id(0)]).remove(0);
        // Until the lookup is answered, its batch is queued or being read:
        // an invalidation now must keep what that read finds out of the cache.
        while cache.store_reads() == 0 {
            tokio::task::yield_now().await;
        }
        cache.invalidate(&id(0));
        assert!(lookup.await.unwrap().unwrap().is_some());
        assert!(cache.get(&id(0)).await.unwrap().is_some());
        assert_eq!(cache.store_reads(), 2);
    }
}
