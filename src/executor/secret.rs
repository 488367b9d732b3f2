//! IO: secrets at execution time. A `SecretRef` is resolved only when a tool
//! runs (env var or file, trimmed); database URLs are split into a URL without
//! password (safe for argv and messages) and the password (for the child's
//! environment only); `Redactor` removes secrets and URL passwords from any
//! text before it reaches a log, the catalog or an error.

use std::path::PathBuf;

use crate::policy::SecretRef;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "environment variable {0} (named by passwordFrom) is not set; export it for the daemon"
    )]
    EnvMissing(String),
    #[error("environment variable {0} (named by passwordFrom) is empty")]
    EnvEmpty(String),
    #[error("cannot read the secret file {path} (named by passwordFrom): {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret file {0} (named by passwordFrom) is empty")]
    FileEmpty(PathBuf),
    #[error("`{0}` is not a secret reference; write env:NAME or file:PATH")]
    BadReference(String),
}

impl SecretError {
    pub fn kind(&self) -> &'static str {
        match self {
            SecretError::EnvMissing(_) | SecretError::EnvEmpty(_) => "secret-env",
            SecretError::File { .. } | SecretError::FileEmpty(_) => "secret-file",
            SecretError::BadReference(_) => "secret-reference",
        }
    }
}

/// Reads the secret a reference points at, without surrounding whitespace.
pub fn resolve(secret: &SecretRef) -> Result<String, SecretError> {
    match secret {
        SecretRef::Env(name) => match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            Ok(_) => Err(SecretError::EnvEmpty(name.clone())),
            Err(_) => Err(SecretError::EnvMissing(name.clone())),
        },
        SecretRef::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                path: path.clone(),
                source,
            })?;
            match text.trim() {
                "" => Err(SecretError::FileEmpty(path.clone())),
                v => Ok(v.to_string()),
            }
        }
    }
}

/// Parses `env:NAME` or `file:PATH` (the `--to-password-from` flag).
pub fn parse_reference(s: &str) -> Result<SecretRef, SecretError> {
    match s.split_once(':') {
        Some(("env", name)) if !name.is_empty() => Ok(SecretRef::Env(name.to_string())),
        Some(("file", path)) if !path.is_empty() => Ok(SecretRef::File(PathBuf::from(path))),
        _ => Err(SecretError::BadReference(s.to_string())),
    }
}

/// A database URL with its password held apart.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The URL without password: safe for argv, logs and messages.
    pub url: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Credentials {
    /// The password comes from `password_from` if given, else from the URL,
    /// else from the standard variable `env_fallback` (PGPASSWORD, MYSQL_PWD).
    pub fn resolve(
        url: &str,
        password_from: Option<&SecretRef>,
        env_fallback: &str,
    ) -> Result<Credentials, SecretError> {
        let (url, in_url) = split_password(url);
        let password = match password_from {
            Some(r) => Some(resolve(r)?),
            None => in_url.or_else(|| std::env::var(env_fallback).ok().filter(|v| !v.is_empty())),
        };
        Ok(Credentials { url, password })
    }

    pub fn redactor(&self) -> Redactor {
        Redactor::default().with(self.password.as_deref())
    }
}

/// Byte range of the userinfo of the first `scheme://` URL in `s`.
fn userinfo_span(s: &str, from: usize) -> Option<(usize, usize, usize)> {
    let start = s[from..].find("://")? + from + 3;
    let rest = &s[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\'' | '`'))
        .unwrap_or(rest.len());
    Some((
        start,
        start + rest[..end].rfind('@').unwrap_or(usize::MAX),
        start + end,
    ))
}

/// Splits `scheme://user:pw@host/db` into `scheme://user@host/db` and `pw`
/// (percent-decoded).
pub fn split_password(url: &str) -> (String, Option<String>) {
    let Some((start, at, _)) = userinfo_span(url, 0) else {
        return (url.to_string(), None);
    };
    if at == usize::MAX {
        return (url.to_string(), None);
    }
    match url[start..at].find(':') {
        Some(colon) => {
            let pw = percent_decode(&url[start + colon + 1..at]);
            let stripped = format!("{}{}", &url[..start + colon], &url[at..]);
            (stripped, Some(pw))
        }
        None => (url.to_string(), None),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces known secrets and every URL password in a text with `***`.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn with(mut self, secret: Option<&str>) -> Self {
        if let Some(s) = secret.filter(|s| !s.is_empty()) {
            self.secrets.push(s.to_string());
        }
        self
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        scrub_url_passwords(&out)
    }
}

/// `postgres://u:pw@h/db` -> `postgres://u:***@h/db`, for every URL in `text`.
pub fn scrub_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some((start, at, end)) = userinfo_span(text, pos) {
        if at != usize::MAX
            && let Some(colon) = text[start..at].find(':')
            && &text[start + colon + 1..at] != "***"
        {
            out.push_str(&text[pos..start + colon + 1]);
            out.push_str("***");
            out.push_str(&text[at..end]);
        } else {
            out.push_str(&text[pos..end]);
        }
        pos = end;
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_split_from_the_url_and_decoded() {
        let (url, pw) = split_password("postgres://app:p%40ss:w@db:5432/orders?sslmode=disable");
        assert_eq!(url, "postgres://app@db:5432/orders?sslmode=disable");
        assert_eq!(pw.as_deref(), Some("p@ss:w"));
        assert_eq!(
            split_password("mysql://root@127.0.0.1/x"),
            ("mysql://root@127.0.0.1/x".to_string(), None)
        );
        assert_eq!(split_password("not a url"), ("not a url".to_string(), None));
    }

    #[test]
    fn redaction_removes_secrets_and_url_passwords_everywhere() {
        let r = Redactor::default().with(Some("hunter2"));
        let text = "FATAL: password hunter2 wrong; tried postgres://u:zzz@h/db and mysql://x:y@h2";
        assert_eq!(
            r.redact(text),
            "FATAL: password *** wrong; tried postgres://u:***@h/db and mysql://x:***@h2"
        );
        assert_eq!(r.redact("no secrets here"), "no secrets here");
    }

    #[test]
    fn secret_references_parse_and_resolve_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "  s3cret\n").unwrap();
        let r = parse_reference(&format!("file:{}", path.display())).unwrap();
        assert_eq!(resolve(&r).unwrap(), "s3cret");
        assert!(parse_reference("vault:x").is_err());
        let missing = resolve(&SecretRef::Env("SAFEPOINT_TEST_SURELY_UNSET".into()))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("SAFEPOINT_TEST_SURELY_UNSET"), "{missing}");
    }
}
