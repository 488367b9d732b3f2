//! IO: where the catalog lives: a SQLite file (the embedded default) or a
//! PostgreSQL database given by URL. The password of a PostgreSQL catalog
//! is read from a file (`--catalog-password-file`) so it never has to sit in
//! argv or the environment; every rendering of a location (logs, errors) is
//! redacted.

use std::fmt;
use std::path::{Path, PathBuf};

use reqwest::Url;

use super::CatalogError;

/// Which database engine holds the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A catalog location. `Debug` and `Display` never show a password.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(PgLocation),
}

#[derive(Clone, PartialEq, Eq)]
pub struct PgLocation {
    /// The URL without its password.
    url: Url,
    password: Option<String>,
    /// This process's witness of the newest audit entry (see `audit.rs`).
    pub audit_head: Option<PathBuf>,
}

/// True for `postgres://…` and `postgresql://…`.
pub fn is_postgres_url(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

impl Location {
    /// A `postgres://`/`postgresql://` URL, else a SQLite path (relative to `base_dir`).
    pub fn parse(text: &str, base_dir: &Path) -> Result<Location, CatalogError> {
        if !is_postgres_url(text) {
            return Ok(Location::Sqlite(base_dir.join(text)));
        }
        let mut url = Url::parse(text.trim()).map_err(|e| CatalogError::Location {
            location: redact_text(text),
            reason: format!("not a valid URL ({e})"),
        })?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(CatalogError::Location {
                location: redact_text(text),
                reason: "no host; write postgres://USER@HOST:PORT/DATABASE".into(),
            });
        }
        let mut password = url.password().map(percent_decode);
        let _ = url.set_password(None);
        // A `password=` query parameter is a password too: move it out.
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        if pairs.iter().any(|(k, _)| k == "password") {
            let mut query = url.query_pairs_mut();
            query.clear();
            for (k, v) in &pairs {
                if k == "password" {
                    password = Some(v.clone());
                } else {
                    query.append_pair(k, v);
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(Location::Postgres(PgLocation {
            url,
            password,
            audit_head: None,
        }))
    }

    /// Reads the PostgreSQL password from `file` (trailing newline removed).
    pub fn with_password_file(self, file: &Path) -> Result<Location, CatalogError> {
        let mut pg = match self {
            Location::Postgres(pg) => pg,
            sqlite => {
                return Err(CatalogError::Location {
                    location: sqlite.to_string(),
                    reason: "--catalog-password-file is only for a postgres:// catalog".into(),
                });
            }
        };
        let text = std::fs::read_to_string(file).map_err(|e| CatalogError::Location {
            location: pg.url.to_string(),
            reason: format!(
                "cannot read the password file {}: {e}; check --catalog-password-file",
                file.display()
            ),
        })?;
        pg.password = Some(text.trim_end_matches(['\n', '\r']).to_string());
        Ok(Location::Postgres(pg))
    }

    /// Where this process records the newest audit entry it wrote (a
    /// PostgreSQL catalog only; a SQLite catalog keeps it beside its file).
    pub fn with_audit_head(self, path: PathBuf) -> Location {
        match self {
            Location::Postgres(mut pg) => {
                pg.audit_head = Some(path);
                Location::Postgres(pg)
            }
            sqlite => sqlite,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }

    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }

    /// The URL with the password: only handed to the driver, never shown.
    pub(super) fn connect_url(&self) -> String {
        match self {
            Location::Sqlite(p) => format!("sqlite://{}", p.display()),
            Location::Postgres(pg) => {
                let mut url = pg.url.clone();
                if let Some(p) = &pg.password {
                    let _ = url.set_password(Some(&percent_encode(p)));
                }
                url.to_string()
            }
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(pg) => {
                let mut url = pg.url.clone();
                if pg.password.is_some() {
                    let _ = url.set_password(Some("***"));
                }
                write!(f, "{url}")
            }
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

/// A catalog argument as it may be shown: the password (userinfo or a
/// `password=` parameter) replaced by `***`, also when the URL is invalid.
pub fn redact_text(text: &str) -> String {
    if !is_postgres_url(text) {
        return text.to_string();
    }
    let re = regex::Regex::new(r"(?i)(://[^/@:]*:)[^/@]*@|(password=)[^&]*").expect("valid regex");
    re.replace_all(text, |c: &regex::Captures| match (c.get(1), c.get(2)) {
        (Some(user), _) => format!("{}***@", user.as_str()),
        (None, Some(key)) => format!("{}***", key.as_str()),
        _ => String::new(),
    })
    .into_owned()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_sqlite_and_a_url_is_postgres() {
        let base = Path::new("/srv");
        assert_eq!(
            Location::parse("cat.db", base).unwrap(),
            Location::Sqlite(PathBuf::from("/srv/cat.db"))
        );
        let pg = Location::parse("postgresql://sp@db:5433/cat", base).unwrap();
        assert_eq!(pg.backend(), Backend::Postgres);
        assert_eq!(pg.to_string(), "postgresql://sp@db:5433/cat");
    }

    #[test]
    fn passwords_never_show() {
        let base = Path::new("/");
        let pg = Location::parse(
            "postgres://sp:s%40cret@db/cat?password=other&sslmode=require",
            base,
        )
        .unwrap();
        let shown = format!("{pg} {pg:?}");
        assert!(
            !shown.contains("cret") && !shown.contains("other"),
            "{shown}"
        );
        assert!(shown.contains("sslmode=require"), "{shown}");
        // The query password wins (it came last) and reaches the driver encoded.
        assert!(
            pg.connect_url().contains("sp:other@db"),
            "{}",
            pg.connect_url()
        );
        assert_eq!(
            redact_text("postgres://sp:pw@db/x?password=pw2"),
            "postgres://sp:***@db/x?password=***"
        );
        assert_eq!(redact_text("postgres://sp@db/x"), "postgres://sp@db/x");
    }

    #[test]
    fn the_password_file_is_read_and_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "p@ss word\n").unwrap();
        let pg = Location::parse("postgres://sp@db/cat", Path::new("/"))
            .unwrap()
            .with_password_file(&file)
            .unwrap();
        assert_eq!(pg.connect_url(), "postgres://sp:p%40ss%20word@db/cat");
        assert_eq!(pg.to_string(), "postgres://sp:***@db/cat");
        let err = Location::parse("x.db", Path::new("/"))
            .unwrap()
            .with_password_file(&file)
            .unwrap_err();
        assert!(err.to_string().contains("only for a postgres"), "{err}");
        let err = Location::parse("postgres://sp@db/cat", Path::new("/"))
            .unwrap()
            .with_password_file(&dir.path().join("absent"))
            .unwrap_err();
        assert!(err.to_string().contains("--catalog-password-file"), "{err}");
    }
}
