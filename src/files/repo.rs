//! Every SQL statement on table `files`. All reads are scoped by tenant.

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::File;

const COLUMNS: &str = "id, tenant, name, content_type, size, sha256, object_key, created_at";

pub struct Insert<'a> {
    pub id: Uuid,
    pub tenant: &'a str,
    pub name: &'a str,
    pub content_type: &'a str,
    pub size: i64,
    pub sha256: &'a str,
    pub object_key: &'a str,
}

pub async fn insert(db: &PgPool, f: Insert<'_>) -> Result<File, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO files (id, tenant, name, content_type, size, sha256, object_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(f.id)
    .bind(f.tenant)
    .bind(f.name)
    .bind(f.content_type)
    .bind(f.size)
    .bind(f.sha256)
    .bind(f.object_key)
    .fetch_one(db)
    .await
}

pub async fn get(db: &PgPool, tenant: &str, id: Uuid) -> Result<Option<File>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM files WHERE tenant = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Newest first; `before` is the last id of the previous page (keyset pagination).
pub async fn list(db: &PgPool, tenant: &str, before: Option<Uuid>, limit: i64) -> Result<Vec<File>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM files WHERE tenant = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(tenant)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Deletes the row inside a transaction the caller commits only once the object is gone too:
/// a failed object delete rolls back, so a row never points at missing bytes.
pub async fn delete_begin(
    db: &PgPool,
    tenant: &str,
    id: Uuid,
) -> Result<Option<(Transaction<'static, Postgres>, File)>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let file: Option<File> =
        sqlx::query_as(&format!("DELETE FROM files WHERE tenant = $1 AND id = $2 RETURNING {COLUMNS}"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(file.map(|f| (tx, f)))
}
