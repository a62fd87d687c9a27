//! Record framing: how one log entry is laid out in a segment file.
//!
//! ```text
//! 0      4      8             16            24
//! | len  | crc  | log index   | term        | payload (len bytes) |
//! ```
//! All integers little-endian. `crc` is CRC32C over bytes 0..4 (len), 8..24 (index, term)
//! and the payload, so a corrupt length is caught as surely as a corrupt body.
//! `docs/commitlog-format.md` is the normative description.
//!
//! Must never: accept a record whose checksum does not match, or allocate from an
//! unchecked length (lengths above [`MAX_PAYLOAD`] are rejected before any allocation).

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 24;

/// Largest payload a record may carry (64 MiB): bounds allocations driven by a length field
/// read from disk, and keeps positions within a segment in `u32`.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Appends one framed record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, index: u64, term: u64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let start = buf.len();
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&term.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = checksum(&buf[start..start + HEADER_LEN], payload);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[0..4]);
    let crc = crc32c::crc32c_append(crc, &header[8..HEADER_LEN]);
    crc32c::crc32c_append(crc, payload)
}

/// The fixed part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: u32,
    pub(crate) crc: u32,
    pub(crate) index: u64,
    pub(crate) term: u64,
}

impl Header {
    pub(crate) fn parse(b: &[u8]) -> Header {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Header {
            len: u32_at(0),
            crc: u32_at(4),
            index: u64_at(8),
            term: u64_at(16),
        }
    }

    /// Header plus payload.
    pub(crate) fn total_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }
}

/// Why bytes at a position are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// Fewer bytes than the header or the payload needs: a torn or unfinished write.
    Short,
    /// The length field is impossible.
    BadLength(u32),
    /// The checksum does not match.
    BadCrc { stored: u32, computed: u32 },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Short => write!(f, "record is cut short"),
            Invalid::BadLength(n) => write!(f, "impossible record length {n}"),
            Invalid::BadCrc { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
        }
    }
}

/// Checks the record at the start of `buf` and returns its header.
pub(crate) fn check(buf: &[u8]) -> Result<Header, Invalid> {
    if buf.len() < HEADER_LEN {
        return Err(Invalid::Short);
    }
    let h = Header::parse(buf);
    if h.len as usize > MAX_PAYLOAD {
        return Err(Invalid::BadLength(h.len));
    }
    if buf.len() < h.total_len() {
        return Err(Invalid::Short);
    }
    let computed = checksum(&buf[..HEADER_LEN], &buf[HEADER_LEN..h.total_len()]);
    if computed != h.crc {
        return Err(Invalid::BadCrc {
            stored: h.crc,
            computed,
        });
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bit_flip_is_caught() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 3, b"hello");
        let h = check(&buf).unwrap();
        assert_eq!((h.index, h.term, h.len), (7, 3, 5));
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(check(&bad).is_err(), "flip at {byte}:{bit} went unnoticed");
            }
        }
    }

    #[test]
    fn short_and_oversized_records_are_rejected() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 1, b"abc");
        assert_eq!(check(&buf[..buf.len() - 1]), Err(Invalid::Short));
        assert_eq!(check(&buf[..10]), Err(Invalid::Short));
        let mut huge = buf.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(check(&huge), Err(Invalid::BadLength(u32::MAX)));
    }
}
