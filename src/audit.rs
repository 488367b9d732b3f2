//! Pure: the tamper-evident audit log. Every entry carries the hash
//! of the previous one (a hash chain over a canonical encoding), so an edited,
//! deleted, inserted or reordered entry breaks the chain at a findable place.
//! Also: redaction of secrets from any text before it is recorded.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Hash of the (virtual) entry before the first one.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1, 2, 3, ... without gaps.
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// e.g. `revision-applied`, `backup-succeeded`, `backup-pruned`, `restore`.
    pub kind: String,
    pub policy: Option<String>,
    /// Who: `daemon`, `user@host` for the CLI, `token:<name>` for the API.
    pub actor: String,
    pub message: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an entry's content chained to `prev_hash` (BLAKE3, hex).
/// The encoding is length-prefixed, so no field can bleed into another.
pub fn entry_hash(
    seq: i64,
    at: DateTime<Utc>,
    kind: &str,
    policy: Option<&str>,
    actor: &str,
    message: &str,
    prev_hash: &str,
) -> String {
    let mut h = blake3::Hasher::new();
    let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let seq = seq.to_string();
    for field in [
        "safepoint-audit-v1",
        &seq,
        &at,
        kind,
        policy.unwrap_or("\u{0}"),
        actor,
        message,
        prev_hash,
    ] {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

impl Entry {
    pub fn expected_hash(&self) -> String {
        entry_hash(
            self.seq,
            self.at,
            &self.kind,
            self.policy.as_deref(),
            &self.actor,
            &self.message,
            &self.prev_hash,
        )
    }
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub entries: usize,
    pub ok: bool,
    /// The first break in the chain, if any.
    pub problem: Option<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub seq: i64,
    pub what: String,
}

/// Checks the chain. `entries` must be in storage order (by `seq`).
/// `head` is the newest (seq, hash) remembered outside the catalog, which
/// reveals entries removed from the end.
pub fn verify(entries: &[Entry], head: Option<(i64, &str)>) -> Verdict {
    let mut prev_hash = GENESIS.to_string();
    for (expected_seq, e) in (1i64..).zip(entries) {
        let problem = if e.seq < expected_seq {
            Some(format!(
                "entry {} appears after entry {} (reordered or duplicated)",
                e.seq,
                expected_seq - 1
            ))
        } else if e.seq > expected_seq {
            Some(format!(
                "entries {expected_seq}..{} are missing (deleted)",
                e.seq - 1
            ))
        } else if e.prev_hash != prev_hash {
            Some("its link to the previous entry does not match (an entry before it was changed, removed, inserted or moved)".to_string())
        } else if e.expected_hash() != e.hash {
            Some("its content does not match its hash (edited)".to_string())
        } else {
            None
        };
        if let Some(what) = problem {
            return Verdict {
                entries: entries.len(),
                ok: false,
                problem: Some(Problem { seq: e.seq, what }),
            };
        }
        prev_hash = e.hash.clone();
    }
    if let Some((seq, hash)) = head {
        let last = entries.last();
        let tail_ok = last.is_some_and(|l| l.seq > seq || (l.seq == seq && l.hash == hash));
        if !(tail_ok || (seq == 0 && entries.is_empty())) {
            return Verdict {
                entries: entries.len(),
                ok: false,
                problem: Some(Problem {
                    seq,
                    what: format!(
                        "the log ends at entry {} but entry {seq} was written (the newest entries were removed or changed)",
                        last.map_or(0, |l| l.seq)
                    ),
                }),
            };
        }
    }
    Verdict {
        entries: entries.len(),
        ok: true,
        problem: None,
    }
}

/// Removes secrets from text before it is recorded or shown: passwords in
/// URL userinfo (`scheme://user:secret@host` -> `scheme://user:***@host`) and
/// values of secret-looking `key=value` pairs.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    redact_pairs(&out)
}

const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "access_key",
];

fn redact_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < text.len() {
        let c = bytes[i];
        if c == b'=' {
            let key_start = text[..i]
                .rfind(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'))
                .map_or(0, |p| p + 1);
            let key = text[key_start..i].to_ascii_lowercase();
            if SECRET_KEYS.iter().any(|k| key.ends_with(k)) {
                out.push_str("=***");
                let end = text[i + 1..]
                    .find(|ch: char| ch.is_whitespace() || ch == '&' || ch == ';' || ch == ',')
                    .map_or(text.len(), |p| i + 1 + p);
                i = end;
                continue;
            }
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Entry> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let at = DateTime::from_timestamp(1_700_000_000 + seq * 60, 0).unwrap();
                let hash = entry_hash(
                    seq,
                    at,
                    "backup-succeeded",
                    Some("app"),
                    "daemon",
                    &format!("backup {seq}"),
                    &prev,
                );
                let e = Entry {
                    seq,
                    at,
                    kind: "backup-succeeded".into(),
                    policy: Some("app".into()),
                    actor: "daemon".into(),
                    message: format!("backup {seq}"),
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let c = chain(5);
        let head = (5, c[4].hash.as_str());
        assert!(verify(&c, Some(head)).ok);
        assert!(verify(&[], None).ok);
    }

    #[test]
    fn an_edited_entry_is_found_by_its_seq() {
        let mut c = chain(5);
        c[2].message = "backup 3 (quietly changed)".into();
        let v = verify(&c, None);
        assert_eq!(v.problem.unwrap().seq, 3);
    }

    #[test]
    fn an_edited_entry_with_a_recomputed_hash_breaks_the_next_link() {
        let mut c = chain(5);
        c[2].message = "forged".into();
        c[2].hash = c[2].expected_hash();
        let p = verify(&c, None).problem.unwrap();
        assert_eq!(p.seq, 4);
    }

    #[test]
    fn deleted_inserted_and_reordered_entries_are_found() {
        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(verify(&deleted, None).problem.unwrap().seq, 3);

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert_eq!(verify(&reordered, None).problem.unwrap().seq, 3);

        let mut inserted = chain(5);
        let mut extra = inserted[1].clone();
        extra.message = "inserted".into();
        inserted.insert(2, extra);
        assert!(!verify(&inserted, None).ok);
    }

    #[test]
    fn removing_the_newest_entries_is_found_through_the_head() {
        let c = chain(5);
        let head = (5, c[4].hash.clone());
        assert!(!verify(&c[..3], Some((head.0, &head.1))).ok);
    }

    #[test]
    fn secrets_are_redacted_from_urls_and_pairs() {
        assert_eq!(
            redact("pg_dump failed on postgres://backup:hunter2@db:5432/orders: boom"),
            "pg_dump failed on postgres://backup:***@db:5432/orders: boom"
        );
        assert_eq!(
            redact("PGPASSWORD=hunter2 pg_dump"),
            "PGPASSWORD=*** pg_dump"
        );
        assert_eq!(
            redact("https://x/y?token=abc&v=1"),
            "https://x/y?token=***&v=1"
        );
        assert_eq!(
            redact("no secrets, ünïcode ✓ a=b"),
            "no secrets, ünïcode ✓ a=b"
        );
    }
}
