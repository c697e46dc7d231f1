//! Object storage for uploaded files. The local filesystem is the embedded default.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{StorageLocation, StorageSettings};

#[derive(Clone, Debug)]
pub struct Storage {
    root: PathBuf,
}

impl Storage {
    /// Prepares the storage root; a root that cannot be created or written is a start-up error.
    pub async fn open(settings: &StorageSettings) -> anyhow::Result<Storage> {
        match &settings.location {
            StorageLocation::Local(root) => {
                tokio::fs::create_dir_all(root)
                    .await
                    .with_context(|| format!("creating the storage directory {}", root.display()))?;
                let probe = root.join(".ballast-write-probe");
                tokio::fs::write(&probe, b"ok")
                    .await
                    .with_context(|| format!("storage directory {} is not writable", root.display()))?;
                let _ = tokio::fs::remove_file(&probe).await;
                Ok(Storage { root: root.clone() })
            }
            StorageLocation::S3 { .. } => {
                anyhow::bail!("STORAGE_URL=s3://… is not supported by this build yet; use file:///path")
            }
        }
    }

    /// Health probe: the root is reachable. Bounded by `timeout`.
    pub async fn check(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let meta = tokio::time::timeout(timeout, tokio::fs::metadata(&self.root))
            .await
            .map_err(|_| anyhow::anyhow!("storage did not answer within {timeout:?}"))?
            .with_context(|| format!("storage root {}", self.root.display()))?;
        anyhow::ensure!(meta.is_dir(), "storage root {} is not a directory", self.root.display());
        Ok(started.elapsed())
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }
}
