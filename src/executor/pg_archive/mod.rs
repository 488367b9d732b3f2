//! Pure: the rows of every table in a `pg_dump -Fc -Z0` archive, counted
//! while the archive streams into `pg_restore`, so a restore needs no second
//! pass over the restored tables to say how many rows each one got.
//!
//! The custom format is a header, a table of contents (TOC) and then one
//! block per entry with data. A block is a type byte, the entry's dump id
//! and length-prefixed chunks ending with a zero length. With no
//! compression (`-Z0`, how every safepoint backup is made) a `TABLE DATA`
//! entry's chunks are `COPY ... FROM stdin` text rows, each ending in a
//! newline, then pg_dump's end marker `\.` and two empty lines. Newlines
//! inside values are escaped and a row is never `\.` (a backslash is
//! written `\\`), so the rows are the newline bytes before the marker.
//! Integers are a sign byte and `intSize` little-endian bytes;
//! strings an integer length (-1: NULL) and the bytes.
//!
//! Anything this reader does not know (another version, a compressed
//! archive, data as INSERT statements, a non-UTF-8 dump encoding, a stream
//! that ends inside a block) makes [`ArchiveRows::finish`] return why, and
//! the caller counts the restored tables instead: never a guessed number.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

/// Oldest and newest archive versions read here (PostgreSQL 9.0 to 17+).
const OLDEST: (u8, u8) = (1, 12);
const NEWEST: (u8, u8) = (1, 16);
/// `archCustom` in pg_dump's `ArchiveFormat`.
const FORMAT_CUSTOM: u8 = 1;
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

/// Counts COPY rows per table as archive bytes are fed in order.
#[derive(Debug)]
pub struct ArchiveRows {
    state: State,
    /// Bytes of a structure (header and TOC, or a block's integers) that
    /// has not been read whole yet.
    buf: Vec<u8>,
    /// The header and TOC are parsed again once `buf` reaches this size.
    next_try: usize,
    int_size: usize,
    /// Dump id of each `TABLE DATA` entry → index into `names`/`rows`.
    entries: HashMap<i64, usize>,
    names: Vec<String>,
    rows: Vec<u64>,
    /// Whether each entry's data block has been read.
    seen: Vec<bool>,
    /// The last bytes of the current block's data (for its end marker).
    tail: Vec<u8>,
}

/// How pg_dump ends a table's COPY data: a `\.` line and two empty lines,
/// after a row's newline or at the very start.
const END_MARKER: &[u8] = b"\\.\n\n\n";

#[derive(Debug, Clone, PartialEq)]
enum State {
    Head,
    /// Expecting a block header (type byte and dump id), or the end.
    Block,
    /// Expecting a chunk length; `entry` is the table whose rows these are.
    Chunk {
        entry: Option<usize>,
        blob: bool,
    },
    Payload {
        entry: Option<usize>,
        blob: bool,
        left: u64,
    },
    /// Expecting a large object's oid (0 ends the blobs block).
    BlobOid,
    Failed(String),
}

impl Default for ArchiveRows {
    fn default() -> Self {
        ArchiveRows {
            state: State::Head,
            buf: Vec::new(),
            next_try: 4096,
            int_size: 4,
            entries: HashMap::new(),
            names: Vec::new(),
            rows: Vec::new(),
            seen: Vec::new(),
            tail: Vec::with_capacity(END_MARKER.len() + 1),
        }
    }
}

impl ArchiveRows {
    pub fn new() -> ArchiveRows {
        ArchiveRows::default()
    }

    /// Reads the next bytes of the archive.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state.clone() {
                State::Failed(_) => return,
                State::Head => {
                    self.buf.extend_from_slice(data);
                    data = &[];
                    if self.buf.len() >= self.next_try {
                        self.try_head();
                    }
                }
                State::Payload { entry, blob, left } => {
                    let n = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    if let Some(e) = entry {
                        self.rows[e] += memchr::memchr_iter(b'\n', &data[..n]).count() as u64;
                        self.keep_tail(&data[..n]);
                    }
                    data = &data[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Chunk { entry, blob }
                    } else {
                        State::Payload { entry, blob, left }
                    };
                }
                State::Block | State::Chunk { .. } | State::BlobOid => {
                    let want = self.int_len() + usize::from(self.state == State::Block);
                    let take = (want - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.buf.len() == want {
                        self.step();
                        self.buf.clear();
                    }
                }
            }
        }
    }

    /// Rows per `schema.table` of every `TABLE DATA` entry, or why they
    /// cannot be told from this archive.
    pub fn finish(mut self) -> Result<BTreeMap<String, u64>, String> {
        if self.state == State::Head {
            self.try_head();
            if self.state == State::Head {
                return Err("the archive ended inside its table of contents".into());
            }
        }
        match self.state {
            State::Failed(why) => Err(why),
            State::Block if self.buf.is_empty() => {
                if let Some(i) = self.seen.iter().position(|s| !s) {
                    return Err(format!(
                        "the archive has no data block for {}",
                        self.names[i]
                    ));
                }
                Ok(self.names.into_iter().zip(self.rows).collect())
            }
            _ => Err("the archive ended inside a data block".into()),
        }
    }

    fn int_len(&self) -> usize {
        1 + self.int_size
    }

    fn try_head(&mut self) {
        match parse_head(&self.buf) {
            Ok((head, used)) => {
                let rest = self.buf.split_off(used);
                self.buf.clear();
                self.int_size = head.int_size;
                self.rows = vec![0; head.names.len()];
                self.seen = vec![false; head.names.len()];
                self.names = head.names;
                self.entries = head.entries;
                self.state = State::Block;
                self.feed(&rest);
            }
            Err(Need::More) => self.next_try = self.buf.len().saturating_mul(2),
            Err(Need::Bad(why)) => self.fail(why),
        }
    }

    /// Acts on a whole block header, chunk length or blob oid in `buf`.
    fn step(&mut self) {
        let int_at = usize::from(self.state == State::Block);
        let value = match read_int(&self.buf[int_at..]) {
            Some(v) => v,
            None => return self.fail("an integer in the archive is out of range".into()),
        };
        self.state = match self.state.clone() {
            State::Block => match self.buf[0] {
                BLK_DATA => {
                    let entry = self.entries.get(&value).copied();
                    if let Some(e) = entry {
                        self.seen[e] = true;
                    }
                    self.tail.clear();
                    State::Chunk { entry, blob: false }
                }
                BLK_BLOBS => State::BlobOid,
                other => return self.fail(format!("unknown data block type {other}")),
            },
            State::Chunk { entry, blob } => match value {
                0 if blob => State::BlobOid,
                0 => {
                    if let Some(e) = entry {
                        self.rows[e] -= self.marker_lines();
                    }
                    State::Block
                }
                n if n > 0 => State::Payload {
                    entry,
                    blob,
                    left: n as u64,
                },
                n => return self.fail(format!("negative chunk length {n}")),
            },
            State::BlobOid if value == 0 => State::Block,
            State::BlobOid => State::Chunk {
                entry: None,
                blob: true,
            },
            other => other,
        };
    }

    fn keep_tail(&mut self, data: &[u8]) {
        let keep = END_MARKER.len() + 1;
        if data.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - keep..]);
        } else {
            self.tail.extend_from_slice(data);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
    }

    /// The newlines of the end marker, when the block's data ends with it.
    fn marker_lines(&self) -> u64 {
        let t = &self.tail[..];
        let marked = t == END_MARKER
            || (t.len() == END_MARKER.len() + 1 && t[0] == b'\n' && t.ends_with(END_MARKER));
        if marked { 3 } else { 0 }
    }

    fn fail(&mut self, why: String) {
        self.buf = Vec::new();
        self.state = State::Failed(why);
    }
}

/// A reader that counts the archive's rows as its bytes are read.
pub struct Counted<R> {
    inner: R,
    rows: ArchiveRows,
}

impl<R: Read> Counted<R> {
    pub fn new(inner: R) -> Counted<R> {
        Counted {
            inner,
            rows: ArchiveRows::new(),
        }
    }

    /// The rows read so far (see [`ArchiveRows::finish`]).
    pub fn finish(self) -> Result<BTreeMap<String, u64>, String> {
        self.rows.finish()
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.rows.feed(&buf[..n]);
        Ok(n)
    }
}

struct Head {
    int_size: usize,
    entries: HashMap<i64, usize>,
    names: Vec<String>,
}

enum Need {
    More,
    Bad(String),
}

/// Reads pg_dump's integer (sign byte, little-endian magnitude).
fn read_int(b: &[u8]) -> Option<i64> {
    let (sign, digits) = b.split_first()?;
    if digits.len() > 8 {
        return None;
    }
    let mut v: u64 = 0;
    for (i, d) in digits.iter().enumerate() {
        v |= u64::from(*d) << (8 * i);
    }
    let v = i64::try_from(v).ok()?;
    Some(if *sign != 0 { -v } else { v })
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    int_size: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Need> {
        let end = self.pos.checked_add(n).ok_or(Need::More)?;
        let s = self.b.get(self.pos..end).ok_or(Need::More)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, Need> {
        Ok(self.bytes(1)?[0])
    }

    fn int(&mut self) -> Result<i64, Need> {
        let raw = self.bytes(1 + self.int_size)?;
        read_int(raw).ok_or_else(|| Need::Bad("an integer in the archive is out of range".into()))
    }

    /// A string; `None` for NULL.
    fn str(&mut self) -> Result<Option<&'a [u8]>, Need> {
        match self.int()? {
            -1 => Ok(None),
            n if n < 0 => Err(Need::Bad(format!("negative string length {n}"))),
            n => {
                let n = usize::try_from(n).map_err(|_| Need::Bad("string too long".into()))?;
                self.bytes(n).map(Some)
            }
        }
    }

    fn text(&mut self) -> Result<String, Need> {
        let raw = self.str()?.unwrap_or_default();
        String::from_utf8(raw.to_vec())
            .map_err(|_| Need::Bad("a name in the archive is not UTF-8".into()))
    }
}

/// The header and TOC, and how many bytes they took.
fn parse_head(b: &[u8]) -> Result<(Head, usize), Need> {
    let mut c = Cursor {
        b,
        pos: 0,
        int_size: 4,
    };
    if c.bytes(5)? != b"PGDMP" {
        return Err(Need::Bad("not a pg_dump custom-format archive".into()));
    }
    let version = (c.byte()?, c.byte()?);
    let _rev = c.byte()?;
    if version < OLDEST || version > NEWEST {
        return Err(Need::Bad(format!(
            "archive version {}.{} is not one this reader knows",
            version.0, version.1
        )));
    }
    c.int_size = usize::from(c.byte()?);
    if !(1..=8).contains(&c.int_size) {
        return Err(Need::Bad(format!("integer size {}", c.int_size)));
    }
    let off_size = usize::from(c.byte()?);
    if c.byte()? != FORMAT_CUSTOM {
        return Err(Need::Bad("not the custom archive format".into()));
    }
    let compressed = if version >= (1, 15) {
        i64::from(c.byte()?)
    } else {
        c.int()?
    };
    if compressed != 0 {
        return Err(Need::Bad("the archive's data is compressed".into()));
    }
    for _ in 0..7 {
        c.int()?; // creation time
    }
    for _ in 0..3 {
        c.str()?; // database name, server and pg_dump versions
    }
    let count = c.int()?;
    let mut head = Head {
        int_size: c.int_size,
        entries: HashMap::new(),
        names: Vec::new(),
    };
    for _ in 0..count.max(0) {
        let e = toc_entry(&mut c, version, off_size)?;
        match e.desc {
            b"ENCODING" if !is_utf8_encoding(e.defn) => {
                return Err(Need::Bad(format!(
                    "the dump's encoding is not UTF-8 ({})",
                    String::from_utf8_lossy(e.defn).trim()
                )));
            }
            b"TABLE DATA" if !e.copy.starts_with(b"COPY ") => {
                return Err(Need::Bad(format!(
                    "the data of {}.{} is not COPY rows",
                    e.namespace, e.tag
                )));
            }
            b"TABLE DATA" => {
                head.entries.insert(e.dump_id, head.names.len());
                head.names.push(format!("{}.{}", e.namespace, e.tag));
            }
            _ => {}
        }
    }
    Ok((head, c.pos))
}

/// What a TOC entry says that matters here.
struct Entry<'a> {
    dump_id: i64,
    tag: String,
    desc: &'a [u8],
    defn: &'a [u8],
    copy: &'a [u8],
    namespace: String,
}

/// One TOC entry (`ReadToc` and the custom format's extra offset).
fn toc_entry<'a>(
    c: &mut Cursor<'a>,
    version: (u8, u8),
    off_size: usize,
) -> Result<Entry<'a>, Need> {
    let dump_id = c.int()?;
    c.int()?; // had dumper
    c.str()?; // table oid
    c.str()?; // oid
    let tag = c.text()?;
    let desc = c.str()?.unwrap_or_default();
    c.int()?; // section
    let defn = c.str()?.unwrap_or_default();
    c.str()?; // drop statement
    let copy = c.str()?.unwrap_or_default();
    let namespace = c.text()?;
    c.str()?; // tablespace
    c.str()?; // table access method
    if version >= (1, 16) {
        c.int()?; // relkind
    }
    c.str()?; // owner
    c.str()?; // with oids
    while c.str()?.is_some() {} // dependencies
    c.bytes(1 + off_size)?; // data offset
    Ok(Entry {
        dump_id,
        tag,
        desc,
        defn,
        copy,
        namespace,
    })
}

/// `SET client_encoding = 'UTF8';` (names then read the same as over a
/// UTF-8 connection).
fn is_utf8_encoding(defn: &[u8]) -> bool {
    let defn = String::from_utf8_lossy(defn).to_ascii_uppercase();
    defn.contains("'UTF8'") || defn.contains("'SQL_ASCII'")
}

#[cfg(test)]
mod tests;
