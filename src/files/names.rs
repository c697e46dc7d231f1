//! Display names. A name is only ever shown (JSON, `Content-Disposition`), never used as a
//! path, but it still arrives from clients: path parts, control characters and overlong
//! input are removed here once, at the edge.

use std::fmt::Write;

/// Postgres CHECK and common filesystem limit alike.
pub const MAX_NAME_BYTES: usize = 255;
/// What a file is called when the client gave no usable name.
pub const FALLBACK: &str = "file";
/// An extension longer than this is not kept when truncating (it is probably not one).
const MAX_KEPT_EXTENSION: usize = 16;

/// The last path segment of `raw`, without control or bidi-override characters, trimmed,
/// cut to [`MAX_NAME_BYTES`] on a character boundary keeping a short extension.
pub fn sanitize(raw: &str) -> String {
    // Clients (and some browsers) send full paths; the display name is the last segment.
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control() && !is_bidi_control(*c)).collect();
    let trimmed = cleaned.trim();
    if trimmed.chars().all(|c| c == '.') {
        return FALLBACK.to_string();
    }
    truncate(trimmed, MAX_NAME_BYTES)
}

/// Directional overrides can make `invoice{U+202E}fdp.exe` display as `invoiceexe.pdf`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn truncate(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let ext = name.rfind('.').filter(|&i| i > 0 && name.len() - i <= MAX_KEPT_EXTENSION).map_or("", |i| &name[i..]);
    let mut cut = max - ext.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &name[..cut])
}

/// `attachment` with an ASCII fallback and the exact name in RFC 6266/8187 form: quotes,
/// backslashes, `%` and non-ASCII never reach the quoted `filename`.
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| if (c.is_ascii_graphic() || c == ' ') && !matches!(c, '"' | '\\' | '%') { c } else { '_' })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{}", percent_encode(name))
}

/// RFC 8187 `value-chars`: `attr-char` stays, every other byte becomes `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parts_and_control_characters_are_removed() {
        assert_eq!(sanitize("../../etc/passwd"), "passwd");
        assert_eq!(sanitize("C:\\Users\\me\\report.pdf"), "report.pdf");
        assert_eq!(sanitize("a\0b\r\nc\u{7f}d"), "abcd");
        assert_eq!(sanitize("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        assert_eq!(sanitize(".."), FALLBACK);
        assert_eq!(sanitize("dir/"), FALLBACK);
        assert_eq!(sanitize("   "), FALLBACK);
        assert_eq!(sanitize(".bashrc"), ".bashrc");
        assert_eq!(sanitize("résumé 2024.txt"), "résumé 2024.txt");
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary_keeping_the_extension() {
        let long = format!("{}.pdf", "é".repeat(10_000));
        let cut = sanitize(&long);
        assert!(cut.len() <= MAX_NAME_BYTES, "{}", cut.len());
        assert!(cut.ends_with(".pdf"));
        let no_ext = "x".repeat(10_000);
        assert_eq!(sanitize(&no_ext).len(), MAX_NAME_BYTES);
    }

    #[test]
    fn content_disposition_is_ascii_and_quotes_cannot_escape() {
        let cd = content_disposition("naïve \"quoted\"; name=x %41.txt");
        assert!(cd.is_ascii());
        assert!(cd.starts_with("attachment; filename=\"na_ve _quoted_; name=x _41.txt\"; "), "{cd}");
        assert!(cd.ends_with("filename*=UTF-8''na%C3%AFve%20%22quoted%22%3B%20name%3Dx%20%2541.txt"), "{cd}");
        assert!(axum::http::HeaderValue::from_str(&cd).is_ok());
    }
}
