//! SQLite queries of the `resources` table (resource ownership).

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::{ResourceQuery, ResourceRecord, StoreError};

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

const COLUMNS: &str = "seq, provider, family, id, owner, parent, created_at";

fn from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ResourceRecord, StoreError> {
    let c = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    Ok(ResourceRecord {
        seq: row.try_get("seq").map_err(c)?,
        provider: row.try_get("provider").map_err(c)?,
        family: row.try_get("family").map_err(c)?,
        id: row.try_get("id").map_err(c)?,
        owner: row.try_get("owner").map_err(c)?,
        parent: row.try_get("parent").map_err(c)?,
        created_at: row.try_get("created_at").map_err(c)?,
    })
}

pub(super) async fn insert(
    pool: &SqlitePool,
    records: &[ResourceRecord],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(unavailable)?;
    // 6 columns; SQLite allows 32766 bound parameters.
    for chunk in records.chunks(1000) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT OR IGNORE INTO resources (provider, family, id, owner, parent, created_at) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(&r.provider)
                .push_bind(&r.family)
                .push_bind(&r.id)
                .push_bind(&r.owner)
                .push_bind(&r.parent)
                .push_bind(r.created_at);
        });
        qb.build().execute(&mut *tx).await.map_err(unavailable)?;
    }
    tx.commit().await.map_err(unavailable)
}

pub(super) async fn find(
    pool: &SqlitePool,
    provider: &str,
    keys: &[(String, String)],
) -> Result<Vec<ResourceRecord>, StoreError> {
    let mut out = Vec::new();
    for chunk in keys.chunks(400) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM resources WHERE provider = "));
        qb.push_bind(provider).push(" AND (");
        for (i, (family, id)) in chunk.iter().enumerate() {
            if i > 0 {
                qb.push(" OR ");
            }
            qb.push("(family = ")
                .push_bind(family)
                .push(" AND id = ")
                .push_bind(id)
                .push(")");
        }
        qb.push(")");
        let rows = qb.build().fetch_all(pool).await.map_err(unavailable)?;
        for r in &rows {
            out.push(from_row(r)?);
        }
    }
    Ok(out)
}

pub(super) async fn delete(
    pool: &SqlitePool,
    provider: &str,
    family: &str,
    id: &str,
) -> Result<u64, StoreError> {
    // The resource and, transitively, everything recorded under it (a
    // thread's messages, runs and their steps).
    let done = sqlx::query(
        "WITH RECURSIVE doomed(seq, id) AS ( \
             SELECT seq, id FROM resources WHERE provider = ?1 AND family = ?2 AND id = ?3 \
             UNION SELECT r.seq, r.id FROM resources r JOIN doomed d ON r.parent = d.id WHERE r.provider = ?1 \
         ) DELETE FROM resources WHERE seq IN (SELECT seq FROM doomed)",
    )
    .bind(provider)
    .bind(family)
    .bind(id)
    .execute(pool)
    .await
    .map_err(unavailable)?;
    Ok(done.rows_affected())
}

pub(super) async fn list(
    pool: &SqlitePool,
    q: &ResourceQuery,
) -> Result<Vec<ResourceRecord>, StoreError> {
    let mut qb: QueryBuilder<Sqlite> =
        QueryBuilder::new(format!("SELECT {COLUMNS} FROM resources WHERE 1 = 1"));
    if let Some(p) = &q.provider {
        qb.push(" AND provider = ").push_bind(p);
    }
    if let Some(f) = &q.family {
        qb.push(" AND family = ").push_bind(f);
    }
    if let Some(owners) = &q.owners {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        qb.push(" AND owner IN (");
        let mut sep = qb.separated(", ");
        for o in owners {
            sep.push_bind(o);
        }
        qb.push(")");
    }
    if let Some(s) = q.seq_above {
        qb.push(" AND seq > ").push_bind(s);
    }
    if let Some(s) = q.seq_below {
        qb.push(" AND seq < ").push_bind(s);
    }
    qb.push(if q.descending {
        " ORDER BY seq DESC LIMIT "
    } else {
        " ORDER BY seq ASC LIMIT "
    });
    qb.push_bind(i64::try_from(q.limit).unwrap_or(i64::MAX));
    let rows = qb.build().fetch_all(pool).await.map_err(unavailable)?;
    rows.iter().map(from_row).collect()
}
