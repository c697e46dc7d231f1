//! Keeps secrets out of logs: query values under secret-looking keys are replaced.

const SECRET_KEYS: &[&str] =
    &["token", "password", "passwd", "secret", "key", "signature", "auth", "credential", "sig"];

pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| k.contains(s))
}

/// Returns the query string with secret-looking values replaced by `[REDACTED]`.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_key(k) => format!("{k}=[REDACTED]"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_query_values_are_redacted() {
        assert_eq!(
            super::redact_query("status=queued&access_token=abc&X-Amz-Signature=zz&limit=5"),
            "status=queued&access_token=[REDACTED]&X-Amz-Signature=[REDACTED]&limit=5"
        );
    }
}
