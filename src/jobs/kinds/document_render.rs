//! `document.render`: renders a minijinja template (inline, or one of the tenant's files) with
//! a JSON context into a new file. Templates come from users, so rendering is bounded: fuel
//! caps the instructions executed, the output is capped in size, and it runs on the blocking
//! pool. Template errors are permanent: the same template fails the same way every time.

use std::io::Write;

use bytes::Bytes;
use futures::StreamExt;
use minijinja::{AutoEscape, Environment};
use serde::Deserialize;
use uuid::Uuid;

use crate::files::{self, names, repo, NewFile};
use crate::jobs::{JobContext, JobError, JobKind, JobResult};

pub struct DocumentRender;

pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
/// Instructions one render may execute: generous for documents, fatal for runaway loops.
const FUEL: u64 = 50_000_000;
const CONTENT_TYPES: [&str; 2] = ["text/plain", "text/html"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderPayload {
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub template_file_id: Option<String>,
    #[serde(default = "empty_object")]
    pub context: serde_json::Value,
    /// `text/plain` (default) or `text/html` (which turns on HTML auto-escaping).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Display name of the rendered file.
    #[serde(default)]
    pub name: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

impl JobKind for DocumentRender {
    const NAME: &'static str = "document.render";
    type Payload = RenderPayload;

    fn validate(p: &RenderPayload) -> Result<(), String> {
        match (&p.template, &p.template_file_id) {
            (Some(t), None) if t.len() > MAX_TEMPLATE_BYTES => {
                return Err(format!("template is larger than {MAX_TEMPLATE_BYTES} bytes"));
            }
            (None, Some(id)) if id.parse::<Uuid>().is_err() => return Err("template_file_id must be a UUID".into()),
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err("exactly one of template and template_file_id is required".into()),
        }
        if !p.context.is_object() {
            return Err("context must be a JSON object".into());
        }
        if let Some(ct) = &p.content_type {
            if !CONTENT_TYPES.contains(&ct.as_str()) {
                return Err(format!("content_type must be one of {}", CONTENT_TYPES.join(", ")));
            }
        }
        Ok(())
    }

    async fn run(ctx: JobContext, p: RenderPayload) -> JobResult {
        let source = match (p.template, p.template_file_id) {
            (Some(t), _) => t,
            (None, Some(id)) => load_template(&ctx, &id).await?,
            (None, None) => {
                return Err(JobError::permanent("exactly one of template and template_file_id is required"))
            }
        };
        let html = p.content_type.as_deref() == Some("text/html");
        let context = p.context;
        let render = tokio::task::spawn_blocking(move || render(&source, context, html));
        let output = tokio::select! {
            joined = render => joined.map_err(|e| JobError::retryable(format!("the render task failed: {e}")))??,
            _ = ctx.cancel.cancelled() => return Err(JobError::permanent("cancelled")),
        };
        let (content_type, default_name) = if html {
            ("text/html; charset=utf-8", "document.html")
        } else {
            ("text/plain; charset=utf-8", "document.txt")
        };
        let name = names::sanitize(p.name.as_deref().unwrap_or(default_name));
        let new = NewFile { tenant: &ctx.tenant, name: &name, content_type };
        let file = files::store_bytes(&ctx.state, new, Bytes::from(output)).await?;
        Ok(serde_json::json!({ "file_id": file.id, "size": file.size, "sha256": file.sha256 }))
    }
}

async fn load_template(ctx: &JobContext, id: &str) -> Result<String, JobError> {
    let id: Uuid = id.parse().map_err(|_| JobError::permanent("template_file_id must be a UUID"))?;
    let file = repo::get(&ctx.state.db, &ctx.tenant, id)
        .await
        .map_err(|e| JobError::retryable(format!("looking up the template file: {e}")))?
        .ok_or_else(|| JobError::permanent(format!("template file {id} does not exist for this tenant")))?;
    if file.size > MAX_TEMPLATE_BYTES as i64 {
        return Err(JobError::permanent(format!(
            "template file {id} has {} bytes; templates are limited to {MAX_TEMPLATE_BYTES}",
            file.size
        )));
    }
    let mut stream = ctx.state.storage.read(&file.object_key, None).await?;
    let mut bytes = Vec::with_capacity(usize::try_from(file.size).unwrap_or_default());
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
        // The row's size is trusted only as far as this check: storage might disagree.
        if bytes.len() > MAX_TEMPLATE_BYTES {
            return Err(JobError::permanent(format!("template file {id} is larger than {MAX_TEMPLATE_BYTES} bytes")));
        }
    }
    String::from_utf8(bytes).map_err(|_| JobError::permanent(format!("template file {id} is not UTF-8 text")))
}

/// Runs on the blocking pool. Every failure here is the template's (or its context's) fault.
fn render(source: &str, context: serde_json::Value, html: bool) -> Result<Vec<u8>, JobError> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_auto_escape_callback(move |_| if html { AutoEscape::Html } else { AutoEscape::None });
    let template = env.template_from_str(source).map_err(template_error)?;
    let mut out = Capped { buf: Vec::new(), cap: MAX_OUTPUT_BYTES };
    template.render_captured_to(minijinja::value::Value::from(minijinja::value::Serde(context)), &mut out).map_err(
        |e| match e.kind() {
            minijinja::ErrorKind::WriteFailure => {
                JobError::permanent(format!("the rendered document exceeds {MAX_OUTPUT_BYTES} bytes"))
            }
            _ => template_error(e),
        },
    )?;
    Ok(out.buf)
}

fn template_error(e: minijinja::Error) -> JobError {
    // Display carries kind, detail and line ("syntax error: unexpected `}` (in <string>:3)").
    JobError::permanent(format!("template error: {e}"))
}

/// A writer that refuses to grow past `cap`, so a template cannot exhaust memory.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            return Err(std::io::Error::other("output limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(v: serde_json::Value) -> RenderPayload {
        serde_json::from_value(v).expect("payload shape")
    }

    #[test]
    fn enqueue_validation_wants_exactly_one_template_source() {
        use serde_json::json;
        assert!(DocumentRender::validate(&payload(json!({"template": "hi"}))).is_ok());
        let id = Uuid::now_v7().to_string();
        assert!(DocumentRender::validate(&payload(json!({"template_file_id": id}))).is_ok());
        assert!(DocumentRender::validate(&payload(json!({}))).is_err());
        assert!(DocumentRender::validate(&payload(json!({"template": "x", "template_file_id": id}))).is_err());
        assert!(DocumentRender::validate(&payload(json!({"template_file_id": "nope"}))).is_err());
        let big = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        assert!(DocumentRender::validate(&payload(json!({"template": big}))).is_err());
        assert!(DocumentRender::validate(&payload(json!({"template": "x", "context": [1]}))).is_err());
        assert!(DocumentRender::validate(&payload(json!({"template": "x", "content_type": "image/png"}))).is_err());
    }

    #[test]
    fn html_output_is_escaped_and_text_is_not() {
        let ctx = serde_json::json!({"name": "<b>Ann</b>"});
        assert_eq!(render("Hi {{ name }}", ctx.clone(), true).ok(), Some(b"Hi &lt;b&gt;Ann&lt;&#x2f;b&gt;".to_vec()));
        assert_eq!(render("Hi {{ name }}", ctx, false).ok(), Some(b"Hi <b>Ann</b>".to_vec()));
    }

    #[test]
    fn bad_and_runaway_templates_fail_permanently() {
        let e = render("{% for x in %}", serde_json::json!({}), false).expect_err("syntax error");
        assert!(!e.retryable && e.message.contains("syntax error"), "{}", e.message);
        let bomb = "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}";
        let e = render(bomb, serde_json::json!({}), false).expect_err("out of fuel");
        assert!(!e.retryable && e.message.contains("fuel"), "{}", e.message);
        let big = "{% for a in range(10000) %}{{ 'x' * 10000 }}{% endfor %}";
        let e = render(big, serde_json::json!({}), false).expect_err("too big");
        assert!(!e.retryable && e.message.contains("exceeds"), "{}", e.message);
    }
}
