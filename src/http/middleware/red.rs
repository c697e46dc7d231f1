//! RED metrics per request, with the registry's handles kept per route, method and status: a
//! labelled `counter!` builds, allocates and hashes its label set on every call, four times a
//! request. Both maps stay small: routes are templates, methods and statuses are bounded.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use axum::http::Method;
use metrics::{Counter, Histogram};

use crate::metrics as m;

/// The method label. Methods outside this list are `other`: a client inventing methods must
/// not invent series.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

struct ByStatus {
    requests: Counter,
    duration: Histogram,
}

pub struct RouteEntry {
    /// The route template, shared by every request's context.
    pub name: Arc<str>,
    request_size: Histogram,
    response_size: Histogram,
    by_status: RwLock<HashMap<(&'static str, u16), Arc<ByStatus>>>,
}

static ROUTES: LazyLock<RwLock<HashMap<String, Arc<RouteEntry>>>> = LazyLock::new(Default::default);

/// What one finished request adds to the http_* series.
pub struct Sample<'a> {
    pub method: &'static str,
    pub route: &'a RouteEntry,
    pub status: u16,
    pub seconds: f64,
    pub request_size: Option<f64>,
    pub response_size: f64,
}

pub fn record(s: &Sample<'_>) {
    let entry = s.route;
    let by = by_status(entry, s);
    by.requests.increment(1);
    by.duration.record(s.seconds);
    if let Some(size) = s.request_size {
        entry.request_size.record(size);
    }
    entry.response_size.record(s.response_size);
}

/// The handles of a route template, made on its first request.
pub fn route(route: &str) -> Arc<RouteEntry> {
    // A poisoned lock only means a panic elsewhere while holding it; the map is still sound.
    if let Some(e) = ROUTES.read().unwrap_or_else(|p| p.into_inner()).get(route) {
        return e.clone();
    }
    let mut routes = ROUTES.write().unwrap_or_else(|p| p.into_inner());
    routes
        .entry(route.to_string())
        .or_insert_with(|| {
            Arc::new(RouteEntry {
                name: Arc::from(route),
                request_size: metrics::histogram!(m::HTTP_REQUEST_SIZE, "route" => route.to_string()),
                response_size: metrics::histogram!(m::HTTP_RESPONSE_SIZE, "route" => route.to_string()),
                by_status: RwLock::default(),
            })
        })
        .clone()
}

fn by_status(entry: &RouteEntry, s: &Sample<'_>) -> Arc<ByStatus> {
    let key = (s.method, s.status);
    if let Some(b) = entry.by_status.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return b.clone();
    }
    let labels =
        [("method", s.method.to_string()), ("route", s.route.name.to_string()), ("status", s.status.to_string())];
    let mut map = entry.by_status.write().unwrap_or_else(|p| p.into_inner());
    map.entry(key)
        .or_insert_with(|| {
            Arc::new(ByStatus {
                requests: metrics::counter!(m::HTTP_REQUESTS_TOTAL, &labels),
                duration: metrics::histogram!(m::HTTP_REQUEST_DURATION, &labels),
            })
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"FROBNICATE").unwrap()), "other");
        assert_eq!(method_label(&Method::from_bytes(b"X-1234").unwrap()), "other");
    }
}
