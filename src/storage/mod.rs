//! Object storage for file contents (DESIGN §6 Files): the local filesystem by default, any
//! S3-compatible service (MinIO, AWS) with `STORAGE_URL=s3://bucket[/prefix]`. Both go through
//! `object_store`, so there is one code path: streamed multipart writes that become visible
//! only when complete, and ranged streaming reads. Keys are generated here, never taken from
//! user input.

use std::error::Error as StdError;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::chunked::ChunkedStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, PutPayload, RetryConfig, WriteMultipart};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{StorageLocation, StorageSettings};

/// Written at start and read by the health check: proves the store answers and accepts writes.
const PROBE: &str = ".ballast-probe";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3,
}

/// How a write is cut into parts. Memory held per upload is about `chunk × (in_flight + 1)`.
#[derive(Clone, Copy, Debug)]
struct PartPlan {
    chunk: usize,
    in_flight: usize,
}

#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    plan: PartPlan,
    /// For logs and errors: `file:///…` or `s3://bucket/prefix`, never credentials.
    location: String,
}

/// Storage failures, by what the caller should answer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// ENOSPC / EDQUOT locally, or the S3 server reporting a full drive.
    #[error("storage is full: {0}")]
    Full(#[source] object_store::Error),
    #[error("object not found: {0}")]
    NotFound(#[source] object_store::Error),
    /// A remote store that failed or did not answer: worth retrying later.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] object_store::Error),
    #[error("storage failed: {0}")]
    Failed(#[source] object_store::Error),
}

impl Storage {
    /// Connects to the configured store and writes the probe object; a store that cannot be
    /// written is a start-up error.
    pub async fn open(settings: &StorageSettings) -> anyhow::Result<Storage> {
        let storage = match &settings.location {
            StorageLocation::Local(root) => {
                tokio::fs::create_dir_all(root)
                    .await
                    .with_context(|| format!("creating the storage directory {}", root.display()))?;
                let local = LocalFileSystem::new_with_prefix(root)
                    .with_context(|| format!("opening the storage directory {}", root.display()))?;
                // The default 8 KiB read chunks cost one blocking-pool hop each: too slow for big files.
                let store = ChunkedStore::new(Arc::new(local), 256 * 1024);
                Storage {
                    store: Arc::new(store),
                    backend: Backend::Local,
                    plan: PartPlan { chunk: 1024 * 1024, in_flight: 2 },
                    location: format!("file://{}", root.display()),
                }
            }
            StorageLocation::S3 { bucket, prefix } => {
                let s3 = s3_builder(settings, bucket).build().context("configuring the S3 client")?;
                let store: Arc<dyn ObjectStore> =
                    if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix.as_str())) };
                Storage {
                    store,
                    backend: Backend::S3,
                    // S3 refuses parts under 5 MiB (except the last); one part in flight keeps
                    // concurrent uploads from multiplying memory.
                    plan: PartPlan { chunk: 5 * 1024 * 1024, in_flight: 1 },
                    location: format!("s3://{bucket}/{prefix}"),
                }
            }
        };
        let probe = Path::from(PROBE);
        tokio::time::timeout(Duration::from_secs(30), storage.store.put(&probe, PutPayload::from_static(b"ok")))
            .await
            .map_err(|_| anyhow::anyhow!("storage {} did not answer within 30s", storage.location))?
            .with_context(|| format!("storage {} is not writable", storage.location))?;
        Ok(storage)
    }

    /// Health probe: a HEAD of the probe object, rewritten when missing (so a deleted bucket
    /// or directory fails instead of passing as "not found"). Bounded by `timeout`.
    pub async fn check(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let probe = Path::from(PROBE);
        let work = async {
            match self.store.head(&probe).await {
                Ok(_) => Ok(()),
                Err(object_store::Error::NotFound { .. }) => {
                    self.store.put(&probe, PutPayload::from_static(b"ok")).await.map(|_| ())
                }
                Err(e) => Err(e),
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| anyhow::anyhow!("storage did not answer within {timeout:?}"))?
            .with_context(|| format!("storage {}", self.location))?;
        Ok(started.elapsed())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// A fresh key `{tenant-hash}/{id}`: the tenant is hashed so no user-chosen text reaches a
    /// path, and one tenant's objects still share a prefix (for audits and lifecycle rules).
    pub fn object_key(tenant: &str, id: Uuid) -> String {
        let digest = Sha256::digest(tenant.as_bytes());
        format!("{}/{}", hex::encode(&digest[..16]), id.simple())
    }

    /// Starts a streamed write; the object appears only after [`ObjectWriter::finish`].
    pub async fn writer(&self, key: &str) -> Result<ObjectWriter, StorageError> {
        let upload = self.store.put_multipart(&Path::from(key)).await.map_err(|e| self.classify(e))?;
        Ok(ObjectWriter {
            inner: Some(WriteMultipart::new_with_chunk_size(upload, self.plan.chunk)),
            in_flight: self.plan.in_flight,
            storage: self.clone(),
        })
    }

    /// Writes a small object in one request (generated documents, whose size is capped).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.store.put(&Path::from(key), PutPayload::from_bytes(bytes)).await.map(|_| ()).map_err(|e| self.classify(e))
    }

    /// Streams the object, or `range` of it (which the caller has checked against the size).
    pub async fn read(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..GetOptions::default() };
        let result = self.store.get_opts(&Path::from(key), options).await.map_err(|e| self.classify(e))?;
        let this = self.clone();
        Ok(result.into_stream().map_err(move |e| this.classify(e)).boxed())
    }

    /// Removes the object; one that is already gone counts as removed.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.classify(e)),
        }
    }

    fn classify(&self, e: object_store::Error) -> StorageError {
        classify(self.backend, e)
    }
}

fn s3_builder(settings: &StorageSettings, bucket: &str) -> AmazonS3Builder {
    // Bounded retries: a dead store must fail a request within its deadline, not after the
    // default three minutes. Reads resume from where they broke, so the per-request timeout
    // only has to cover one stretch of a slow download.
    let retry = RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(60), ..RetryConfig::default() };
    let client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(300))
        .with_allow_http(settings.s3_allow_http);
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&settings.s3_region)
        .with_allow_http(settings.s3_allow_http)
        .with_retry(retry)
        .with_client_options(client);
    if let Some(endpoint) = settings.s3_endpoint.as_deref().filter(|e| !e.is_empty()) {
        // Path-style requests (endpoint/bucket/key) are what MinIO and other S3 clones expect.
        b = b.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
    }
    if let (Some(id), Some(secret)) = (&settings.s3_access_key_id, &settings.s3_secret_access_key) {
        b = b.with_access_key_id(id.expose_secret()).with_secret_access_key(secret.expose_secret());
    }
    b
}

/// Sorts an `object_store` error by what the client should be told.
pub fn classify(backend: Backend, e: object_store::Error) -> StorageError {
    if is_full(&e) {
        return StorageError::Full(e);
    }
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound(e),
        _ if backend == Backend::S3 => StorageError::Unavailable(e),
        _ => StorageError::Failed(e),
    }
}

fn is_full(e: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                return true;
            }
        }
        cause = c.source();
    }
    // MinIO answers a full drive with this S3 error code (HTTP 507).
    let text = e.to_string();
    text.contains("XMinioStorageFull") || text.contains("Insufficient Storage")
}

/// A streamed write in progress. Dropping it unfinished aborts the upload in the background,
/// so a cancelled request (client gone, deadline hit) leaves no staging file or S3 parts.
pub struct ObjectWriter {
    inner: Option<WriteMultipart>,
    in_flight: usize,
    storage: Storage,
}

impl ObjectWriter {
    /// Queues `bytes`, first waiting while the part uploads in flight are at the limit: the
    /// request body is read no faster than storage accepts it.
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        let Some(w) = self.inner.as_mut() else {
            return Err(StorageError::Failed(object_store::Error::Generic {
                store: "ballast",
                source: "write after the upload ended".into(),
            }));
        };
        w.wait_for_capacity(self.in_flight).await.map_err(|e| self.storage.classify(e))?;
        w.put(bytes);
        Ok(())
    }

    /// Flushes the last part and completes the object.
    pub async fn finish(mut self) -> Result<(), StorageError> {
        match self.inner.take() {
            Some(w) => w.finish().await.map(|_| ()).map_err(|e| self.storage.classify(e)),
            None => Ok(()),
        }
    }

    /// Discards everything written so far.
    pub async fn abort(mut self) {
        if let Some(w) = self.inner.take() {
            if let Err(e) = w.abort().await {
                tracing::warn!(error = %e, "aborting a partial upload failed; the store may keep its parts");
            }
        }
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if let Some(w) = self.inner.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = w.abort().await {
                        tracing::warn!(error = %e, "aborting an abandoned upload failed");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(code: i32) -> object_store::Error {
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from_raw_os_error(code)),
        }
    }

    #[test]
    fn a_full_disk_is_told_apart_from_other_failures() {
        assert!(matches!(classify(Backend::Local, io_error(libc::ENOSPC)), StorageError::Full(_)));
        assert!(matches!(classify(Backend::Local, io_error(libc::EDQUOT)), StorageError::Full(_)));
        assert!(matches!(classify(Backend::Local, io_error(libc::EIO)), StorageError::Failed(_)));
        assert!(matches!(classify(Backend::S3, io_error(libc::ECONNREFUSED)), StorageError::Unavailable(_)));
        let missing = object_store::Error::NotFound { path: "x".into(), source: "gone".into() };
        assert!(matches!(classify(Backend::S3, missing), StorageError::NotFound(_)));
    }

    #[test]
    fn object_keys_never_contain_the_tenant_text() {
        let id = Uuid::now_v7();
        let key = Storage::object_key("../../etc", id);
        assert!(!key.contains(".."), "{key}");
        assert_eq!(key.split('/').count(), 2);
        assert_eq!(key, Storage::object_key("../../etc", id), "stable per tenant");
        assert_ne!(key, Storage::object_key("other", id));
    }
}
