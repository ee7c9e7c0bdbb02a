//! The on-disk format of one WAL segment, and the scan that recovers it.
//!
//! ```text
//! segment  = header (32 bytes) frame* zeros
//! header   = "SYNODWAL" | version u32 | 0 u32 | segment id u64 | crc32c(bytes 0..24) u32 | 0 u32
//! frame    = body_len u32 (> 0) | count u32 | watermark u64 | crc u32 | 0 u32 | body | zero pad to 8
//! body     = count × (key u64 | len u32 | bytes[len])
//! crc      = crc32c over (segment id u64, frame offset u64, frame bytes 0..16, 20..24, body)
//! ```
//! All integers are little-endian; every frame starts 8-byte aligned, so its length field (the
//! first 8 bytes) can never be torn by a sector-granular write. A zero length is the end of the
//! data (segments are preallocated with zeros). The CRC is seeded with the segment id and the
//! frame's offset, so bytes left over from another segment (or another position) never validate.
//! `watermark` is the segment offset already made durable (synced) when the frame was written:
//! a valid frame whose watermark lies past a bad frame proves the bad frame had been synced,
//! hence acknowledged — the difference between corruption and a torn, unacknowledged tail.

use std::fmt;

/// Magic bytes at the start of each segment.
pub const MAGIC: &[u8; 8] = b"SYNODWAL";
/// Current format version.
pub const VERSION: u32 = 1;
/// Size of the segment header.
pub const HEADER_LEN: u64 = 32;
/// Size of a frame header.
pub const FRAME_HEADER_LEN: u64 = 24;
/// Per-record overhead inside a frame body.
pub const RECORD_OVERHEAD: u64 = 12;

/// The file name of segment `id`: 16 hex digits and `.wal`.
pub fn segment_name(id: u64) -> String {
    format!("{id:016x}.wal")
}

/// The id encoded in a segment file name, if `name` is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Round up to a multiple of 8.
pub fn pad8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Encode the header of segment `id`.
pub fn encode_header(id: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than a header, wrong magic or wrong CRC: never fully written (or damaged).
    Invalid(String),
    /// A well-formed header that does not belong here (other version or id).
    Mismatch(String),
}

/// Check the header of a segment file named with `id`.
pub fn check_header(bytes: &[u8], id: u64) -> Result<(), HeaderError> {
    if (bytes.len() as u64) < HEADER_LEN {
        return Err(HeaderError::Invalid(format!(
            "file of {} bytes has no complete header",
            bytes.len()
        )));
    }
    if &bytes[0..8] != MAGIC {
        return Err(HeaderError::Invalid("bad magic".into()));
    }
    let crc = crc32c::crc32c(&bytes[0..24]);
    if crc != u32_at(bytes, 24) {
        return Err(HeaderError::Invalid("header checksum mismatch".into()));
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(HeaderError::Mismatch(format!(
            "unsupported format version {version}"
        )));
    }
    let found = u64_at(bytes, 16);
    if found != id {
        return Err(HeaderError::Mismatch(format!(
            "header names segment {found}, file name says {id}"
        )));
    }
    Ok(())
}

fn frame_crc(segment: u64, offset: u64, header: &[u8], body: &[u8]) -> u32 {
    let mut c = crc32c::crc32c(&segment.to_le_bytes());
    c = crc32c::crc32c_append(c, &offset.to_le_bytes());
    c = crc32c::crc32c_append(c, &header[0..16]);
    c = crc32c::crc32c_append(c, &header[20..24]);
    crc32c::crc32c_append(c, body)
}

/// The encoded size of a frame holding `records` (each given by its data length).
pub fn frame_len<'a>(lens: impl Iterator<Item = &'a usize>) -> u64 {
    FRAME_HEADER_LEN + pad8(lens.map(|l| RECORD_OVERHEAD + *l as u64).sum())
}

/// Encode one frame (one batch) to be written at `offset` of segment `segment`.
pub fn encode_frame(
    segment: u64,
    offset: u64,
    watermark: u64,
    records: &[(u64, &[u8])],
) -> Vec<u8> {
    assert!(!records.is_empty(), "a frame holds at least one record");
    let body_len: u64 = records
        .iter()
        .map(|(_, d)| RECORD_OVERHEAD + d.len() as u64)
        .sum();
    assert!(body_len <= u32::MAX as u64, "batch too large for one frame");
    let total = FRAME_HEADER_LEN + pad8(body_len);
    let mut buf = Vec::with_capacity(total as usize);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&(records.len() as u32).to_le_bytes());
    buf.extend_from_slice(&watermark.to_le_bytes());
    buf.extend_from_slice(&[0u8; 8]); // crc + reserved, filled below
    for (key, data) in records {
        buf.extend_from_slice(&key.to_le_bytes());
        buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
        buf.extend_from_slice(data);
    }
    let crc = frame_crc(segment, offset, &buf[..24], &buf[24..]);
    buf[16..20].copy_from_slice(&crc.to_le_bytes());
    buf.resize(total as usize, 0);
    buf
}

/// A frame that decoded and validated.
#[derive(Debug)]
pub struct Frame {
    /// Encoded size, padding included.
    pub len: u64,
    /// The durable offset when it was written.
    pub watermark: u64,
    /// The records, with their keys.
    pub records: Vec<(u64, Vec<u8>)>,
}

/// What is at an offset of a segment.
#[derive(Debug)]
pub enum Probe {
    /// A zero length field: the end of the data.
    End,
    /// A valid frame.
    Frame(Frame),
    /// Something that is not a valid frame, and why.
    Bad(String),
}

/// Decode the frame at `offset` of `bytes` (the whole segment `segment`).
pub fn probe(bytes: &[u8], segment: u64, offset: u64) -> Probe {
    let len = bytes.len() as u64;
    if offset + 8 > len {
        return Probe::End;
    }
    let o = offset as usize;
    let body_len = u32_at(bytes, o) as u64;
    if body_len == 0 {
        return Probe::End;
    }
    if offset + FRAME_HEADER_LEN + pad8(body_len) > len {
        return Probe::Bad(format!(
            "frame length {body_len} runs past the end of the segment"
        ));
    }
    let header = &bytes[o..o + FRAME_HEADER_LEN as usize];
    let body = &bytes[o + FRAME_HEADER_LEN as usize..o + (FRAME_HEADER_LEN + body_len) as usize];
    if frame_crc(segment, offset, header, body) != u32_at(header, 16) {
        return Probe::Bad("frame checksum mismatch".into());
    }
    let count = u32_at(header, 4) as usize;
    let mut records = Vec::with_capacity(count);
    let mut at = 0usize;
    for _ in 0..count {
        if at + RECORD_OVERHEAD as usize > body.len() {
            return Probe::Bad("record header past the end of the frame".into());
        }
        let key = u64_at(body, at);
        let n = u32_at(body, at + 8) as usize;
        at += RECORD_OVERHEAD as usize;
        if at + n > body.len() {
            return Probe::Bad("record past the end of the frame".into());
        }
        records.push((key, body[at..at + n].to_vec()));
        at += n;
    }
    if at != body.len() {
        return Probe::Bad("frame body longer than its records".into());
    }
    Probe::Frame(Frame {
        len: FRAME_HEADER_LEN + pad8(body_len),
        watermark: u64_at(header, 8),
        records,
    })
}

/// The recovered contents of one segment.
#[derive(Debug, Default)]
pub struct Scan {
    /// Records of every valid frame, in order, with their keys.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Offset just past the last valid frame (where the next frame goes).
    pub end: u64,
    /// Offset just past the last non-zero byte at or after `end` (== `end` if the rest is zero).
    pub dirty_end: u64,
    /// Number of valid frames.
    pub frames: usize,
}

/// Why a scan stopped at `offset` in a way that is corruption.
#[derive(Debug)]
pub struct ScanError {
    /// Where the damage starts.
    pub offset: u64,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {}: {}", self.offset, self.why)
    }
}

/// The first valid frame at an 8-aligned offset in `from..`, if any.
pub fn find_valid_after(bytes: &[u8], segment: u64, from: u64) -> Option<(u64, Frame)> {
    let mut off = pad8(from);
    while off + FRAME_HEADER_LEN <= bytes.len() as u64 {
        if let Probe::Frame(f) = probe(bytes, segment, off) {
            return Some((off, f));
        }
        off += 8;
    }
    None
}

/// Scan the frames of segment `segment` (header already checked), starting at `start`.
///
/// `last` selects the recovery rule for what follows the last valid frame:
/// - older segment (`last == false`): everything after must be zeros, else corruption;
/// - last segment: garbage after it is a torn tail (reported via `dirty_end`), unless some
///   later valid frame has a watermark past the stopping point (proof that what is damaged had
///   been synced): then it is corruption.
pub fn scan(bytes: &[u8], segment: u64, start: u64, last: bool) -> Result<Scan, ScanError> {
    let mut out = Scan {
        end: start,
        ..Scan::default()
    };
    let stop_why = loop {
        match probe(bytes, segment, out.end) {
            Probe::Frame(f) => {
                out.end += f.len;
                out.frames += 1;
                out.records.extend(f.records);
            }
            Probe::End => break None,
            Probe::Bad(why) => break Some(why),
        }
    };
    let tail = &bytes[(out.end as usize).min(bytes.len())..];
    out.dirty_end = out.end
        + tail
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |p| p as u64 + 1);
    if out.dirty_end == out.end {
        return Ok(out);
    }
    let why = stop_why.unwrap_or_else(|| "zero length followed by non-zero bytes".into());
    if !last {
        return Err(ScanError {
            offset: out.end,
            why: format!("{why} in a closed segment"),
        });
    }
    let mut from = out.end + 8;
    while let Some((off, f)) = find_valid_after(bytes, segment, from) {
        if f.watermark > out.end {
            return Err(ScanError {
                offset: out.end,
                why: format!(
                    "{why}, yet a later batch at offset {off} was written after it was synced"
                ),
            });
        }
        from = off + 8;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(1), "0000000000000001.wal");
        assert_eq!(parse_segment_name(&segment_name(0xabc)), Some(0xabc));
        assert_eq!(parse_segment_name("1.wal"), None);
        assert_eq!(parse_segment_name("000000000000000g.wal"), None);
        assert_eq!(parse_segment_name("0000000000000001.tmp"), None);
    }

    #[test]
    fn frame_round_trip_and_binding() {
        let recs: Vec<(u64, &[u8])> = vec![(3, b"abc"), (4, b""), (5, b"hello world")];
        let f = encode_frame(7, 32, 32, &recs);
        assert_eq!(f.len() % 8, 0);
        let mut seg = vec![0u8; 32];
        seg.extend_from_slice(&f);
        seg.extend_from_slice(&[0u8; 64]);
        match probe(&seg, 7, 32) {
            Probe::Frame(fr) => {
                assert_eq!(fr.records.len(), 3);
                assert_eq!(fr.records[2], (5, b"hello world".to_vec()));
            }
            other => panic!("{other:?}"),
        }
        // The same bytes under another segment id do not validate.
        assert!(matches!(probe(&seg, 8, 32), Probe::Bad(_)));
        // Zeros are the end, not data.
        assert!(matches!(probe(&seg, 7, 32 + f.len() as u64), Probe::End));
    }

    #[test]
    fn header_checks() {
        let h = encode_header(9);
        assert!(check_header(&h, 9).is_ok());
        assert!(matches!(
            check_header(&h, 10),
            Err(HeaderError::Mismatch(_))
        ));
        assert!(matches!(
            check_header(&h[..20], 9),
            Err(HeaderError::Invalid(_))
        ));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(matches!(
            check_header(&bad, 9),
            Err(HeaderError::Invalid(_))
        ));
    }
}
