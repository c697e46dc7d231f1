//! Security and caching headers (DESIGN §4.7) on API responses. Applied by `observe`, the
//! outermost layer, so errors, panics and shed requests carry them too.

use axum::http::{header, HeaderMap, HeaderValue};

pub fn apply(h: &mut HeaderMap, is_docs: bool, hsts: bool) {
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The docs page sets its own policy (it loads its renderer from a CDN).
    if !is_docs || !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    if hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=63072000; includeSubDomains"));
    }
}
