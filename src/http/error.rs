//! The one HTTP error type. Handlers return `Result<_, ApiError>`; lower layers return their
//! own errors (sqlx, storage, jobs) which convert here. Every error leaves as RFC 9457
//! `application/problem+json` with `instance` and `trace_id`; internal causes are logged with
//! their chain and never sent to the client.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::telemetry::context;

/// Marker in response extensions so the access log can record why a 5xx happened.
#[derive(Clone, Debug)]
pub struct ErrorNote(pub String);

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Internal cause, logged, never shown.
    pub source: Option<anyhow::Error>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// RFC 9457 problem details, as every error is answered (and as `/openapi.json` describes
/// them). Borrowed from the error and the request context: no allocation per field.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "urn:ballast:problem:not-found")]
    kind: Urn,
    title: &'a str,
    status: u16,
    detail: &'a str,
    /// The request path.
    instance: &'a str,
    trace_id: &'a str,
}

/// `urn:ballast:problem:{slug}`, written without building the string first.
struct Urn(&'static str);

const URN_PREFIX: &str = "urn:ballast:problem:";

impl Serialize for Urn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{URN_PREFIX}{}", self.0))
    }
}

impl Problem<'_> {
    /// The body, written field by field: through serde (a `Serializer` per field, its own
    /// escaping) it was ~5 000 instructions of the ~64 000 of a refused request (callgrind).
    /// The same JSON as the `Serialize` impl the schema describes (a test compares them).
    fn to_json(&self) -> String {
        use crate::telemetry::json::string;
        let mut w = String::with_capacity(
            96 + self.kind.0.len() + self.title.len() + self.detail.len() + self.instance.len() + self.trace_id.len(),
        );
        // Slugs are literals of this crate, lower-case and dashes: nothing to escape.
        w.push_str("{\"type\":\"");
        w.push_str(URN_PREFIX);
        w.push_str(self.kind.0);
        w.push_str("\",\"title\":");
        string(&mut w, self.title);
        w.push_str(",\"status\":");
        w.push_str(itoa::Buffer::new().format(self.status));
        w.push_str(",\"detail\":");
        string(&mut w, self.detail);
        w.push_str(",\"instance\":");
        string(&mut w, self.instance);
        w.push_str(",\"trace_id\":");
        string(&mut w, self.trace_id);
        w.push('}');
        w
    }
}

impl ApiError {
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, slug, title, detail: detail.into(), headers: Vec::new(), source: None }
    }

    /// Adds a response header; a value that is not a valid header value is dropped.
    pub fn with_header(mut self, name: HeaderName, value: impl TryInto<HeaderValue>) -> Self {
        if let Ok(v) = value.try_into() {
            self.headers.push((name, v));
        }
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail)
            .with_header(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this route does not accept that method",
        )
    }
    pub fn timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request-timeout", "Request timeout", detail)
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }
    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large", detail)
    }
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type", detail)
    }
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", "Unprocessable content", detail)
    }
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail)
            .with_header(header::RETRY_AFTER, retry_after_secs)
    }
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the server failed to handle the request; quote the trace_id when reporting it",
        );
        e.source = Some(source.into());
        e
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.title, self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ctx = context::current();
        let note = match &self.source {
            Some(src) => {
                tracing::error!(error = format!("{src:#}"), status = self.status.as_u16(), "request failed");
                Some(format!("{src:#}"))
            }
            None if self.status.is_server_error() => Some(self.detail.clone()),
            None => None,
        };
        let body = Problem {
            kind: Urn(self.slug),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            instance: ctx.as_ref().map_or("", |c| c.path()),
            trace_id: ctx.as_ref().map_or("", |c| c.trace_id.as_str()),
        };
        let mut resp = Response::new(axum::body::Body::from(body.to_json()));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.reserve(1 + self.headers.len());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        headers.extend(self.headers);
        if let Some(note) = note {
            resp.extensions_mut().insert(ErrorNote(note));
        }
        resp
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => ApiError::not_found("no such resource"),
            sqlx::Error::PoolTimedOut => {
                let mut err = ApiError::unavailable("the database is busy or unreachable; retry shortly", 2);
                err.source = Some(e.into());
                err
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => ApiError::conflict("the resource already exists"),
            // NUL characters and the like: Postgres text and jsonb cannot hold them.
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("22P05" | "22021")) => {
                ApiError::unprocessable("the request contains characters that cannot be stored (e.g. NUL)")
            }
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
                let mut err = ApiError::unavailable("the database is unreachable; retry shortly", 2);
                err.source = Some(e.into());
                err
            }
            _ => ApiError::internal(e),
        }
    }
}

/// A caught panic as a 500 problem. The payload may hold internal details: it goes to the
/// server log, never to the client.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    tracing::error!(panic = message, "handler panicked");
    let mut err = ApiError::internal(anyhow::anyhow!("handler panicked"));
    err.source = None;
    err.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_problem_body_has_exactly_the_fields_the_openapi_schema_promises() {
        let doc = serde_json::to_value(crate::http::openapi::document()).unwrap();
        let schema = &doc["components"]["schemas"]["Problem"];
        let mut promised: Vec<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        let mut required: Vec<&str> =
            schema["required"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        promised.sort_unstable();
        required.sort_unstable();
        assert_eq!(promised, ["detail", "instance", "status", "title", "trace_id", "type"]);
        assert_eq!(required, promised, "every field is always sent");
        assert_eq!(schema["properties"]["type"]["type"], "string");
        assert_eq!(schema["properties"]["status"]["type"], "integer");

        let resp = ApiError::not_found("no such job").with_header(header::RETRY_AFTER, 7u64).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
        let bytes = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let mut sent: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        sent.sort_unstable();
        assert_eq!(sent, promised);
        assert_eq!(body["type"], "urn:ballast:problem:not-found");
        assert_eq!((body["status"].as_u64(), body["detail"].as_str()), (Some(404), Some("no such job")));
    }

    #[test]
    fn the_written_problem_body_is_the_json_serde_makes_of_it_whatever_the_strings_hold() {
        let awkward =
            ["", "plain", "quote \" backslash \\ slash /", "tab\tnew\nline\r", "\u{1}\u{1f}\u{7f}", "é ü 日本 🦀"];
        for s in awkward {
            let p = Problem { kind: Urn("rate-limited"), title: s, status: 429, detail: s, instance: s, trace_id: s };
            let written: serde_json::Value =
                serde_json::from_str(&p.to_json()).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(written, serde_json::to_value(&p).unwrap(), "{s:?}");
        }
    }
}
