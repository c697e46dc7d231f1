//! `document.render`: renders a minijinja template (inline, or one of the tenant's files) with
//! a JSON context into a new file. Templates come from users, so rendering is bounded: fuel
//! caps the instructions executed, the output is capped in size, and it runs on the blocking
//! pool. Template errors are permanent: the same template fails the same way every time.

use std::io::Write;

use bytes::Bytes;
use futures::StreamExt;
use minijinja::{AutoEscape, Environment};
use serde::Deserialize;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Ref, Schema, Type};
use utoipa::openapi::RefOr;
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
    /// Absent or null is an empty context.
    #[serde(default)]
    pub context: Option<serde_json::Value>,
    /// `text/plain` (default) or `text/html` (which turns on HTML auto-escaping).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Display name of the rendered file.
    #[serde(default)]
    pub name: Option<String>,
}

/// The payload as documented: exactly one template source (the handler checks the same).
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum RenderPayloadDoc {
    Inline(InlineTemplate),
    Stored(StoredTemplate),
}

#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct InlineTemplate {
    /// minijinja template source, at most 256 KiB of UTF-8 (65536 characters always fit).
    #[schema(max_length = 65536, pattern = "^[^\\u0000]*$")]
    template: String,
    #[schema(value_type = Option<RenderContext>)]
    context: Option<serde_json::Value>,
    content_type: Option<RenderedType>,
    #[schema(pattern = "^[^\\u0000]*$")]
    name: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct StoredTemplate {
    /// One of the tenant's files holding the template (at most 256 KiB of UTF-8).
    template_file_id: Uuid,
    #[schema(value_type = Option<RenderContext>)]
    context: Option<serde_json::Value>,
    content_type: Option<RenderedType>,
    #[schema(pattern = "^[^\\u0000]*$")]
    name: Option<String>,
}

/// `text/html` turns on HTML auto-escaping.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub enum RenderedType {
    #[serde(rename = "text/plain")]
    Plain,
    #[serde(rename = "text/html")]
    Html,
}

/// Postgres stores JSON numbers as exact decimals; ones near f64's limits would not read back.
const MAX_CONTEXT_NUMBER: f64 = 1e300;

fn numbers_in_range(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|x| x.abs() <= MAX_CONTEXT_NUMBER),
        serde_json::Value::Array(items) => items.iter().all(numbers_in_range),
        serde_json::Value::Object(map) => map.values().all(numbers_in_range),
        _ => true,
    }
}

/// The render context as documented: an object of JSON values whose numbers lie within
/// ±1e300 and whose text holds no NUL (Postgres JSON cannot; such payloads get a 422). The
/// value schema refers to itself, so it is written by hand.
pub struct RenderContext;

const CONTEXT_VALUE: &str = "RenderContextValue";
const NO_NUL: &str = "^[^\\u0000]*$";

fn text_without_nul() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(NO_NUL))
}

fn object_of_values() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(text_without_nul()))
        .additional_properties(Some(Ref::from_schema_name(CONTEXT_VALUE)))
}

impl utoipa::PartialSchema for RenderContext {
    fn schema() -> RefOr<Schema> {
        object_of_values().description(Some("Variables for the template")).into()
    }
}

impl utoipa::ToSchema for RenderContext {
    fn name() -> std::borrow::Cow<'static, str> {
        "RenderContext".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        let number = ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(-MAX_CONTEXT_NUMBER))
            .maximum(Some(MAX_CONTEXT_NUMBER));
        let value = OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(text_without_nul())
            .item(number)
            .item(ArrayBuilder::new().items(Ref::from_schema_name(CONTEXT_VALUE)))
            .item(object_of_values());
        schemas.push((CONTEXT_VALUE.to_string(), value.into()));
    }
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
        if let Some(context) = &p.context {
            if !context.is_object() {
                return Err("context must be a JSON object".into());
            }
            if !numbers_in_range(context) {
                return Err(format!("numbers in context must lie within ±{MAX_CONTEXT_NUMBER:e}"));
            }
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
        let context = p.context.unwrap_or_else(|| serde_json::json!({}));
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
        assert!(DocumentRender::validate(&payload(json!({"template": "x", "context": null}))).is_ok());
        assert!(DocumentRender::validate(&payload(json!({"template": "x", "context": {"a": [1e300, -7]}}))).is_ok());
        let huge = json!({"template": "x", "context": {"a": {"b": [1.7976931348623157e308]}}});
        assert!(DocumentRender::validate(&payload(huge)).is_err());
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
