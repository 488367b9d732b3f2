//! The archive reader against archives written the way pg_dump writes them.

use super::*;

/// A TOC entry: (dump id, desc, tag, namespace, defn, copy statement).
type Toc<'a> = (i64, &'a str, &'a str, &'a str, &'a str, Option<&'a str>);

/// Writes archives the way pg_dump's custom format does.
struct Writer {
    out: Vec<u8>,
    version: (u8, u8),
}

impl Writer {
    fn int(&mut self, v: i64) {
        self.out.push(u8::from(v < 0));
        self.out
            .extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
    }
    fn str(&mut self, s: Option<&str>) {
        match s {
            None => self.int(-1),
            Some(s) => {
                self.int(s.len() as i64);
                self.out.extend_from_slice(s.as_bytes());
            }
        }
    }
    fn head(version: (u8, u8), compression: i64) -> Writer {
        let mut w = Writer {
            out: b"PGDMP".to_vec(),
            version,
        };
        w.out
            .extend_from_slice(&[version.0, version.1, 0, 4, 8, FORMAT_CUSTOM]);
        if version >= (1, 15) {
            w.out.push(compression as u8);
        } else {
            w.int(compression);
        }
        for v in [1, 2, 3, 4, 5, 126, 0] {
            w.int(v);
        }
        for s in ["db", "15.4", "15.4"] {
            w.str(Some(s));
        }
        w
    }
    fn toc(&mut self, entries: &[Toc]) {
        self.int(entries.len() as i64);
        for (id, desc, tag, ns, defn, copy) in entries {
            self.int(*id);
            self.int(i64::from(copy.is_some()));
            self.str(Some("1259"));
            self.str(Some("16384"));
            self.str(Some(tag));
            self.str(Some(desc));
            self.int(2);
            self.str(Some(defn));
            self.str(Some(""));
            self.str(*copy);
            self.str(Some(ns));
            self.str(Some(""));
            self.str(Some("heap"));
            if self.version >= (1, 16) {
                self.int(i64::from(b'r'));
            }
            self.str(Some("postgres"));
            self.str(Some("false"));
            self.str(Some("3"));
            self.str(None);
            self.out.push(1);
            self.out.extend_from_slice(&[0; 8]);
        }
    }
    /// A table's rows as pg_dump writes them: one chunk per row, then
    /// the end marker.
    fn data(&mut self, id: i64, rows: &[&str]) {
        let mut chunks = rows.to_vec();
        chunks.push("\\.\n\n\n");
        self.raw_data(id, &chunks);
    }
    fn raw_data(&mut self, id: i64, chunks: &[&str]) {
        self.out.push(BLK_DATA);
        self.int(id);
        for c in chunks {
            self.int(c.len() as i64);
            self.out.extend_from_slice(c.as_bytes());
        }
        self.int(0);
    }
    fn blobs(&mut self, id: i64, blobs: &[(i64, &[u8])]) {
        self.out.push(BLK_BLOBS);
        self.int(id);
        for (oid, body) in blobs {
            self.int(*oid);
            self.int(body.len() as i64);
            self.out.extend_from_slice(body);
            self.int(0);
        }
        self.int(0);
    }
}

const COPY_A: Option<&str> = Some("COPY public.a (id) FROM stdin;\n");

fn sample(version: (u8, u8)) -> Vec<u8> {
    let mut w = Writer::head(version, 0);
    w.toc(&[
        (
            1,
            "ENCODING",
            "ENCODING",
            "",
            "SET client_encoding = 'UTF8';\n",
            None,
        ),
        (2, "TABLE", "a", "public", "CREATE TABLE public.a ...", None),
        (3, "TABLE DATA", "a", "public", "", COPY_A),
        (
            4,
            "TABLE DATA",
            "empty",
            "s p",
            "",
            Some("COPY \"s p\".empty FROM stdin;\n"),
        ),
        (5, "BLOBS", "BLOBS", "", "", None),
        (
            6,
            "TABLE DATA",
            "b",
            "public",
            "",
            Some("COPY public.b FROM stdin;\n"),
        ),
    ]);
    w.data(3, &["1\n", "2\tline\\nbreak\n", "3\n"]);
    w.data(4, &[]);
    // A large object whose bytes hold newlines is not rows.
    w.blobs(5, &[(16400, b"x\ny\nz\n"), (16401, b"\n")]);
    w.data(6, &["a\n", "b\n"]);
    w.out
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn read_in_pieces(archive: &[u8], piece: usize) -> Result<BTreeMap<String, u64>, String> {
    let mut rows = ArchiveRows::new();
    for p in archive.chunks(piece) {
        rows.feed(p);
    }
    rows.finish()
}

#[test]
fn rows_are_counted_per_table_whatever_the_read_sizes() {
    let want = counts(&[("public.a", 3), ("s p.empty", 0), ("public.b", 2)]);
    for version in [(1, 14), (1, 15), (1, 16)] {
        let archive = sample(version);
        for piece in [1, 2, 3, 7, 64, 4096, archive.len()] {
            assert_eq!(
                read_in_pieces(&archive, piece),
                Ok(want.clone()),
                "{version:?} in pieces of {piece}"
            );
        }
    }
}

#[test]
fn only_the_lines_before_the_end_marker_are_rows() {
    let mut w = Writer::head((1, 14), 0);
    let copy = Some("COPY public.t FROM stdin;\n");
    w.toc(&[
        (1, "TABLE DATA", "zero_columns", "public", "", copy),
        (2, "TABLE DATA", "split_marker", "public", "", copy),
        (3, "TABLE DATA", "no_marker", "public", "", copy),
        (4, "TABLE DATA", "empty", "public", "", copy),
    ]);
    // A table without columns has empty lines for rows.
    w.data(1, &["\n", "\n"]);
    w.raw_data(2, &["a\n", "b\n\\", ".\n", "\n", "\n"]);
    w.raw_data(3, &["a\n", "\\\\.\n"]);
    w.data(4, &[]);
    let want = counts(&[
        ("public.zero_columns", 2),
        ("public.split_marker", 2),
        ("public.no_marker", 2),
        ("public.empty", 0),
    ]);
    for piece in [1, 3, 1000] {
        assert_eq!(
            read_in_pieces(&w.out, piece),
            Ok(want.clone()),
            "pieces of {piece}"
        );
    }
}

#[test]
fn the_counting_reader_passes_every_byte_through() {
    let archive = sample((1, 14));
    let mut reader = Counted::new(&archive[..]);
    let mut copy = Vec::new();
    reader.read_to_end(&mut copy).unwrap();
    assert_eq!(copy, archive);
    assert_eq!(reader.finish().unwrap()["public.a"], 3);
}

#[test]
fn a_truncated_archive_gives_no_counts() {
    let archive = sample((1, 14));
    for cut in [3, 40, archive.len() - 30, archive.len() - 1] {
        let err = read_in_pieces(&archive[..cut], 5).unwrap_err();
        assert!(err.contains("ended inside"), "cut at {cut}: {err}");
    }
}

#[test]
fn what_this_reader_does_not_know_is_said_not_guessed() {
    let mut compressed = Writer::head((1, 14), -1);
    compressed.toc(&[]);
    assert!(
        read_in_pieces(&compressed.out, 9)
            .unwrap_err()
            .contains("compressed")
    );

    let mut inserts = Writer::head((1, 14), 0);
    inserts.toc(&[(3, "TABLE DATA", "a", "public", "", None)]);
    assert!(
        read_in_pieces(&inserts.out, 9)
            .unwrap_err()
            .contains("not COPY rows")
    );

    let mut latin = Writer::head((1, 14), 0);
    latin.toc(&[(
        1,
        "ENCODING",
        "ENCODING",
        "",
        "SET client_encoding = 'LATIN1';\n",
        None,
    )]);
    assert!(
        read_in_pieces(&latin.out, 9)
            .unwrap_err()
            .contains("LATIN1")
    );

    let newer = Writer::head((1, 17), 0);
    assert!(read_in_pieces(&newer.out, 9).unwrap_err().contains("1.17"));

    let plain = b"--\n-- PostgreSQL database dump\n--\n".repeat(200);
    assert!(
        read_in_pieces(&plain, 100)
            .unwrap_err()
            .contains("not a pg_dump")
    );

    // Cut between two blocks: pg_restore would fail, and so does this.
    let mut missing = Writer::head((1, 14), 0);
    missing.toc(&[
        (3, "TABLE DATA", "a", "public", "", COPY_A),
        (4, "TABLE DATA", "b", "public", "", COPY_A),
    ]);
    missing.data(3, &["1\n"]);
    assert!(
        read_in_pieces(&missing.out, 9)
            .unwrap_err()
            .contains("no data block for public.b")
    );

    let mut bad_block = Writer::head((1, 14), 0);
    bad_block.toc(&[]);
    bad_block.out.extend_from_slice(&[9, 0, 1, 0, 0, 0]);
    assert!(
        read_in_pieces(&bad_block.out, 4)
            .unwrap_err()
            .contains("block type 9")
    );
}

#[test]
fn a_large_table_of_contents_is_read_once_it_is_whole() {
    let names: Vec<String> = (0..3000).map(|i| format!("t{i}")).collect();
    let mut w = Writer::head((1, 14), 0);
    let entries: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i as i64 + 1, "TABLE DATA", n.as_str(), "public", "", COPY_A))
        .collect();
    w.toc(&entries);
    for i in 0..3000 {
        w.data(i + 1, &["x\n"; 2]);
    }
    let got = read_in_pieces(&w.out, 65536).unwrap();
    assert_eq!(got.len(), 3000);
    assert!(got.values().all(|n| *n == 2));
}
