//! W3C trace context and request ids, carried through a request in a task-local so every
//! layer (errors, access log, auth) sees the same ids without threading them through calls.

use std::sync::{Arc, OnceLock};

use rand::RngCore;

/// What every log line inside a request carries (the JSON formatter reads it from here, so a
/// request needs no tracing span whose fields would be formatted on every request).
#[derive(Debug)]
pub struct RequestContext {
    pub trace_id: String,
    pub span_id: String,
    pub request_id: String,
    pub method: http::Method,
    /// The matched route template, or `unmatched` (shared with the route's metric handles).
    pub route: Arc<str>,
    /// Shares the request's bytes: no copy per request.
    pub uri: http::Uri,
    /// The client's address (`http::client_ip`): the limiter's identity for anonymous requests.
    pub client_ip: std::net::IpAddr,
    /// Set by the auth extractor once a token is verified; read by the access log.
    pub user: OnceLock<std::sync::Arc<str>>,
}

impl RequestContext {
    pub fn path(&self) -> &str {
        self.uri.path()
    }
}

tokio::task_local! {
    pub static CURRENT: Arc<RequestContext>;
}

/// The context of the request being served by this task, if any.
pub fn current() -> Option<Arc<RequestContext>> {
    CURRENT.try_with(Arc::clone).ok()
}

pub fn current_trace_id() -> Option<String> {
    with_current(|c| c.trace_id.clone())
}

/// Runs `f` with the current request's context, without cloning it.
pub fn with_current<R>(f: impl FnOnce(&RequestContext) -> R) -> Option<R> {
    CURRENT.try_with(|c| f(c)).ok()
}

fn random_hex<const N: usize>() -> String {
    let mut buf = [0u8; N];
    rand::thread_rng().fill_bytes(&mut buf);
    // Per request, twice: into a stack buffer, not through `hex::encode`'s char iterator.
    let mut out = [0u8; 32];
    let out = &mut out[..2 * N];
    match hex::encode_to_slice(buf, out).map(|()| std::str::from_utf8(out)) {
        Ok(Ok(hex)) => hex.to_owned(),
        _ => hex::encode(buf), // N > 16: not a size this module asks for
    }
}

pub fn new_trace_id() -> String {
    random_hex::<16>()
}

pub fn new_span_id() -> String {
    random_hex::<8>()
}

/// Parses `traceparent` (version 00): returns the trace id when the header is well formed
/// and the id is not all zeros, as the W3C spec requires.
pub fn parse_traceparent(value: &str) -> Option<String> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if version == "ff" || !hex(version, 2) || !hex(trace_id, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace_id.to_string())
}

/// Accepts a client's request id when it is short and plain; otherwise a new one is made,
/// so nothing hostile reaches the logs.
pub fn sanitize_request_id(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| value.to_string())
}

/// A UUIDv7: time-ordered, so request ids sort by arrival.
pub fn new_request_id() -> String {
    // Straight into a buffer, not through `Display` and the formatting machinery.
    uuid::Uuid::now_v7().hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_per_w3c() {
        assert_eq!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
        assert!(parse_traceparent("garbage").is_none());
    }

    #[test]
    fn generated_trace_and_span_ids_are_lowercase_hex_that_traceparent_accepts() {
        let (trace, span) = (new_trace_id(), new_span_id());
        assert_eq!((trace.len(), span.len()), (32, 16));
        assert!(trace.bytes().chain(span.bytes()).all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{trace} {span}");
        assert_eq!(parse_traceparent(&format!("00-{trace}-{span}-01")).as_deref(), Some(trace.as_str()));
        assert_ne!(new_trace_id(), trace);
    }

    #[test]
    fn request_ids_are_version_7_and_carry_the_current_time() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let raw = new_request_id();
        assert_eq!((raw.len(), raw.matches('-').count()), (36, 4), "hyphenated, lowercase: {raw}");
        assert_eq!(raw, raw.to_lowercase());
        let id: uuid::Uuid = raw.parse().expect("a uuid");
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, _) = id.get_timestamp().expect("v7 has a timestamp").to_unix();
        assert!(secs.abs_diff(now) <= 1, "timestamp {secs} vs now {now}");
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn hostile_request_ids_are_replaced() {
        assert_eq!(sanitize_request_id("abc-123").as_deref(), Some("abc-123"));
        assert!(sanitize_request_id("a\"b").is_none());
        assert!(sanitize_request_id(&"x".repeat(200)).is_none());
    }
}
