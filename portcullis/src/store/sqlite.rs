//! The embedded store: SQLite in WAL mode through `sqlx`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{
    ApiKeyRecord, AuditEvent, KeyAuth, KeyPatch, ResourceQuery, ResourceRecord, Store, StoreError,
    UsageGroup, UsageRecord, UsageRow, UserRecord,
};

/// SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    spend: Arc<PendingSpend>,
}

/// How long the spend of committed usage records may wait in memory before it
/// is added to `spend_daily`. Upserting one row per subject and day with every
/// ledger batch was a third of SQLite's work when requests came from thousands
/// of keys (each batch touched nearly every page of `spend_daily`); once a
/// second, a subject's many batches become one row.
const SPEND_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Subject-days held in memory at most before a flush regardless of age.
const SPEND_PENDING_MAX: usize = 50_000;

/// The setting naming the last `usage_records.id` whose spend `spend_daily`
/// holds. Rows after it (committed by a run that stopped before its spend
/// was flushed) are added when the store opens.
const SPEND_THROUGH: &str = "spend_daily_through_id";

/// Spend of committed usage records not yet in `spend_daily`: subject →
/// (UTC day, micro-dollars). [`Store::spend_since`] adds it to what the table
/// holds, so a budget never sees less than the ledger committed.
#[derive(Debug, Default)]
struct PendingSpend {
    state: Mutex<Pending>,
    /// One ledger write at a time, so the flushed snapshot and the
    /// `spend_daily_through_id` mark written with it always agree. Readers
    /// never take it.
    writes: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Pending {
    by_subject: HashMap<String, Vec<(i64, i64)>>,
    entries: usize,
    oldest: Option<Instant>,
    /// Two steps per flush: odd from just before its commit until what it
    /// wrote has left `by_subject` (see [`Store::spend_since`]).
    generation: u64,
}

impl Pending {
    fn add(&mut self, spend: &[SubjectSpend<'_>]) {
        if !spend.is_empty() {
            self.oldest.get_or_insert_with(Instant::now);
        }
        // Each name is spelled into one buffer to be looked up, and copied
        // only when the subject is new: with thousands of keys in use, most
        // records of a batch are a subject of their own.
        let mut buf = String::new();
        for &(subject, day, cost) in spend {
            let name = subject.name_into(&mut buf);
            let days = match self.by_subject.get_mut(name) {
                Some(days) => days,
                None => self.by_subject.entry(name.to_owned()).or_default(),
            };
            match days.iter_mut().find(|(d, _)| *d == day) {
                Some((_, c)) => *c = c.saturating_add(cost),
                None => {
                    days.push((day, cost));
                    self.entries += 1;
                }
            }
        }
    }

    /// True when what is pending, with `adding` more subject-days, should be
    /// flushed now.
    fn due(&self, adding: usize) -> bool {
        self.entries + adding >= SPEND_PENDING_MAX
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= SPEND_FLUSH_EVERY)
    }

    /// Everything pending plus `batch`, one row per subject and day.
    fn with(&self, batch: &[SubjectSpend<'_>]) -> Vec<(String, i64, i64)> {
        let mut all = Pending {
            by_subject: self.by_subject.clone(),
            ..Pending::default()
        };
        all.add(batch);
        all.by_subject
            .into_iter()
            .flat_map(|(s, days)| days.into_iter().map(move |(d, c)| (s.clone(), d, c)))
            .collect()
    }

    /// Takes away what a flush wrote (records committed meanwhile stay).
    fn subtract(&mut self, flushed: &[(String, i64, i64)]) {
        for (subject, day, cost) in flushed {
            if let Some(days) = self.by_subject.get_mut(subject) {
                if let Some((_, c)) = days.iter_mut().find(|(d, _)| d == day) {
                    *c = c.saturating_sub(*cost);
                }
                let before = days.len();
                days.retain(|(_, c)| *c != 0);
                self.entries -= before - days.len();
                if days.is_empty() {
                    self.by_subject.remove(subject);
                }
            }
        }
        if self.entries == 0 {
            self.oldest = None;
        }
    }

    fn since(&self, subject: &str, day: i64) -> i64 {
        self.by_subject.get(subject).map_or(0, |days| {
            days.iter()
                .filter(|(d, _)| *d >= day)
                .fold(0i64, |a, (_, c)| a.saturating_add(*c))
        })
    }
}

impl PendingSpend {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn json_list(v: &Option<Vec<String>>) -> Option<String> {
    v.as_ref()
        .map(|l| serde_json::to_string(l).unwrap_or_else(|_| "[]".into()))
}

fn parse_list(s: Option<String>) -> Result<Option<Vec<String>>, StoreError> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

fn json_value(s: Option<String>) -> Result<Option<serde_json::Value>, StoreError> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

fn u64_to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const KEY_COLUMNS: &str = "id, digest, name, user_id, team_id, models, endpoints, expires_at, revoked_at, created_at, metadata, rotated_from, admin_role";

fn key_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ApiKeyRecord, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    let metadata: String = row.try_get("metadata").map_err(get)?;
    Ok(ApiKeyRecord {
        id: row.try_get("id").map_err(get)?,
        digest: row.try_get("digest").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        user: row.try_get("user_id").map_err(get)?,
        team: row.try_get("team_id").map_err(get)?,
        models: parse_list(row.try_get("models").map_err(get)?)?,
        endpoints: parse_list(row.try_get("endpoints").map_err(get)?)?,
        expires_at: row.try_get("expires_at").map_err(get)?,
        revoked_at: row.try_get("revoked_at").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        rotated_from: row.try_get("rotated_from").map_err(get)?,
        admin_role: row.try_get("admin_role").map_err(get)?,
    })
}

/// The columns of [`KeyAuth`], in the order [`key_auth_from_row`] reads them.
const KEY_AUTH_COLUMNS: &str =
    "id, digest, user_id, team_id, models, endpoints, expires_at, revoked_at, admin_role";

/// A [`KeyAuth`] from a row of [`KEY_AUTH_COLUMNS`], read by position (a
/// name is looked up in the row's column map on every read).
fn key_auth_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<KeyAuth, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    Ok(KeyAuth {
        id: row.try_get(0).map_err(get)?,
        digest: row.try_get(1).map_err(get)?,
        user: row.try_get(2).map_err(get)?,
        team: row.try_get(3).map_err(get)?,
        models: parse_list(row.try_get(4).map_err(get)?)?,
        endpoints: parse_list(row.try_get(5).map_err(get)?)?,
        expires_at: row.try_get(6).map_err(get)?,
        revoked_at: row.try_get(7).map_err(get)?,
        admin_role: row.try_get(8).map_err(get)?,
    })
}

const USER_COLUMNS: &str = "id, issuer, subject, team_id, roles, disabled, first_seen, last_seen";

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<UserRecord, StoreError> {
    let c = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    let roles: String = row.try_get("roles").map_err(c)?;
    let disabled: i64 = row.try_get("disabled").map_err(c)?;
    Ok(UserRecord {
        id: row.try_get("id").map_err(c)?,
        issuer: row.try_get("issuer").map_err(c)?,
        subject: row.try_get("subject").map_err(c)?,
        team: row.try_get("team_id").map_err(c)?,
        roles: serde_json::from_str(&roles).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        disabled: disabled != 0,
        first_seen: row.try_get("first_seen").map_err(c)?,
        last_seen: row.try_get("last_seen").map_err(c)?,
    })
}

const DAY_MS: i64 = 86_400_000;

/// A budget subject as [`Store::spend_since`] names it (`kind:id`, or
/// `anonymous`), its id borrowed from a usage record: spelled out only where
/// a name is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Subject<'a> {
    kind: &'static str,
    id: &'a str,
}

impl Subject<'_> {
    /// The subject's name, spelled into `buf`.
    fn name_into<'b>(&self, buf: &'b mut String) -> &'b str {
        buf.clear();
        buf.push_str(self.kind);
        if self.kind != ANONYMOUS {
            buf.push(':');
            buf.push_str(self.id);
        }
        buf
    }
}

const ANONYMOUS: &str = "anonymous";

/// A subject's charged spend on one UTC day (micro-dollars).
type SubjectSpend<'a> = (Subject<'a>, i64, i64);

/// Charged spend of `records` per budget subject and UTC day.
fn daily_spend(records: &[UsageRecord]) -> Vec<SubjectSpend<'_>> {
    let mut sums: std::collections::BTreeMap<(Subject<'_>, i64), i64> =
        std::collections::BTreeMap::new();
    for r in records {
        let Some(cost) = r.cost_micros.filter(|c| *c > 0) else {
            continue;
        };
        let day = r.ts.div_euclid(DAY_MS);
        let anonymous = r.key_id.is_none() && r.user.is_none();
        let subjects = [
            ("key", r.key_id.as_deref()),
            ("user", r.user.as_deref()),
            ("team", r.team.as_deref()),
            (ANONYMOUS, anonymous.then_some("")),
        ];
        for (kind, id) in subjects {
            if let Some(id) = id {
                let v = sums.entry((Subject { kind, id }, day)).or_default();
                *v = v.saturating_add(cost);
            }
        }
    }
    sums.into_iter()
        .map(|((subject, day), cost)| (subject, day, cost))
        .collect()
}

/// The ledger's columns, in the order [`bind_usage`] binds them.
const USAGE_COLUMNS: &[&str] = &[
    "ts",
    "request_id",
    "key_id",
    "user_id",
    "team_id",
    "provider",
    "model",
    "endpoint",
    "method",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "ttfb_ms",
    "error_code",
    "cost_micros",
];

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds one ledger row, column by column as in [`USAGE_COLUMNS`]. Text goes
/// in as `&str`: sqlx borrows a `&str` but clones a `String`.
fn bind_usage<'q>(q: SqliteQuery<'q>, r: &'q UsageRecord) -> SqliteQuery<'q> {
    q.bind(r.ts)
        .bind(r.request_id.as_str())
        .bind(r.key_id.as_deref())
        .bind(r.user.as_deref())
        .bind(r.team.as_deref())
        .bind(r.provider.as_deref())
        .bind(r.model.as_deref())
        .bind(r.endpoint.as_deref())
        .bind(r.method.as_str())
        .bind(i64::from(r.status))
        .bind(r.prompt_tokens.map(u64_to_i64))
        .bind(r.completion_tokens.map(u64_to_i64))
        .bind(u64_to_i64(r.latency_ms))
        .bind(r.ttfb_ms.map(u64_to_i64))
        .bind(r.error_code.as_deref())
        .bind(r.cost_micros)
}

/// Rows per multi-row INSERT: powers of two up to 32. A batch is cut greedily
/// into these sizes, so only six statement texts ever exist and every one
/// stays prepared in sqlx's statement cache; one statement per batch size
/// would be parsed anew for nearly every batch (SQLite's parser was a
/// profiled hot spot). Not larger: SQLite runs a statement on its own thread,
/// which shares the core with the request workers, so a statement is a slice
/// of CPU requests wait behind (256 rows ran ~0.7 ms in one go; 32 run ~0.1 ms,
/// and the request workers run between statements).
const USAGE_CHUNKS: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// The statement for the largest chunk size that fits `n` rows, and its rows,
/// from `set`'s texts (one per size of [`USAGE_CHUNKS`]).
fn chunk_of(set: &[(usize, String)], n: usize) -> (&str, usize) {
    set.iter()
        .find(|(rows, _)| *rows <= n)
        .or(set.last())
        .map_or(("", 1), |(rows, sql)| (sql.as_str(), *rows))
}

/// `items` cut greedily into the chunk sizes of [`USAGE_CHUNKS`], each with
/// its statement text from `statement` (one of the `*_insert`, `*_upsert`,
/// `*_select` functions below).
fn chunked<T>(
    items: &[T],
    statement: fn(usize) -> (&'static str, usize),
) -> impl Iterator<Item = (&'static str, &[T])> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (sql, n) = statement(rest.len());
        let (chunk, tail) = rest.split_at(n.clamp(1, rest.len()));
        rest = tail;
        Some((sql, chunk))
    })
}

/// One `{head} VALUES (?, …), … {tail}` text per chunk size, `columns` parameters a row.
fn chunk_texts(head: &str, columns: usize, tail: &str) -> Vec<(usize, String)> {
    let row = format!("({})", vec!["?"; columns].join(", "));
    USAGE_CHUNKS
        .iter()
        .map(|&rows| {
            let values = vec![row.as_str(); rows].join(", ");
            (rows, format!("{head} VALUES {values}{tail}"))
        })
        .collect()
}

/// The key SELECT by ids for the largest chunk size that fits `n` ids, and its ids.
fn key_select(n: usize) -> (&'static str, usize) {
    static SQL: std::sync::LazyLock<Vec<(usize, String)>> = std::sync::LazyLock::new(|| {
        USAGE_CHUNKS
            .iter()
            .map(|&ids| {
                let marks = vec!["?"; ids].join(", ");
                (
                    ids,
                    format!("SELECT {KEY_AUTH_COLUMNS} FROM api_keys WHERE id IN ({marks})"),
                )
            })
            .collect()
    });
    chunk_of(&SQL, n)
}

/// The ledger INSERT for the largest chunk size that fits `n` rows, and its rows.
fn usage_insert(n: usize) -> (&'static str, usize) {
    static SQL: std::sync::LazyLock<Vec<(usize, String)>> = std::sync::LazyLock::new(|| {
        let columns = USAGE_COLUMNS.join(", ");
        chunk_texts(
            &format!("INSERT INTO usage_records ({columns})"),
            USAGE_COLUMNS.len(),
            "",
        )
    });
    chunk_of(&SQL, n)
}

/// The `spend_daily` upsert for the largest chunk size that fits `n` rows, and
/// its rows. One row per subject and day of a batch: with many distinct keys
/// that is more than one row per request, so one statement per row (a round
/// trip to SQLite's thread each) was a hot spot of its own.
fn spend_upsert(n: usize) -> (&'static str, usize) {
    static SQL: std::sync::LazyLock<Vec<(usize, String)>> = std::sync::LazyLock::new(|| {
        chunk_texts(
            "INSERT INTO spend_daily (subject, day, cost_micros)",
            3,
            " ON CONFLICT (subject, day) DO UPDATE SET cost_micros = cost_micros + excluded.cost_micros",
        )
    });
    chunk_of(&SQL, n)
}

/// Adds `spend` (subject, UTC day, micro-dollars) to `spend_daily`.
async fn add_spend(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    spend: &[(String, i64, i64)],
) -> Result<(), StoreError> {
    for (sql, chunk) in chunked(spend, spend_upsert) {
        let mut q = sqlx::query(sql);
        for (subject, day, cost) in chunk {
            q = q.bind(subject.as_str()).bind(*day).bind(*cost);
        }
        q.execute(&mut **tx).await.map_err(unavailable)?;
    }
    Ok(())
}

/// Sets the `spend_daily` mark (see [`SPEND_THROUGH`]).
async fn set_spend_through(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO settings (name, value) VALUES (?, ?) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(SPEND_THROUGH)
    .bind(id.to_string())
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

impl SqliteStore {
    /// Adds `spend` (everything pending plus `batch`, the spend of the
    /// records `tx` inserted) to `spend_daily`, with the mark of the newest
    /// record it covers, and commits `tx`. The caller holds `spend.writes`.
    async fn commit_spend(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Sqlite>,
        spend: &[(String, i64, i64)],
        batch: &[SubjectSpend<'_>],
    ) -> Result<(), StoreError> {
        add_spend(&mut tx, spend).await?;
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM usage_records")
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        set_spend_through(&mut tx, newest).await?;
        // Odd while the flushed spend may be in the table and still pending.
        self.spend.lock().generation += 1;
        let committed = tx.commit().await;
        let mut pending = self.spend.lock();
        if committed.is_ok() {
            pending.add(batch);
            pending.subtract(spend);
        }
        pending.generation += 1;
        committed.map_err(unavailable)
    }

    /// Opens (creating if needed) the database at `url` and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unsupported(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(if memory { 1 } else { 4 })
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(unavailable)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        let store = SqliteStore {
            pool,
            spend: Arc::default(),
        };
        store.catch_up_spend().await?;
        Ok(store)
    }

    /// Adds to `spend_daily` the spend of usage records committed after the
    /// last flushed mark (by a run that stopped before flushing it), and moves
    /// the mark to the newest record. Before the mark existed every record's
    /// spend was written with the record itself, so a store without one is
    /// caught up already.
    async fn catch_up_spend(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM usage_records")
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let through: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
                .bind(SPEND_THROUGH)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        if let Some(through) = through {
            let through: i64 = through.parse().map_err(|_| {
                StoreError::Corrupt(format!("setting {SPEND_THROUGH} is {through:?}"))
            })?;
            if through >= newest {
                return Ok(());
            }
            // The records' spend as the ledger batch computes it (same
            // subjects), read as a stream a thousand rows at a time: memory
            // holds one sum per subject and day, not the rows.
            let mut sums = Pending::default();
            {
                let sql = format!("{USAGE_SELECT} WHERE id > ? AND cost_micros > 0");
                let mut rows = sqlx::query(&sql).bind(through).fetch(&mut *tx);
                let mut chunk = Vec::with_capacity(1000);
                loop {
                    let row = rows.try_next().await.map_err(unavailable)?;
                    if let Some(r) = &row {
                        chunk.push(usage_from_row(r)?);
                    }
                    if chunk.len() == 1000 || (row.is_none() && !chunk.is_empty()) {
                        sums.add(&daily_spend(&chunk));
                        chunk.clear();
                    }
                    if row.is_none() {
                        break;
                    }
                }
            }
            add_spend(&mut tx, &sums.with(&[])).await?;
            tracing::info!(
                from_id = through + 1,
                to_id = newest,
                "added the spend of usage records the last run had not flushed to spend_daily"
            );
        }
        set_spend_through(&mut tx, newest).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn write_key(
        conn: &mut sqlx::SqliteConnection,
        k: &ApiKeyRecord,
        insert: bool,
    ) -> Result<(), StoreError> {
        let sql = if insert {
            "INSERT INTO api_keys (name, user_id, team_id, models, endpoints, expires_at, revoked_at, created_at, metadata, rotated_from, admin_role, digest, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        } else {
            "UPDATE api_keys SET name = ?, user_id = ?, team_id = ?, models = ?, endpoints = ?, expires_at = ?, revoked_at = ?, created_at = ?, metadata = ?, rotated_from = ?, admin_role = ?, digest = ? WHERE id = ?"
        };
        sqlx::query(sql)
            .bind(&k.name)
            .bind(&k.user)
            .bind(&k.team)
            .bind(json_list(&k.models))
            .bind(json_list(&k.endpoints))
            .bind(k.expires_at)
            .bind(k.revoked_at)
            .bind(k.created_at)
            .bind(k.metadata.to_string())
            .bind(&k.rotated_from)
            .bind(&k.admin_role)
            .bind(&k.digest)
            .bind(&k.id)
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn fetch_key(
        conn: &mut sqlx::SqliteConnection,
        id: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(key_from_row).transpose()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        Self::write_key(&mut conn, key, true).await
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        Self::fetch_key(&mut conn, id).await
    }

    async fn get_key_auths(&self, ids: &[String]) -> Result<Vec<KeyAuth>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut found = Vec::with_capacity(ids.len());
        for (sql, chunk) in chunked(ids, key_select) {
            let mut q = sqlx::query(sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(&mut *conn).await.map_err(unavailable)? {
                found.push(key_auth_from_row(&row)?);
            }
        }
        Ok(found)
    }

    async fn list_keys(
        &self,
        after: Option<&str>,
        limit: usize,
        team_scope: Option<&str>,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id > ?1 \
             AND (?2 IS NULL OR (team_id = ?2 AND admin_role IS NULL)) ORDER BY id LIMIT ?3"
        ))
        .bind(after.unwrap_or(""))
        .bind(team_scope)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn update_key(
        &self,
        id: &str,
        patch: &KeyPatch,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        // Read-modify-write: take the write lock up front. A deferred
        // transaction that reads first fails with SQLITE_BUSY_SNAPSHOT (no
        // busy-timeout retry) whenever another writer, e.g. the ledger,
        // commits in between.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let Some(mut key) = Self::fetch_key(&mut tx, id).await? else {
            return Ok(None);
        };
        patch.apply(&mut key);
        Self::write_key(&mut tx, &key, false).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(key))
    }

    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(at_ms)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate_key(
        &self,
        old_id: &str,
        new: &ApiKeyRecord,
        old_expires_at: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query(
            "UPDATE api_keys SET expires_at = MIN(COALESCE(expires_at, ?1), ?1) WHERE id = ?2 AND revoked_at IS NULL",
        )
        .bind(old_expires_at)
        .bind(old_id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        Self::write_key(&mut tx, new, true).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn get_setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn put_setting_if_absent(&self, name: &str, value: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)")
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let _one_writer = self.spend.writes.lock().await;
        let batch = daily_spend(records);
        let flush = {
            let pending = self.spend.lock();
            pending.due(batch.len()).then(|| pending.with(&batch))
        };
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for (sql, chunk) in chunked(records, usage_insert) {
            let mut q = sqlx::query(sql);
            for r in chunk {
                q = bind_usage(q, r);
            }
            q.execute(&mut *tx).await.map_err(unavailable)?;
        }
        let Some(spend) = flush else {
            // The batch's spend waits in memory (see SPEND_FLUSH_EVERY); a
            // crash before the next flush is caught up from the ledger.
            tx.commit().await.map_err(unavailable)?;
            self.spend.lock().add(&batch);
            return Ok(());
        };
        self.commit_spend(tx, &spend, &batch).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let _one_writer = self.spend.writes.lock().await;
        let spend = {
            let pending = self.spend.lock();
            (pending.entries > 0).then(|| pending.with(&[]))
        };
        if let Some(spend) = spend {
            let tx = self.pool.begin().await.map_err(unavailable)?;
            self.commit_spend(tx, &spend, &[]).await?;
        }
        // Moves the write-ahead log into the database file and empties it:
        // the next start reads one file instead of replaying (and first
        // checkpointing) a log that may hold every write since the last
        // automatic checkpoint. A no-op for an in-memory database.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn usage_summary(
        &self,
        group: UsageGroup,
        since: Option<i64>,
        until: Option<i64>,
        team: Option<&str>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let col = group.column();
        let sql = format!(
            "SELECT {col} AS grp, COUNT(*) AS requests, COALESCE(SUM(prompt_tokens), 0) AS pt, \
             COALESCE(SUM(completion_tokens), 0) AS ct, COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS errs, \
             COALESCE(SUM(cost_micros), 0) AS cost \
             FROM usage_records WHERE ts >= ?1 AND ts < ?2 AND (?3 IS NULL OR team_id = ?3) GROUP BY grp ORDER BY grp"
        );
        let rows = sqlx::query(&sql)
            .bind(since.unwrap_or(i64::MIN))
            .bind(until.unwrap_or(i64::MAX))
            .bind(team)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let c = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
                Ok(UsageRow {
                    group: r.try_get("grp").map_err(c)?,
                    requests: r.try_get("requests").map_err(c)?,
                    prompt_tokens: r.try_get("pt").map_err(c)?,
                    completion_tokens: r.try_get("ct").map_err(c)?,
                    errors: r.try_get("errs").map_err(c)?,
                    cost_micros: r.try_get("cost").map_err(c)?,
                    cost_usd: crate::limits::config::usd(r.try_get("cost").map_err(c)?),
                })
            })
            .collect()
    }

    async fn upsert_user(&self, u: &UserRecord) -> Result<UserRecord, StoreError> {
        let roles = serde_json::to_string(&u.roles).unwrap_or_else(|_| "[]".into());
        let row = sqlx::query(&format!(
            "INSERT INTO users (id, issuer, subject, team_id, roles, disabled, first_seen, last_seen) \
             VALUES (?, ?, ?, ?, ?, 0, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET team_id = excluded.team_id, roles = excluded.roles, last_seen = excluded.last_seen \
             RETURNING {USER_COLUMNS}"
        ))
        .bind(&u.id)
        .bind(&u.issuer)
        .bind(&u.subject)
        .bind(&u.team)
        .bind(roles)
        .bind(u.first_seen)
        .bind(u.last_seen)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        user_from_row(&row)
    }

    async fn get_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(
        &self,
        after: Option<&str>,
        limit: usize,
        team: Option<&str>,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id > ?1 AND (?2 IS NULL OR team_id = ?2) ORDER BY id LIMIT ?3"
        ))
        .bind(after.unwrap_or(""))
        .bind(team)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn set_user_disabled(
        &self,
        id: &str,
        disabled: bool,
    ) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE users SET disabled = ? WHERE id = ? RETURNING {USER_COLUMNS}"
        ))
        .bind(i64::from(disabled))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn insert_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for chunk in events.chunks(1000) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO audit_events (ts, kind, reason, client_ip, credential_kind, key_id, issuer, request_id, path, actor, target, before_json, after_json) ",
            );
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(e.ts)
                    .push_bind(&e.kind)
                    .push_bind(&e.reason)
                    .push_bind(&e.client_ip)
                    .push_bind(&e.credential_kind)
                    .push_bind(&e.key_id)
                    .push_bind(&e.issuer)
                    .push_bind(&e.request_id)
                    .push_bind(&e.path)
                    .push_bind(&e.actor)
                    .push_bind(&e.target)
                    .push_bind(e.before.as_ref().map(ToString::to_string))
                    .push_bind(e.after.as_ref().map(ToString::to_string));
            });
            qb.build().execute(&mut *tx).await.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn list_audit(
        &self,
        since: Option<i64>,
        until: Option<i64>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ts, kind, reason, client_ip, credential_kind, key_id, issuer, request_id, path, actor, target, before_json, after_json \
             FROM audit_events WHERE ts >= ? AND ts < ? AND id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(since.unwrap_or(i64::MIN))
        .bind(until.unwrap_or(i64::MAX))
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let c = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
                Ok(AuditEvent {
                    id: r.try_get("id").map_err(c)?,
                    ts: r.try_get("ts").map_err(c)?,
                    kind: r.try_get("kind").map_err(c)?,
                    reason: r.try_get("reason").map_err(c)?,
                    client_ip: r.try_get("client_ip").map_err(c)?,
                    credential_kind: r.try_get("credential_kind").map_err(c)?,
                    key_id: r.try_get("key_id").map_err(c)?,
                    issuer: r.try_get("issuer").map_err(c)?,
                    request_id: r.try_get("request_id").map_err(c)?,
                    path: r.try_get("path").map_err(c)?,
                    actor: r.try_get("actor").map_err(c)?,
                    target: r.try_get("target").map_err(c)?,
                    before: json_value(r.try_get("before_json").map_err(c)?)?,
                    after: json_value(r.try_get("after_json").map_err(c)?)?,
                })
            })
            .collect()
    }

    async fn insert_resources(&self, records: &[ResourceRecord]) -> Result<(), StoreError> {
        super::resources::insert(&self.pool, records).await
    }

    async fn find_resources(
        &self,
        provider: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<ResourceRecord>, StoreError> {
        super::resources::find(&self.pool, provider, keys).await
    }

    async fn delete_resource(
        &self,
        provider: &str,
        family: &str,
        id: &str,
    ) -> Result<u64, StoreError> {
        super::resources::delete(&self.pool, provider, family, id).await
    }

    async fn list_resources(
        &self,
        query: &ResourceQuery,
    ) -> Result<Vec<ResourceRecord>, StoreError> {
        super::resources::list(&self.pool, query).await
    }

    async fn list_limit_overrides(&self) -> Result<Vec<super::LimitOverrideRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT subject, limits, budget FROM limit_overrides ORDER BY subject")
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let c = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
                Ok(super::LimitOverrideRecord {
                    subject: r.try_get("subject").map_err(c)?,
                    limits: r.try_get("limits").map_err(c)?,
                    budget: r.try_get("budget").map_err(c)?,
                })
            })
            .collect()
    }

    async fn put_limit_override(
        &self,
        record: &super::LimitOverrideRecord,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        if record.limits.is_none() && record.budget.is_none() {
            sqlx::query("DELETE FROM limit_overrides WHERE subject = ?")
                .bind(&record.subject)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO limit_overrides (subject, limits, budget, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (subject) DO UPDATE SET limits = excluded.limits, budget = excluded.budget, updated_at = excluded.updated_at",
        )
        .bind(&record.subject)
        .bind(&record.limits)
        .bind(&record.budget)
        .bind(at_ms)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn spend_since(&self, bucket: &str, since_ms: i64) -> Result<i64, StoreError> {
        if since_ms.rem_euclid(DAY_MS) == 0 {
            // The table and the pending spend as of one moment: a flush moves
            // spend from one to the other at its commit, so a read that
            // overlapped a commit (the generation moved, or is odd) is redone.
            // Never waits for a flush's upserts, only for its commit.
            let day = since_ms / DAY_MS;
            loop {
                let (before, pending) = {
                    let p = self.spend.lock();
                    (p.generation, p.since(bucket, day))
                };
                if before % 2 == 1 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let stored: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(SUM(cost_micros), 0) FROM spend_daily WHERE subject = ? AND day >= ?",
                )
                .bind(bucket)
                .bind(day)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
                if self.spend.lock().generation == before {
                    return Ok(stored.saturating_add(pending));
                }
            }
        }
        // Not at a UTC midnight (budget periods always are): from the ledger itself.
        let (sql, value) = match bucket.split_once(':') {
            Some(("team", v)) => ("team_id = ?", v),
            Some(("user", v)) => ("user_id = ?", v),
            Some(("key", v)) => ("key_id = ?", v),
            _ => ("key_id IS NULL AND user_id IS NULL AND ? = ''", ""),
        };
        let row = sqlx::query(&format!(
            "SELECT COALESCE(SUM(cost_micros), 0) AS spent FROM usage_records WHERE ts >= ? AND {sql}"
        ))
        .bind(since_ms)
        .bind(value)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        row.try_get("spent")
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    async fn usage_by_request(&self, request_id: &str) -> Result<Vec<UsageRecord>, StoreError> {
        let rows = sqlx::query(&format!("{USAGE_SELECT} WHERE request_id = ? ORDER BY id"))
            .bind(request_id)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(usage_from_row).collect()
    }
}

/// The ledger's columns as [`usage_from_row`] reads them.
const USAGE_SELECT: &str = "SELECT ts, request_id, key_id, user_id, team_id, provider, model, endpoint, method, \
     status, prompt_tokens, completion_tokens, latency_ms, ttfb_ms, error_code, cost_micros FROM usage_records";

fn usage_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<UsageRecord, StoreError> {
    let c = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    let opt_u64 = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
    let status: i64 = r.try_get("status").map_err(c)?;
    let latency: i64 = r.try_get("latency_ms").map_err(c)?;
    Ok(UsageRecord {
        ts: r.try_get("ts").map_err(c)?,
        request_id: r.try_get("request_id").map_err(c)?,
        key_id: r.try_get("key_id").map_err(c)?,
        user: r.try_get("user_id").map_err(c)?,
        team: r.try_get("team_id").map_err(c)?,
        provider: r.try_get("provider").map_err(c)?,
        model: r.try_get("model").map_err(c)?,
        endpoint: r.try_get("endpoint").map_err(c)?,
        method: r.try_get("method").map_err(c)?,
        status: u16::try_from(status).unwrap_or(0),
        prompt_tokens: opt_u64(r.try_get("prompt_tokens").map_err(c)?),
        completion_tokens: opt_u64(r.try_get("completion_tokens").map_err(c)?),
        latency_ms: u64::try_from(latency).unwrap_or(0),
        ttfb_ms: opt_u64(r.try_get("ttfb_ms").map_err(c)?),
        error_code: r.try_get("error_code").map_err(c)?,
        cost_micros: r.try_get("cost_micros").map_err(c)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn usage_inserts_come_in_six_sizes() {
        for n in [1, 2, 3, 31, 32, 33, 1000] {
            let (sql, rows) = usage_insert(n);
            assert!(rows <= n && rows.is_power_of_two() && rows <= 32, "{n}");
            assert!(rows * 2 > n || rows == 32, "{n}: greedy");
            assert_eq!(sql.matches('?').count(), rows * USAGE_COLUMNS.len());
        }
    }

    #[tokio::test]
    async fn spend_per_day_agrees_with_the_ledger() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let day = DAY_MS;
        // Three days, two keys of one team, a user, an anonymous call and unpriced rows.
        let mut batch = Vec::new();
        for i in 0..90i64 {
            batch.push(UsageRecord {
                ts: 10 * day + i * (day / 30),
                request_id: format!("r{i}"),
                key_id: (i % 5 != 0).then(|| format!("k{}", i % 2)),
                user: (i % 3 == 0).then(|| "alice".to_owned()),
                team: (i % 5 != 0).then(|| "red".to_owned()),
                method: "POST".into(),
                status: 200,
                cost_micros: (i % 7 != 0).then_some(100 + i),
                ..UsageRecord::default()
            });
        }
        // In two batches, so a subject's day is added to.
        store.insert_usage(&batch[..45]).await.unwrap();
        store.insert_usage(&batch[45..]).await.unwrap();
        let expected = |subject: &str, since: i64| -> i64 {
            batch
                .iter()
                .filter(|r| r.ts >= since)
                .filter(|r| match subject.split_once(':') {
                    Some(("key", k)) => r.key_id.as_deref() == Some(k),
                    Some(("user", u)) => r.user.as_deref() == Some(u),
                    Some(("team", t)) => r.team.as_deref() == Some(t),
                    _ => r.key_id.is_none() && r.user.is_none(),
                })
                .filter_map(|r| r.cost_micros)
                .sum()
        };
        for subject in [
            "key:k0",
            "key:k1",
            "user:alice",
            "team:red",
            "anonymous",
            "key:none",
        ] {
            for since in [0, 10 * day, 11 * day, 12 * day, 13 * day] {
                // At a midnight: from `spend_daily`.
                let by_day = store.spend_since(subject, since).await.unwrap();
                assert_eq!(by_day, expected(subject, since), "{subject} since {since}");
                // One millisecond later is not a midnight: from the ledger.
                let ledger = store.spend_since(subject, since + 1).await.unwrap();
                assert_eq!(
                    ledger,
                    expected(subject, since + 1),
                    "{subject} since {since}+1"
                );
            }
        }
        assert!(store.spend_since("team:red", 0).await.unwrap() > 0);
    }

    fn priced(i: i64, key: &str) -> UsageRecord {
        UsageRecord {
            ts: 20 * DAY_MS + i,
            request_id: format!("p{key}{i}"),
            key_id: Some(key.to_owned()),
            team: Some("blue".to_owned()),
            method: "POST".into(),
            status: 200,
            cost_micros: Some(1_000),
            ..UsageRecord::default()
        }
    }

    async fn stored_spend(store: &SqliteStore, subject: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(cost_micros), 0) FROM spend_daily WHERE subject = ?",
        )
        .bind(subject)
        .fetch_one(&store.pool)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn spend_waiting_in_memory_counts_and_is_flushed_with_a_later_batch() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.insert_usage(&[priced(1, "k1")]).await.unwrap();
        store
            .insert_usage(&[priced(2, "k1"), priced(3, "k2")])
            .await
            .unwrap();
        // Not yet in the table, but a budget sees all of it.
        assert_eq!(stored_spend(&store, "team:blue").await, 0);
        assert_eq!(
            store.spend_since("team:blue", 20 * DAY_MS).await.unwrap(),
            3_000
        );
        assert_eq!(store.spend_since("key:k1", 0).await.unwrap(), 2_000);
        assert_eq!(store.spend_since("key:k1", 21 * DAY_MS).await.unwrap(), 0);
        // Once due, the next batch writes everything pending with itself.
        store.spend.lock().oldest = Some(Instant::now() - SPEND_FLUSH_EVERY);
        store.insert_usage(&[priced(4, "k2")]).await.unwrap();
        assert_eq!(stored_spend(&store, "team:blue").await, 4_000);
        assert_eq!(stored_spend(&store, "key:k2").await, 2_000);
        assert_eq!(store.spend.lock().entries, 0);
        assert_eq!(
            store.spend_since("team:blue", 20 * DAY_MS).await.unwrap(),
            4_000
        );
        let mark: String = sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
            .bind(SPEND_THROUGH)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mark, "4");
    }

    #[tokio::test]
    async fn flush_moves_the_write_ahead_log_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        for i in 0..50 {
            let mut k = ApiKeyRecord::new(format!("k{i:03}"), vec![7; 32]);
            k.created_at = i;
            store.insert_key(&k).await.unwrap();
        }
        let wal = dir.path().join("p.db-wal");
        let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert!(size() > 0, "the inserts are in the log");
        store.flush().await.unwrap();
        assert_eq!(size(), 0, "checkpointed and truncated");
        assert_eq!(
            store.get_key_auths(&["k007".to_owned()]).await.unwrap()[0],
            crate::store::KeyAuth::from(&store.get_key("k007").await.unwrap().unwrap())
        );
    }

    #[tokio::test]
    async fn flush_writes_the_pending_spend_and_its_mark() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let mark = || async { store.get_setting(SPEND_THROUGH).await.unwrap() };
        store.flush().await.unwrap(); // nothing pending: nothing written
        assert_eq!(mark().await.as_deref(), Some("0"));
        store
            .insert_usage(&[priced(1, "k1"), priced(2, "k2")])
            .await
            .unwrap();
        assert_eq!(stored_spend(&store, "team:blue").await, 0);
        store.flush().await.unwrap();
        assert_eq!(stored_spend(&store, "team:blue").await, 2_000);
        assert_eq!(stored_spend(&store, "key:k1").await, 1_000);
        assert_eq!(store.spend.lock().entries, 0);
        assert_eq!(store.spend.lock().generation % 2, 0);
        assert_eq!(mark().await.as_deref(), Some("2"));
        assert_eq!(
            store.spend_since("team:blue", 20 * DAY_MS).await.unwrap(),
            2_000
        );
        // A second flush has nothing to add.
        store.flush().await.unwrap();
        assert_eq!(stored_spend(&store, "team:blue").await, 2_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_budget_read_during_flushes_never_counts_spend_twice() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Arc::new(SqliteStore::open(&url).await.unwrap());
        let started = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let writer = {
            let (store, started) = (store.clone(), started.clone());
            tokio::spawn(async move {
                for i in 0..120i64 {
                    if i % 3 == 0 {
                        // Every third batch flushes everything pending.
                        store.spend.lock().oldest = Some(Instant::now() - SPEND_FLUSH_EVERY);
                    }
                    let batch: Vec<_> = (0..20).map(|j| priced(i * 100 + j, "k1")).collect();
                    started.fetch_add(20_000, std::sync::atomic::Ordering::SeqCst);
                    store.insert_usage(&batch).await.unwrap();
                }
            })
        };
        let mut last = 0;
        while !writer.is_finished() {
            let seen = store.spend_since("team:blue", 20 * DAY_MS).await.unwrap();
            let upper = started.load(std::sync::atomic::Ordering::SeqCst);
            assert!(seen <= upper, "counted twice: {seen} > {upper}");
            assert!(seen >= last, "went back: {seen} < {last}");
            last = seen;
        }
        writer.await.unwrap();
        assert_eq!(
            store.spend_since("team:blue", 20 * DAY_MS).await.unwrap(),
            120 * 20_000
        );
    }

    #[tokio::test]
    async fn spend_a_stopped_run_had_not_flushed_is_caught_up_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        {
            let store = SqliteStore::open(&url).await.unwrap();
            store.spend.lock().oldest = Some(Instant::now() - SPEND_FLUSH_EVERY);
            store.insert_usage(&[priced(1, "k1")]).await.unwrap();
            // These two stay in memory and die with the process.
            store.insert_usage(&[priced(2, "k1")]).await.unwrap();
            store
                .insert_usage(&[UsageRecord {
                    user: Some("ann".into()),
                    key_id: None,
                    team: None,
                    ..priced(3, "")
                }])
                .await
                .unwrap();
            assert_eq!(stored_spend(&store, "key:k1").await, 1_000);
            store.pool.close().await;
        }
        let store = SqliteStore::open(&url).await.unwrap();
        assert_eq!(stored_spend(&store, "key:k1").await, 2_000);
        assert_eq!(stored_spend(&store, "team:blue").await, 2_000);
        assert_eq!(stored_spend(&store, "user:ann").await, 1_000);
        assert_eq!(store.spend_since("key:k1", 0).await.unwrap(), 2_000);
        // Caught up once: opening again adds nothing.
        store.pool.close().await;
        let store = SqliteStore::open(&url).await.unwrap();
        assert_eq!(stored_spend(&store, "team:blue").await, 2_000);
    }

    #[tokio::test]
    async fn batches_of_any_size_are_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        let mut n = 0;
        for size in [1, 7, 256, 300, 1000] {
            let batch: Vec<UsageRecord> = (0..size)
                .map(|i| UsageRecord {
                    ts: i,
                    request_id: format!("r{size}-{i}"),
                    key_id: Some(format!("k{i}")),
                    method: "POST".into(),
                    status: 200,
                    prompt_tokens: Some(u64::try_from(i).unwrap()),
                    latency_ms: 3,
                    error_code: (i % 2 == 0).then(|| "x".to_owned()),
                    ..UsageRecord::default()
                })
                .collect();
            store.insert_usage(&batch).await.unwrap();
            n += size;
            for r in [&batch[0], &batch[batch.len() - 1]] {
                assert_eq!(
                    store.usage_by_request(&r.request_id).await.unwrap(),
                    vec![r.clone()]
                );
            }
        }
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_records")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(total, n);
    }
}
