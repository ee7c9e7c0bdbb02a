//! The snapshot file format.
//!
//! ```text
//! "SYNODSNP" | version u32 | 0 u32 | index slot u64 | payload length u64 | payload | crc32c u32
//! ```
//! Little-endian; the CRC32C trailer covers every byte before it. Write the encoded bytes with
//! [`crate::write_atomic`] so a crash leaves the old file or the new one, never a mix.

/// Magic bytes at the start of a snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"SYNODSNP";
const MAGIC: &[u8; 8] = SNAPSHOT_MAGIC;
/// Current snapshot file format version.
pub const SNAPSHOT_VERSION: u32 = 1;
const HEADER: usize = 32;
const TRAILER: usize = 4;

/// Why a snapshot file was refused.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum SnapshotFileError {
    /// The file is shorter than its header, or than the payload length it declares.
    #[error("snapshot file truncated: {have} bytes, need {need}")]
    Truncated {
        /// Bytes present.
        have: u64,
        /// Bytes the format (or the declared payload length) requires.
        need: u64,
    },
    /// The file does not start with the snapshot magic: not a snapshot file.
    #[error("not a snapshot file (bad magic {found:02x?})")]
    BadMagic {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// A snapshot of a format this build does not read.
    #[error("unsupported snapshot format version {0}")]
    UnsupportedVersion(u32),
    /// The file is longer than its header says.
    #[error("snapshot file has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// How many bytes too many.
        extra: u64,
    },
    /// The CRC32C trailer does not match the contents: the file is damaged.
    #[error("snapshot file checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    BadChecksum {
        /// The trailer.
        stored: u32,
        /// The CRC of the contents.
        computed: u32,
    },
}

/// Encode a snapshot of the state machine as of `index_slot`.
pub fn encode_snapshot_file(index_slot: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + TRAILER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&index_slot.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decode a snapshot file: its index slot and payload. Refuses truncated, foreign, damaged
/// and over-long files, each with its own error.
pub fn decode_snapshot_file(bytes: &[u8]) -> Result<(u64, &[u8]), SnapshotFileError> {
    let have = bytes.len() as u64;
    if bytes.len() >= MAGIC.len() && &bytes[..8] != MAGIC {
        return Err(SnapshotFileError::BadMagic {
            found: bytes[..8].to_vec(),
        });
    }
    if bytes.len() < HEADER + TRAILER {
        return Err(SnapshotFileError::Truncated {
            have,
            need: (HEADER + TRAILER) as u64,
        });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4"));
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotFileError::UnsupportedVersion(version));
    }
    let slot = u64::from_le_bytes(bytes[16..24].try_into().expect("8"));
    let len = u64::from_le_bytes(bytes[24..32].try_into().expect("8"));
    let need = (HEADER as u64 + TRAILER as u64).saturating_add(len);
    if have < need {
        return Err(SnapshotFileError::Truncated { have, need });
    }
    if have > need {
        return Err(SnapshotFileError::TrailingBytes { extra: have - need });
    }
    let body_end = bytes.len() - TRAILER;
    let stored = u32::from_le_bytes(bytes[body_end..].try_into().expect("4"));
    let computed = crc32c::crc32c(&bytes[..body_end]);
    if stored != computed {
        return Err(SnapshotFileError::BadChecksum { stored, computed });
    }
    Ok((slot, &bytes[HEADER..body_end]))
}

/// A short hex checksum (CRC32C) of `bytes`, for logs and for comparing snapshots across replicas.
pub fn checksum_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32c::crc32c(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for payload in [&b""[..], b"x", &[7u8; 10_000][..]] {
            let f = encode_snapshot_file(42, payload);
            assert_eq!(decode_snapshot_file(&f).unwrap(), (42, payload));
        }
    }

    #[test]
    fn truncated_is_refused() {
        let f = encode_snapshot_file(9, b"payload bytes");
        for cut in [0, 5, 10, 31, f.len() - 1] {
            let e = decode_snapshot_file(&f[..cut]).unwrap_err();
            assert!(
                matches!(e, SnapshotFileError::Truncated { .. }),
                "cut {cut}: {e}"
            );
            assert!(e.to_string().contains("truncated"));
        }
    }

    #[test]
    fn bad_magic_is_refused() {
        let mut f = encode_snapshot_file(9, b"payload");
        f[0] = b'X';
        let e = decode_snapshot_file(&f).unwrap_err();
        assert!(matches!(e, SnapshotFileError::BadMagic { .. }), "{e}");
        assert!(e.to_string().contains("not a snapshot file"));
    }

    #[test]
    fn bad_checksum_is_refused() {
        let f = encode_snapshot_file(9, b"payload");
        for i in [20, 33, f.len() - 1] {
            let mut g = f.clone();
            g[i] ^= 0x40;
            let e = decode_snapshot_file(&g).unwrap_err();
            assert!(
                matches!(e, SnapshotFileError::BadChecksum { .. }),
                "byte {i}: {e}"
            );
            assert!(e.to_string().contains("checksum mismatch"));
        }
    }

    #[test]
    fn other_refusals() {
        let mut f = encode_snapshot_file(1, b"p");
        f.push(0);
        assert_eq!(
            decode_snapshot_file(&f).unwrap_err(),
            SnapshotFileError::TrailingBytes { extra: 1 }
        );
        let mut g = encode_snapshot_file(1, b"p");
        g[8] = 9;
        assert_eq!(
            decode_snapshot_file(&g).unwrap_err(),
            SnapshotFileError::UnsupportedVersion(9)
        );
        assert_eq!(checksum_hex(b"123456789"), "e3069283"); // the CRC32C check value
    }
}
