//! The OpenAPI 3.1 document, generated from the handlers' annotations, and a docs page.
//! The page loads its renderer from a CDN in the reader's browser: nothing is downloaded at
//! build time (DESIGN §1) and the binary carries no UI assets.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::build_info;

#[derive(OpenApi)]
#[openapi(
    info(title = "ballast", description = "Durable background jobs and files, with operations built in."),
    paths(
        crate::http::routes::health::summary,
        crate::http::routes::health::live,
        crate::http::routes::health::ready,
        crate::jobs::api::create_job,
        crate::jobs::api::list_jobs,
        crate::jobs::api::get_job,
        crate::jobs::api::cancel_job,
        crate::jobs::api::delete_job,
        crate::files::api::create_file,
        crate::files::api::list_files,
        crate::files::api::get_file,
        crate::files::api::get_content,
        crate::files::api::delete_file,
    ),
    components(schemas(crate::http::error::Problem)),
    modifiers(&Security),
    tags((name = "jobs", description = "Durable background jobs"), (name = "files", description = "Files in object storage"), (name = "health", description = "Probes"))
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            let mut bearer = Http::new(HttpAuthScheme::Bearer);
            bearer.bearer_format = Some("JWT".into());
            components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = build_info::VERSION.to_string();
    doc
}

pub async fn openapi_json() -> impl IntoResponse {
    let body = document().to_json().unwrap_or_else(|_| "{}".into());
    ([(header::CONTENT_TYPE, "application/json")], body)
}

pub async fn docs() -> impl IntoResponse {
    (
        [(header::CONTENT_SECURITY_POLICY, "default-src 'none'; script-src https://cdn.jsdelivr.net; style-src 'unsafe-inline' https://cdn.jsdelivr.net; font-src https://cdn.jsdelivr.net data:; img-src data: https:; connect-src 'self'; frame-ancestors 'none'")],
        Html(
            r#"<!doctype html>
<html><head><meta charset="utf-8"><title>ballast API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><script id="api-reference" data-url="/openapi.json"></script>
<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script></body></html>"#,
        ),
    )
}
