//! IO: base backups of a PITR policy (`source.pitr`). The backup is
//! `pg_basebackup -D - -Ft -X none --checkpoint=fast` streamed into the
//! artifact writer: a standard `base.tar` without WAL (`-X none`: the WAL the
//! backup needs is in the policy's WAL archive, streamed by `pg_receivewal`
//! on the policy's slot, so it is neither stored twice nor lost when the
//! server recycles it). While the tar passes through, `backup_label` and
//! `backup_manifest` are read from it: the start and stop WAL positions go
//! into the manifest's `tools` (`pitr.*` keys, `BaseBackup`). A restore
//! extracts the tar into a data directory (mode 0700).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::postgres;
use super::process;
use super::{ExecContext, ExecError, Produced, until_cancelled};
use crate::policy::SecretRef;

/// Artifact file name of a base backup.
pub const ARTIFACT: &str = "base.tar.zst";
/// Files captured from the tar stream (both are small).
const CAPTURED: [&str; 2] = ["backup_label", "backup_manifest"];
const CAPTURE_LIMIT: u64 = 64 << 20;

/// Where a base backup starts and ends in the WAL, as recorded in its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackup {
    pub timeline: u32,
    pub start_lsn: u64,
    pub stop_lsn: u64,
    /// The segment holding the start position: the first WAL a restore needs.
    pub start_wal: String,
    /// The backup is consistent (restorable to a time) from this time on: the
    /// moment `pg_basebackup` had finished, at or after its stop position.
    pub stop_time: DateTime<Utc>,
}

impl BaseBackup {
    /// Read back from a manifest's `tools`; `None` for other backups.
    pub fn from_tools(tools: &BTreeMap<String, String>) -> Option<BaseBackup> {
        let get = |k: &str| tools.get(&format!("pitr.{k}"));
        Some(BaseBackup {
            timeline: get("timeline")?.parse().ok()?,
            start_lsn: parse_lsn(get("startLsn")?)?,
            stop_lsn: parse_lsn(get("stopLsn")?)?,
            start_wal: get("startWal")?.clone(),
            stop_time: DateTime::parse_from_rfc3339(get("stopTime")?)
                .ok()?
                .with_timezone(&Utc),
        })
    }

    fn into_tools(self, tools: &mut BTreeMap<String, String>) {
        let mut put = |k: &str, v: String| tools.insert(format!("pitr.{k}"), v);
        put("timeline", self.timeline.to_string());
        put("startLsn", format_lsn(self.start_lsn));
        put("stopLsn", format_lsn(self.stop_lsn));
        put("startWal", self.start_wal);
        put("stopTime", self.stop_time.to_rfc3339());
    }
}

/// `16/B374D848` → the 64-bit position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Takes a base backup of the server at `url` into `out`.
pub async fn backup<W: Write + Send + 'static>(
    url: &str,
    password_from: Option<&SecretRef>,
    bin_dir: Option<&Path>,
    ctx: &ExecContext,
    out: W,
) -> Result<(W, Produced), ExecError> {
    let server = postgres::Server::new(url, password_from)?;
    let mut conn = until_cancelled(&ctx.cancel, server.connect(&server.opts)).await?;
    let (version, server_major) = postgres::server_version(&server, &mut conn, &ctx.cancel).await?;
    super::sql::close(conn).await;
    let (program, client) =
        postgres::matching_client(&server, (&version, server_major), bin_dir, "pg_basebackup")
            .await?;
    let mut tool = postgres::tool(&server, &program);
    tool.cmd
        .args(["--pgdata=-", "--format=tar", "--wal-method=none"])
        .args(["--checkpoint=fast", "--label=safepoint"]);
    let stops = vec![ctx.cancel.clone()];
    let tap = TarTap::new(out);
    let tap = super::blocking(move || process::pump_stdout(tool, tap, &stops)).await?;
    let (out, files) = tap.into_parts();
    let base = parse_captured(&files, Utc::now()).map_err(|detail| ExecError::Tool {
        tool: program.clone(),
        target: server.target().to_string(),
        status: "finished".into(),
        stderr: format!("{detail}; is the server at least PostgreSQL 13 (backup manifests)?"),
        transient: false,
    })?;
    let mut produced = Produced::default();
    produced.tools.insert("pg_basebackup".into(), client);
    produced.tools.insert("postgres".into(), version);
    produced.tools.insert(
        "format".into(),
        "pg_basebackup tar (-Ft -X none), zstd; WAL in the policy's WAL archive".into(),
    );
    base.into_tools(&mut produced.tools);
    Ok((out, produced))
}

/// The WAL range from `backup_label` (start, timeline, first segment) and
/// `backup_manifest` (`WAL-Ranges`: the stop position).
fn parse_captured(
    files: &BTreeMap<String, Vec<u8>>,
    finished: DateTime<Utc>,
) -> Result<BaseBackup, String> {
    let label = files
        .get("backup_label")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or("the tar stream held no backup_label")?;
    let field = |name: &str| {
        label
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .ok_or(format!("backup_label has no `{name}` line"))
    };
    let start = field("START WAL LOCATION:")?;
    let (start_lsn, start_wal) = start
        .split_once(" (file ")
        .and_then(|(lsn, f)| Some((parse_lsn(lsn)?, f.trim_end_matches(')').to_string())))
        .ok_or(format!("cannot read START WAL LOCATION `{start}`"))?;
    let timeline = field("START TIMELINE:")?
        .parse()
        .map_err(|_| "bad START TIMELINE")?;
    let manifest: serde_json::Value = files
        .get("backup_manifest")
        .and_then(|b| serde_json::from_slice(b).ok())
        .ok_or("the tar stream held no readable backup_manifest")?;
    let stop_lsn = manifest["WAL-Ranges"]
        .as_array()
        .and_then(|r| r.last())
        .and_then(|r| r["End-LSN"].as_str())
        .and_then(parse_lsn)
        .ok_or("backup_manifest has no WAL-Ranges End-LSN")?;
    Ok(BaseBackup {
        timeline,
        start_lsn,
        stop_lsn,
        start_wal,
        stop_time: finished,
    })
}

/// Extracts a base backup into `target` (a new or empty directory, or any
/// with `force`) and makes it a valid data directory (mode 0700).
pub async fn restore(
    input: Box<dyn Read + Send>,
    target: PathBuf,
    force: bool,
) -> Result<Produced, ExecError> {
    let (head, input) = super::blocking(move || {
        let mut input = input;
        let mut head = [0u8; 5];
        let n = read_full(&mut input, &mut head)
            .map_err(|e| ExecError::RestoredInvalid(format!("reading the backup failed: {e}")))?;
        Ok((head[..n].to_vec(), input))
    })
    .await?;
    if head == b"PGDMP" {
        return Err(ExecError::Unsupported {
            kind: "postgres (pg_dump)".into(),
            target: target.display().to_string(),
            hint: "a pg_dump backup restores into a database URL (--to postgres://...); only base backups of a PITR policy restore into a directory",
        });
    }
    let input: Box<dyn Read + Send> = Box::new(io::Cursor::new(head).chain(input));
    let produced = super::directory::restore(input, target.clone(), force).await?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).map_err(
        |source| ExecError::Target {
            path: target,
            source,
        },
    )?;
    Ok(produced)
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Passes a tar stream through and keeps the bodies of the `CAPTURED` files.
struct TarTap<W> {
    inner: W,
    header: Vec<u8>,
    /// In an entry: (captured name, body bytes left, padding left).
    body: Option<(Option<String>, u64, u64)>,
    files: BTreeMap<String, Vec<u8>>,
}

impl<W: Write> TarTap<W> {
    fn new(inner: W) -> Self {
        TarTap {
            inner,
            header: Vec::with_capacity(512),
            body: None,
            files: BTreeMap::new(),
        }
    }

    fn into_parts(self) -> (W, BTreeMap<String, Vec<u8>>) {
        (self.inner, self.files)
    }

    fn scan(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            match &mut self.body {
                Some((name, left, pad)) => {
                    let take = (*left).min(buf.len() as u64) as usize;
                    if let Some(n) = name {
                        self.files
                            .entry(n.clone())
                            .or_default()
                            .extend_from_slice(&buf[..take]);
                    }
                    *left -= take as u64;
                    buf = &buf[take..];
                    let skip = (*pad).min(buf.len() as u64) as usize;
                    if *left == 0 {
                        *pad -= skip as u64;
                        buf = &buf[skip..];
                        if *pad == 0 {
                            self.body = None;
                        }
                    }
                }
                None => {
                    let take = (512 - self.header.len()).min(buf.len());
                    self.header.extend_from_slice(&buf[..take]);
                    buf = &buf[take..];
                    if self.header.len() == 512 {
                        self.body = entry(&self.header);
                        self.header.clear();
                    }
                }
            }
        }
    }
}

/// The entry a 512-byte tar header opens (`None`: an end-of-archive block).
fn entry(h: &[u8]) -> Option<(Option<String>, u64, u64)> {
    if h.iter().all(|&b| b == 0) {
        return None;
    }
    let text = |r: std::ops::Range<usize>| {
        let f = &h[r];
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).into_owned()
    };
    let size = if h[124] & 0x80 != 0 {
        h[125..136]
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    } else {
        u64::from_str_radix(text(124..136).trim(), 8).unwrap_or(0)
    };
    let name = text(0..100);
    let name = name.trim_start_matches("./");
    let regular = matches!(h[156], b'0' | 0);
    let captured =
        (regular && CAPTURED.contains(&name) && size <= CAPTURE_LIMIT).then(|| name.to_string());
    if size == 0 {
        return None;
    }
    Some((captured, size, (512 - size % 512) % 512))
}

impl<W: Write> Write for TarTap<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.scan(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn the_wal_range_is_read_from_the_passing_tar() {
        let label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2026-11-29 21:00:00 UTC\nLABEL: safepoint\nSTART TIMELINE: 1\n";
        let manifest = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
"WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]}"#;
        let big = vec![7u8; 70_000];
        let tar = tar_of(&[
            ("backup_label", label),
            ("base/1/1259", &big),
            ("backup_manifest", manifest),
        ]);
        let mut tap = TarTap::new(Vec::new());
        // Odd write sizes: headers and bodies split across writes.
        for chunk in tar.chunks(333) {
            tap.write_all(chunk).unwrap();
        }
        let (out, files) = tap.into_parts();
        assert_eq!(out, tar);
        assert_eq!(files.len(), 2);
        let now = Utc::now();
        let base = parse_captured(&files, now).unwrap();
        assert_eq!(base.start_lsn, 0x2000028);
        assert_eq!(base.stop_lsn, 0x2000100);
        assert_eq!(base.start_wal, "000000010000000000000002");
        let mut tools = BTreeMap::new();
        base.clone().into_tools(&mut tools);
        assert_eq!(
            BaseBackup::from_tools(&tools),
            Some(BaseBackup {
                stop_time: DateTime::parse_from_rfc3339(&now.to_rfc3339())
                    .unwrap()
                    .with_timezone(&Utc),
                ..base
            })
        );
    }

    #[test]
    fn lsns_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
    }
}
