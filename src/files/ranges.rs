//! Conditional and range requests on file content (RFC 9110 §13, §14), for one
//! representation whose strong validator is its sha256.

use std::ops::Range;

/// What a `Range` header asks of a file of a known size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranged {
    /// No usable range: send everything with 200. Multi-range and malformed headers land
    /// here too, which RFC 9110 allows ("a server MAY ignore the Range header").
    Full,
    Partial(Range<u64>),
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Parses a single `bytes=` range: `first-last`, `first-` or the suffix `-count`.
pub fn parse_range(header: &str, size: u64) -> Ranged {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ranged::Full;
    };
    if spec.contains(',') {
        return Ranged::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Full;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // Suffix: the last `count` bytes; zero of them cannot be satisfied.
        (true, _, Some(count)) => {
            if count == 0 || size == 0 {
                Ranged::Unsatisfiable
            } else {
                Ranged::Partial(size.saturating_sub(count)..size)
            }
        }
        (false, Some(first), None) if last.trim().is_empty() => {
            if first >= size {
                Ranged::Unsatisfiable
            } else {
                Ranged::Partial(first..size)
            }
        }
        (false, Some(first), Some(last)) if first <= last => {
            if first >= size {
                Ranged::Unsatisfiable
            } else {
                Ranged::Partial(first..last.min(size - 1) + 1)
            }
        }
        _ => Ranged::Full,
    }
}

/// `If-None-Match` against our ETag, with the weak comparison the RFC prescribes for it.
pub fn none_match_hits(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// `If-Range`: the range applies only while the client's copy is current. Strong comparison;
/// a date (we send no Last-Modified to compare with) never matches.
pub fn if_range_allows(header: Option<&str>, etag: &str) -> bool {
    header.map_or(true, |v| v.trim() == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_are_clamped_and_suffixes_count_from_the_end() {
        assert_eq!(parse_range("bytes=0-0", 10), Ranged::Partial(0..1));
        assert_eq!(parse_range("bytes=2-5", 10), Ranged::Partial(2..6));
        assert_eq!(parse_range("bytes=5-100", 10), Ranged::Partial(5..10));
        assert_eq!(parse_range("bytes=7-", 10), Ranged::Partial(7..10));
        assert_eq!(parse_range("bytes=-3", 10), Ranged::Partial(7..10));
        assert_eq!(parse_range("bytes=-30", 10), Ranged::Partial(0..10));
    }

    #[test]
    fn ranges_outside_the_file_are_unsatisfiable() {
        assert_eq!(parse_range("bytes=10-", 10), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=10-20", 10), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), Ranged::Unsatisfiable);
    }

    #[test]
    fn malformed_or_multiple_ranges_are_ignored() {
        for h in ["bytes=5-2", "bytes=a-b", "items=0-1", "bytes=0-1,3-4", "bytes=", "bytes=-", "bytes=+1-2", "bytes=1"]
        {
            assert_eq!(parse_range(h, 10), Ranged::Full, "{h}");
        }
    }

    #[test]
    fn validators_compare_as_the_rfc_says() {
        let etag = "\"abc\"";
        assert!(none_match_hits("\"abc\"", etag));
        assert!(none_match_hits("W/\"abc\"", etag));
        assert!(none_match_hits("\"x\", \"abc\"", etag));
        assert!(none_match_hits("*", etag));
        assert!(!none_match_hits("\"abd\"", etag));
        assert!(if_range_allows(None, etag));
        assert!(if_range_allows(Some("\"abc\""), etag));
        assert!(!if_range_allows(Some("W/\"abc\""), etag));
        assert!(!if_range_allows(Some("Tue, 15 Nov 1994 08:12:31 GMT"), etag));
    }
}
