//! `noop`: does nothing, for benchmarks. `fail_times` / `panic` make it misbehave on purpose
//! for retry drills.

use serde::Deserialize;

use crate::jobs::{JobContext, JobError, JobKind, JobResult};

pub struct Noop;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopPayload {
    /// Fail this many attempts before succeeding.
    #[serde(default, deserialize_with = "super::integral")]
    #[schema(minimum = 0, maximum = 25)]
    pub fail_times: i32,
    /// Panic in the handler (the worker must survive and count a failed attempt).
    #[serde(default)]
    pub panic: bool,
}

impl JobKind for Noop {
    const NAME: &'static str = "noop";
    type Payload = NoopPayload;

    fn validate(p: &NoopPayload) -> Result<(), String> {
        if !(0..=25).contains(&p.fail_times) {
            return Err("fail_times must be between 0 and 25".into());
        }
        Ok(())
    }

    async fn run(ctx: JobContext, p: NoopPayload) -> JobResult {
        if p.panic {
            panic!("noop asked to panic");
        }
        if ctx.attempt <= p.fail_times {
            return Err(JobError::retryable(format!("failing attempt {} on purpose", ctx.attempt)));
        }
        Ok(serde_json::json!({}))
    }
}
