//! One streaming pass over a file's bytes: sha256, size, line count and a sniffed content
//! type, holding only a bounded prefix in memory whatever the file's size.

use sha2::{Digest, Sha256};

/// Enough for every magic number we know, and for the JSON check of small files.
const KEEP_BYTES: usize = 64 * 1024;

/// The findings of [`Analysis`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub sha256: String,
    pub size: u64,
    /// Newline-terminated lines, plus a last line without a newline (a text editor's count).
    pub lines: u64,
    pub content_type: &'static str,
}

pub struct Analysis {
    hasher: Sha256,
    size: u64,
    newlines: u64,
    last: Option<u8>,
    /// The first [`KEEP_BYTES`] bytes.
    head: Vec<u8>,
    utf8: Utf8Check,
    /// A byte no text file contains (NUL, most C0 controls, DEL).
    binary: bool,
    first_significant: Option<u8>,
    last_significant: Option<u8>,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            hasher: Sha256::new(),
            size: 0,
            newlines: 0,
            last: None,
            head: Vec::new(),
            utf8: Utf8Check::default(),
            binary: false,
            first_significant: None,
            last_significant: None,
        }
    }
}

impl Analysis {
    pub fn update(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.hasher.update(data);
        self.newlines += data.iter().filter(|&&b| b == b'\n').count() as u64;
        if self.head.len() < KEEP_BYTES {
            let take = (KEEP_BYTES - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
        self.utf8.feed(data);
        if !self.binary {
            self.binary =
                data.iter().any(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b)) || b == 0x7f);
        }
        let offset = self.size;
        if self.first_significant.is_none() {
            self.first_significant =
                data.iter().enumerate().find(|(i, &b)| !is_insignificant(offset + *i as u64, b)).map(|(_, &b)| b);
        }
        if let Some(&b) = data.iter().rev().find(|&&b| !b.is_ascii_whitespace()) {
            self.last_significant = Some(b);
        }
        self.size += data.len() as u64;
        self.last = data.last().copied();
    }

    pub fn finish(self) -> Report {
        let lines = self.newlines + u64::from(self.last.is_some_and(|b| b != b'\n'));
        let content_type = self.content_type();
        Report { sha256: hex::encode(self.hasher.finalize()), size: self.size, lines, content_type }
    }

    fn content_type(&self) -> &'static str {
        if let Some(t) = sniff_magic(&self.head) {
            return t;
        }
        if self.size == 0 || self.binary || !self.utf8.finish() {
            return "application/octet-stream";
        }
        let json_shaped = matches!(
            (self.first_significant, self.last_significant),
            (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']'))
        );
        // Small files are parsed for certain; large ones are judged by their brackets alone.
        let json = json_shaped
            && (self.size > KEEP_BYTES as u64
                || serde_json::from_slice::<serde::de::IgnoredAny>(strip_bom(&self.head)).is_ok());
        if json {
            "application/json"
        } else {
            "text/plain"
        }
    }
}

/// Whitespace, or a UTF-8 byte-order mark at the very start.
fn is_insignificant(pos: u64, b: u8) -> bool {
    b.is_ascii_whitespace() || (pos < 3 && [0xEF, 0xBB, 0xBF][pos as usize] == b)
}

fn strip_bom(data: &[u8]) -> &[u8] {
    data.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(data)
}

/// The formats `file.digest` recognises by their first bytes.
pub fn sniff_magic(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xFF\xD8\xFF", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"PK\x05\x06", "application/zip"),
        (b"PK\x07\x08", "application/zip"),
        (b"\x1F\x8B", "application/gzip"),
    ];
    MAGIC.iter().find(|(magic, _)| head.starts_with(magic)).map(|(_, t)| *t)
}

/// UTF-8 validation across chunk boundaries: a sequence split between two chunks is carried.
#[derive(Default)]
struct Utf8Check {
    invalid: bool,
    carry: Vec<u8>,
}

impl Utf8Check {
    fn feed(&mut self, mut data: &[u8]) {
        if self.invalid {
            return;
        }
        if let Some(&lead) = self.carry.first() {
            let want = sequence_len(lead);
            let take = (want - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < want {
                return;
            }
            if std::str::from_utf8(&self.carry).is_err() {
                self.invalid = true;
                return;
            }
            self.carry.clear();
        }
        if let Err(e) = std::str::from_utf8(data) {
            match e.error_len() {
                Some(_) => self.invalid = true,
                None => self.carry = data[e.valid_up_to()..].to_vec(),
            }
        }
    }

    /// True when everything fed was UTF-8 and no sequence was left open.
    fn finish(&self) -> bool {
        !self.invalid && self.carry.is_empty()
    }
}

/// Length of the sequence a lead byte starts (only called for leads `from_utf8` accepted
/// as the start of an incomplete sequence, i.e. 2..=4).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyse(chunks: &[&[u8]]) -> Report {
        let mut a = Analysis::default();
        for c in chunks {
            a.update(c);
        }
        a.finish()
    }

    #[test]
    fn magic_numbers_win_over_text_heuristics() {
        assert_eq!(analyse(&[b"\x89PNG\r\n\x1a\n\0\0"]).content_type, "image/png");
        assert_eq!(analyse(&[b"\xFF\xD8\xFF\xE0"]).content_type, "image/jpeg");
        assert_eq!(analyse(&[b"GIF89a..."]).content_type, "image/gif");
        assert_eq!(analyse(&[b"%PDF-1.7\n"]).content_type, "application/pdf");
        assert_eq!(analyse(&[b"PK\x03\x04rest"]).content_type, "application/zip");
        assert_eq!(analyse(&[b"\x1F\x8B\x08\0"]).content_type, "application/gzip");
    }

    #[test]
    fn text_json_and_binary_are_told_apart() {
        assert_eq!(analyse(&[b"hello\nworld\n"]).content_type, "text/plain");
        assert_eq!(analyse(&[b"\xEF\xBB\xBF  {\"a\": [1, 2]}\n"]).content_type, "application/json");
        assert_eq!(analyse(&[b"[1, 2"]).content_type, "text/plain");
        assert_eq!(analyse(&[b"{not json}"]).content_type, "text/plain", "small files are parsed");
        assert_eq!(analyse(&[b"text\0with nul"]).content_type, "application/octet-stream");
        assert_eq!(analyse(&[b"\xC3\x28"]).content_type, "application/octet-stream");
        assert_eq!(analyse(&[]).content_type, "application/octet-stream");
    }

    #[test]
    fn utf8_split_across_chunks_is_still_text() {
        let text = "żółw 🐢\n".as_bytes();
        for cut in 0..text.len() {
            let r = analyse(&[&text[..cut], &text[cut..]]);
            assert_eq!(r.content_type, "text/plain", "cut at {cut}");
        }
        assert_eq!(analyse(&[b"abc\xF0\x9F"]).content_type, "application/octet-stream", "truncated sequence");
    }

    #[test]
    fn lines_count_a_last_line_without_newline() {
        assert_eq!(analyse(&[b"a\nb\n"]).lines, 2);
        assert_eq!(analyse(&[b"a\n", b"b"]).lines, 2);
        assert_eq!(analyse(&[b""]).lines, 0);
        let r = analyse(&[b"abc"]);
        assert_eq!((r.lines, r.size), (1, 3));
        assert_eq!(r.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
