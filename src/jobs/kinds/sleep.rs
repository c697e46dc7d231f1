//! `sleep`: waits `ms` milliseconds, waking early when cancelled. Used by drain drills.

use std::time::Duration;

use serde::Deserialize;

use crate::jobs::{JobContext, JobError, JobKind, JobResult};

pub struct Sleep;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepPayload {
    #[schema(minimum = 0, maximum = 600000)]
    #[serde(deserialize_with = "super::integral")]
    pub ms: u64,
}

impl JobKind for Sleep {
    const NAME: &'static str = "sleep";
    type Payload = SleepPayload;

    fn validate(p: &SleepPayload) -> Result<(), String> {
        if p.ms > 600_000 {
            return Err("ms must be at most 600000".into());
        }
        Ok(())
    }

    async fn run(ctx: JobContext, p: SleepPayload) -> JobResult {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(p.ms)) => Ok(serde_json::json!({ "slept_ms": p.ms })),
            _ = ctx.cancel.cancelled() => Err(JobError::permanent("cancelled")),
        }
    }
}
