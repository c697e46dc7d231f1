//! Files (DESIGN §6 Files): bytes in object storage, metadata in table `files`. `repo` owns
//! every `files` SQL statement, `api` is the HTTP surface, `ranges` its conditional and range
//! rules, `names` the display-name rules, `content` the analysis `file.digest` reports.
//!
//! The one invariant: a row exists only for a complete object. Writes stream into an upload
//! that becomes visible on completion, and the row is inserted afterwards; every failure on
//! the way aborts the upload, and a failed insert deletes the object again.

pub mod api;
pub mod content;
pub mod names;
pub mod ranges;
pub mod repo;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::state::AppState;
use crate::storage::{Storage, StorageError};

/// One stored file. Tenant and object key are internal and never serialised.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct File {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant: String,
    /// Sanitised display name.
    pub name: String,
    /// As uploaded (or as generated); `file.digest` reports what the bytes look like.
    pub content_type: String,
    pub size: i64,
    /// Hex; also the content's ETag.
    pub sha256: String,
    #[serde(skip)]
    pub object_key: String,
    pub created_at: DateTime<Utc>,
}

/// What a new file is, before its bytes arrive.
pub struct NewFile<'a> {
    pub tenant: &'a str,
    /// Already sanitised ([`names::sanitize`]).
    pub name: &'a str,
    pub content_type: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the content exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The client's body broke off or was malformed.
    #[error("reading the request body failed: {0}")]
    Body(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("recording the file failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// Streams `body` into a new object, hashing and counting as it goes, then records it.
/// More than `limit` bytes aborts the upload: nothing is kept.
pub async fn ingest<S>(state: &AppState, new: NewFile<'_>, limit: u64, body: S) -> Result<File, IngestError>
where
    S: Stream<Item = Result<Bytes, IngestError>>,
{
    let mut body = std::pin::pin!(body);
    let id = Uuid::now_v7();
    let key = Storage::object_key(new.tenant, id);
    let mut writer = state.storage.writer(&key).await?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let step = match chunk {
            Ok(chunk) => {
                size += chunk.len() as u64;
                if size > limit {
                    Err(IngestError::TooLarge { limit })
                } else {
                    hasher.update(&chunk);
                    writer.write(chunk).await.map_err(IngestError::from)
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = step {
            writer.abort().await;
            return Err(e);
        }
    }
    writer.finish().await?;
    record(state, new, id, key, size, hex::encode(hasher.finalize())).await
}

/// Stores content that is already in memory (generated documents, whose size is capped).
pub async fn store_bytes(state: &AppState, new: NewFile<'_>, bytes: Bytes) -> Result<File, IngestError> {
    let id = Uuid::now_v7();
    let key = Storage::object_key(new.tenant, id);
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let size = bytes.len() as u64;
    state.storage.put(&key, bytes).await?;
    record(state, new, id, key, size, sha256).await
}

async fn record(
    state: &AppState,
    new: NewFile<'_>,
    id: Uuid,
    key: String,
    size: u64,
    sha256: String,
) -> Result<File, IngestError> {
    let row = repo::Insert {
        id,
        tenant: new.tenant,
        name: new.name,
        content_type: new.content_type,
        size: i64::try_from(size).unwrap_or(i64::MAX),
        sha256: &sha256,
        object_key: &key,
    };
    match repo::insert(&state.db, row).await {
        Ok(file) => Ok(file),
        Err(e) => {
            if let Err(cleanup) = state.storage.delete(&key).await {
                tracing::error!(object_key = %key, error = %cleanup, "orphaned object: the row insert and the cleanup failed");
            }
            Err(e.into())
        }
    }
}

impl From<StorageError> for crate::jobs::JobError {
    fn from(e: StorageError) -> Self {
        match e {
            // The row exists but its bytes do not: trying again finds them missing again.
            StorageError::NotFound(_) => crate::jobs::JobError::permanent(format!("file content is missing: {e}")),
            _ => crate::jobs::JobError::retryable(e.to_string()),
        }
    }
}

impl From<IngestError> for crate::jobs::JobError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Storage(e) => e.into(),
            IngestError::Database(e) => crate::jobs::JobError::retryable(format!("recording the file failed: {e}")),
            IngestError::TooLarge { .. } | IngestError::Body(_) => crate::jobs::JobError::permanent(e.to_string()),
        }
    }
}
