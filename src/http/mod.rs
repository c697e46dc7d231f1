//! HTTP edge: routers for both listeners, the middleware stack, the server loop.

pub mod client_ip;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::state::AppState;
use error::ApiError;
use routes::{health, management};

/// The public listener's router: probes, the API, docs.
pub fn public_router(state: AppState) -> Router {
    let s = &state.settings.http;
    let limits = middleware::limits::Limits {
        permits: Arc::new(Semaphore::new(s.max_concurrent)),
        request_timeout: s.request_timeout,
    };
    // Responses that offer byte ranges (file content) go out as stored: compressing them would
    // drop Content-Length and the ranges they advertise.
    let as_stored = |_: StatusCode, _: Version, h: &HeaderMap, _: &Extensions| !h.contains_key(header::ACCEPT_RANGES);
    let compression = SizeAbove::new(1024)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE)
        .and(as_stored);

    // Layer order, outermost first (a request walks down this list, the response back up):
    // 1. observe: trace/request ids, access log, RED metrics and the security headers — sees
    //    every outcome, so even errors, sheds, time-outs and panics carry them; inside it,
    //    load shedding before any work is done, the request deadline, and panics turned into
    //    500 problems (the worker thread survives, nothing leaks);
    // 2. CORS; 3. compression; 4. the JSON body limit (uploads lift it on their own route).
    let stack = ServiceBuilder::new()
        .layer(middleware::observe::ObserveLayer::new(state.clone(), limits))
        .layer(tower::util::option_layer(cors(&s.cors_origins)))
        .layer(middleware::compress::NegotiatedCompressionLayer::new(compression))
        .layer(DefaultBodyLimit::max(s.max_json_body));

    Router::new()
        .route("/health", get(health::summary))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .merge(api_router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(stack)
        .with_state(state)
}

/// `/api/v1`: rate limited (before auth, which the handlers' extractors do). Its routes carry
/// the prefix themselves: `nest` would rebuild every request's URI without it (~2 800
/// instructions a request, a twentieth of a refused one).
fn api_router(state: AppState) -> Router<AppState> {
    crate::jobs::api::router()
        .merge(crate::files::api::router())
        .route_layer(crate::ratelimit::middleware::RateLimitLayer::new(state))
}

/// The management listener: metrics, deep health, build info. Not logged at info level.
pub fn management_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(management::metrics))
        .route("/health/details", get(health::details))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/info", get(management::info))
        .fallback(not_found)
        .layer(CatchPanicLayer::custom(error::panic_response))
        .with_state(state)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("idempotency-key")])
        .expose_headers([HeaderName::from_static("x-request-id"), header::LOCATION, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        return Some(layer.allow_origin(AllowOrigin::any()));
    }
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    Some(layer.allow_origin(list))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no route matches this path")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
