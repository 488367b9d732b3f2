//! IO: the WAL archive of a PITR policy, next to its backups in the same
//! storage: `_wal/<policy>/<wal file>~<blake3 of the stored bytes>.zst[.age]`.
//! Each object is one WAL segment (or timeline history file) through the same
//! zstd → age → BLAKE3 pipeline as artifacts, written whole or not at all
//! (`Storage::put_wal`) and read back before it counts. The segment being
//! written is stored as `<segment>.partial~…` and replaced as it grows; the
//! partial copies of a segment are removed once the complete one is stored.
//! The checksum in the name lets a fetch verify the bytes before decrypting.

use std::io::{Read, Write};

use super::crypt::{self, Identities};
use super::pipeline::{self, ArtifactWriter, Cancel};
use super::{Storage, StorageError};

/// Top-level directory (prefix) of the WAL archives in a storage.
pub const WAL_DIR: &str = "_wal";
/// Suffix pg_receivewal gives the segment it is writing.
pub const PARTIAL: &str = ".partial";

/// One stored WAL object, parsed from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    /// The storage object name.
    pub object: String,
    /// The WAL file it holds: `000000010000000000000003`,
    /// `000000010000000000000003.partial` or `00000002.history`.
    pub wal: String,
    /// `blake3:<hex>` of the stored bytes.
    pub checksum: String,
    pub encrypted: bool,
}

impl WalObject {
    /// `None` for names that are not WAL objects.
    pub fn parse(object: &str) -> Option<WalObject> {
        let (wal, rest) = object.split_once('~')?;
        let (hex, encrypted) = match rest.strip_suffix(crypt::AGE_SUFFIX) {
            Some(r) => (r.strip_suffix(".zst")?, true),
            None => (rest.strip_suffix(".zst")?, false),
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || !is_wal_file(wal) {
            return None;
        }
        Some(WalObject {
            object: object.to_string(),
            wal: wal.to_string(),
            checksum: format!("blake3:{hex}"),
            encrypted,
        })
    }

    /// The segment it holds (without `.partial`).
    pub fn segment(&self) -> &str {
        self.wal.strip_suffix(PARTIAL).unwrap_or(&self.wal)
    }

    pub fn is_partial(&self) -> bool {
        self.wal.ends_with(PARTIAL)
    }
}

/// A segment (24 hex digits, optionally `.partial`) or a `<tli>.history` file.
pub fn is_wal_file(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let segment = name.strip_suffix(PARTIAL).unwrap_or(name);
    hex(segment, 24) || name.strip_suffix(".history").is_some_and(|t| hex(t, 8))
}

/// PostgreSQL's default `wal_segment_size` (bytes), used when a base
/// backup or restore point did not record the server's.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// The timeline and the segment number (`lsn / segment_size`) a segment
/// name stands for on a server with `segment_size`; `None` for other names.
pub fn segment_number(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(name.get(r)?, 16).ok();
    if name.len() != 24 || segment_size == 0 {
        return None;
    }
    let per_log = 0x1_0000_0000 / segment_size;
    let (tli, log, seg) = (hex(0..8)?, hex(8..16)?, hex(16..24)?);
    (seg < per_log).then_some((u32::try_from(tli).ok()?, log * per_log + seg))
}

/// The name of segment `segno` of timeline `tli` (inverse of `segment_number`).
pub fn segment_name(tli: u32, segno: u64, segment_size: u64) -> String {
    let per_log = 0x1_0000_0000 / segment_size.max(1);
    format!("{tli:08X}{:08X}{:08X}", segno / per_log, segno % per_log)
}

/// The numbers of the segments archived complete (any timeline: a new
/// timeline continues the numbering of the one it forked from).
pub fn complete_segments(
    objects: &[WalObject],
    segment_size: u64,
) -> std::collections::BTreeSet<u64> {
    objects
        .iter()
        .filter(|o| !o.is_partial())
        .filter_map(|o| segment_number(&o.wal, segment_size))
        .map(|(_, n)| n)
        .collect()
}

/// The first segment of `from..=to` that is not archived complete.
pub fn first_missing(
    complete: &std::collections::BTreeSet<u64>,
    from: u64,
    to: u64,
) -> Option<u64> {
    (from..=to).find(|n| !complete.contains(n))
}

/// Every WAL object of `policy`, in name order (segments sort by position).
pub fn list(st: &dyn Storage, policy: &str) -> Result<Vec<WalObject>, StorageError> {
    Ok(st
        .list_wal(policy)?
        .iter()
        .filter_map(|n| WalObject::parse(n))
        .collect())
}

fn io_err(
    st: &dyn Storage,
    op: &'static str,
    path: String,
    source: std::io::Error,
) -> StorageError {
    StorageError::Io {
        storage: st.name().to_string(),
        op,
        path: path.into(),
        source,
    }
}

/// Compresses (and encrypts) `raw`, stores it as the object for `wal`, reads
/// it back and compares the checksum. Returns the stored object.
pub fn upload(
    st: &dyn Storage,
    policy: &str,
    wal: &str,
    raw: &[u8],
    recipients: &[String],
) -> Result<WalObject, StorageError> {
    let keys = crypt::recipients(recipients).map_err(|e| StorageError::Config {
        storage: st.name().to_string(),
        message: e.to_string(),
        hint: "fix the storage's ageRecipients".into(),
    })?;
    let seal = |e| io_err(st, "compress", format!("{WAL_DIR}/{policy}/{wal}"), e);
    let mut writer = ArtifactWriter::sealed(Vec::new(), Cancel::new(), &keys).map_err(seal)?;
    writer.write_all(raw).map_err(seal)?;
    let (body, written) = writer.finish().map_err(seal)?;
    let hex = written.checksum.trim_start_matches("blake3:");
    let object = format!(
        "{wal}~{hex}.zst{}",
        if keys.is_empty() {
            ""
        } else {
            crypt::AGE_SUFFIX
        }
    );
    st.put_wal(policy, &object, &body)?;
    let back = st.get_wal(policy, &object)?;
    let (_, checksum) =
        pipeline::checksum_of(&back[..]).map_err(|e| io_err(st, "read back", object.clone(), e))?;
    if checksum != written.checksum {
        return Err(io_err(
            st,
            "read back",
            object,
            std::io::Error::other(format!(
                "stored bytes have {checksum}, expected {}",
                written.checksum
            )),
        ));
    }
    Ok(WalObject {
        wal: wal.to_string(),
        checksum: written.checksum,
        encrypted: !keys.is_empty(),
        object,
    })
}

/// Why a fetch found nothing or could not use what it found.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("WAL object {object} is corrupt: {detail}; restore to an earlier time")]
    Corrupt { object: String, detail: String },
    #[error(transparent)]
    Crypt(#[from] crypt::CryptError),
}

/// The plain bytes of `wal` (a segment, or a history file) as archived for
/// `policy`: the complete segment, else the newest partial copy of it
/// (recovery then ends where the archived data ends). `Ok(None)`: not archived.
pub fn fetch(
    st: &dyn Storage,
    policy: &str,
    wal: &str,
    identities: Option<&Identities>,
) -> Result<Option<Vec<u8>>, FetchError> {
    let objects = list(st, policy)?;
    let complete = objects.iter().rfind(|o| o.wal == wal);
    let partial = || {
        objects
            .iter()
            .rfind(|o| o.is_partial() && o.segment() == wal)
    };
    let Some(found) = complete.or_else(partial) else {
        return Ok(None);
    };
    let body = st.get_wal(policy, &found.object)?;
    let corrupt = |detail: String| FetchError::Corrupt {
        object: found.object.clone(),
        detail,
    };
    let (_, checksum) = pipeline::checksum_of(&body[..]).map_err(|e| corrupt(e.to_string()))?;
    if checksum != found.checksum {
        return Err(corrupt(format!(
            "checksum is {checksum}, its name says {}",
            found.checksum
        )));
    }
    let encryption = found.encrypted.then_some(crypt::AGE);
    let plain = crypt::open(
        std::io::Cursor::new(body),
        &found.object,
        encryption,
        identities,
    )?;
    let mut out = Vec::new();
    pipeline::decompress(plain)
        .and_then(|mut r| r.read_to_end(&mut out))
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStorage;

    #[test]
    fn objects_round_trip_and_partials_give_way_to_the_complete_segment() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalStorage::new("t".into(), dir.path().to_path_buf());
        let seg = "000000010000000000000003";
        let partial = upload(&st, "p", &format!("{seg}.partial"), b"half", &[]).unwrap();
        assert!(partial.is_partial());
        assert_eq!(
            fetch(&st, "p", seg, None).unwrap().as_deref(),
            Some(&b"half"[..])
        );
        upload(&st, "p", seg, b"whole", &[]).unwrap();
        assert_eq!(
            fetch(&st, "p", seg, None).unwrap().as_deref(),
            Some(&b"whole"[..])
        );
        assert_eq!(
            fetch(&st, "p", "000000010000000000000004", None).unwrap(),
            None
        );
        // The WAL archive is not a policy with leftover backups.
        assert!(st.list().unwrap().leftovers.is_empty());
        assert_eq!(list(&st, "p").unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_object_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalStorage::new("t".into(), dir.path().to_path_buf());
        let seg = "000000010000000000000003";
        let obj = upload(&st, "p", seg, b"whole", &[]).unwrap();
        let path = dir.path().join(WAL_DIR).join("p").join(&obj.object);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            fetch(&st, "p", seg, None),
            Err(FetchError::Corrupt { .. })
        ));
    }

    #[test]
    fn segment_names_and_numbers_round_trip_for_any_segment_size() {
        let mib16 = DEFAULT_SEGMENT_SIZE;
        assert_eq!(
            segment_number("000000010000000200000003", mib16),
            Some((1, 2 * 256 + 3))
        );
        assert_eq!(
            segment_name(1, 2 * 256 + 3, mib16),
            "000000010000000200000003"
        );
        // 1 GiB segments: four per log file.
        assert_eq!(
            segment_number("000000020000000100000003", 1 << 30),
            Some((2, 7))
        );
        assert_eq!(segment_number("000000020000000100000004", 1 << 30), None);
        assert_eq!(segment_number("00000002.history", mib16), None);
        let complete: std::collections::BTreeSet<u64> = [3, 4, 6].into();
        assert_eq!(first_missing(&complete, 3, 4), None);
        assert_eq!(first_missing(&complete, 3, 6), Some(5));
    }

    #[test]
    fn names_are_parsed_strictly() {
        let hex = "a".repeat(64);
        assert!(
            WalObject::parse(&format!("00000002.history~{hex}.zst.age"))
                .is_some_and(|o| o.encrypted)
        );
        assert!(WalObject::parse(&format!("backup_label~{hex}.zst")).is_none());
        assert!(WalObject::parse("000000010000000000000003~short.zst").is_none());
    }
}
