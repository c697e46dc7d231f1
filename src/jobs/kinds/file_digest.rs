//! `file.digest` `{ "file_id" }`: streams one of the tenant's files and reports its sha256,
//! size, line count and the content type its bytes look like (not the one it was uploaded as).

use futures::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

use crate::files::content::Analysis;
use crate::files::repo;
use crate::jobs::{JobContext, JobError, JobKind, JobResult};

pub struct FileDigest;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileDigestPayload {
    /// One of the tenant's files.
    #[schema(value_type = uuid::Uuid)]
    pub file_id: String,
}

impl JobKind for FileDigest {
    const NAME: &'static str = "file.digest";
    type Payload = FileDigestPayload;

    fn validate(p: &FileDigestPayload) -> Result<(), String> {
        p.file_id.parse::<Uuid>().map(|_| ()).map_err(|_| "file_id must be a UUID".to_string())
    }

    async fn run(ctx: JobContext, p: FileDigestPayload) -> JobResult {
        let id: Uuid = p.file_id.parse().map_err(|_| JobError::permanent("file_id must be a UUID"))?;
        let file = repo::get(&ctx.state.db, &ctx.tenant, id)
            .await
            .map_err(|e| JobError::retryable(format!("looking up the file: {e}")))?
            .ok_or_else(|| JobError::permanent(format!("file {id} does not exist for this tenant")))?;
        let mut stream = ctx.state.storage.read(&file.object_key, None).await?;
        let mut analysis = Analysis::default();
        loop {
            let chunk = tokio::select! {
                chunk = stream.next() => chunk,
                _ = ctx.cancel.cancelled() => return Err(JobError::permanent("cancelled")),
            };
            match chunk {
                Some(bytes) => analysis.update(&bytes?),
                None => break,
            }
        }
        let report = analysis.finish();
        Ok(serde_json::json!({
            "file_id": file.id,
            "sha256": report.sha256,
            "size": report.size,
            "lines": report.lines,
            "content_type": report.content_type,
            // A mismatch means the stored bytes changed after upload.
            "matches_upload": report.sha256 == file.sha256,
        }))
    }
}
