//! Pure: just enough URL parsing for policy checks (scheme, userinfo, host,
//! port, database path, query) and the inline-secret scan over every string.

use serde_json::Value;

use super::yaml::join;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url<'a> {
    pub scheme: &'a str,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub host: &'a str,
    pub port: Option<u16>,
    /// Without the leading `/`.
    pub path: &'a str,
    pub query: Vec<(&'a str, &'a str)>,
}

/// Parses `scheme://[user[:password]@]host[:port][/path][?query][#fragment]`.
pub(crate) fn parse(s: &str) -> Option<Url<'_>> {
    let (scheme, rest) = s.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((name, pw)) => (Some(name), Some(pw)),
            None => (Some(u), None),
        },
        None => (None, None),
    };
    let (host, port) = split_port(hostport)?;
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    Some(Url {
        scheme,
        user,
        password,
        host,
        port,
        path,
        query,
    })
}

fn split_port(hostport: &str) -> Option<(&str, Option<u16>)> {
    // `[::1]:5432`
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((hostport, None)),
    }
}

/// The server a database URL points at, normalised for comparison.
pub(crate) fn server_key(url: &Url<'_>, default_port: u16) -> (String, u16, String) {
    let host = match url.host.to_ascii_lowercase().as_str() {
        "" | "127.0.0.1" | "::1" | "localhost" => "localhost".to_owned(),
        h => h.trim_end_matches('.').to_owned(),
    };
    (host, url.port.unwrap_or(default_port), url.path.to_owned())
}

/// One inline secret found in a string value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InlineSecret {
    pub ptr: String,
    pub message: String,
    pub hint: String,
}

const SECRET_HINT: &str = "remove the password from the URL and use \
                           passwordFrom: {env: NAME} or {file: PATH}";

/// Scans every string of a document for secrets written inline: passwords
/// in URL userinfo, secret-looking URL query parameters, age identities and
/// PEM private keys. Shell variables (`$PGPASSWORD`) are not secrets.
pub(crate) fn find_inline_secrets(value: &Value, ptr: &str, out: &mut Vec<InlineSecret>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                find_inline_secrets(v, &join(ptr, k), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                find_inline_secrets(v, &join(ptr, &i.to_string()), out);
            }
        }
        Value::String(s) => scan_string(s, ptr, out),
        _ => {}
    }
}

fn scan_string(s: &str, ptr: &str, out: &mut Vec<InlineSecret>) {
    let mut push = |message: String, hint: &str| {
        out.push(InlineSecret {
            ptr: ptr.to_owned(),
            message,
            hint: hint.to_owned(),
        });
    };
    if s.contains("AGE-SECRET-KEY-") {
        push(
            "an age secret key (identity) is written inline".to_owned(),
            "list only public recipients (`age1...`); keep identities outside Git",
        );
    }
    if s.contains("PRIVATE KEY-----") {
        push(
            "a private key is written inline".to_owned(),
            "keep private keys outside Git and refer to them by file",
        );
    }
    for (i, _) in s.match_indices("://") {
        let start = s[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |p| p + 1);
        let end = s[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .map_or(s.len(), |p| i + p);
        let Some(url) = parse(&s[start..end]) else {
            continue;
        };
        if url
            .password
            .is_some_and(|p| !p.is_empty() && !p.starts_with('$'))
        {
            push(
                "a password is written inline in a URL".to_owned(),
                SECRET_HINT,
            );
        }
        for (name, value) in &url.query {
            if is_secret_name(name) && !value.is_empty() && !value.starts_with('$') {
                push(
                    format!("URL query parameter `{name}` holds a secret written inline"),
                    "remove the parameter from the URL and keep the secret outside Git \
                     (passwordFrom/secretFrom: {env: NAME} or {file: PATH})",
                );
            }
        }
    }
}

fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let words = [
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "token",
        "key",
        "apikey",
        "accesskey",
        "secretkey",
        "credential",
        "credentials",
        "signature",
        "auth",
    ];
    lower
        .split(['_', '-', '.'])
        .any(|part| words.contains(&part))
        || ["password", "secret", "token", "apikey"]
            .iter()
            .any(|w| lower.ends_with(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_split_into_their_parts() {
        let u = parse("postgres://backup:pw@db.internal:5432/orders?sslmode=require").unwrap();
        assert_eq!(u.scheme, "postgres");
        assert_eq!(u.user, Some("backup"));
        assert_eq!(u.password, Some("pw"));
        assert_eq!(u.host, "db.internal");
        assert_eq!(u.port, Some(5432));
        assert_eq!(u.path, "orders");
        assert_eq!(u.query, vec![("sslmode", "require")]);
        assert_eq!(parse("mysql://[::1]:3306/x").unwrap().host, "::1");
        assert!(parse("no scheme").is_none());
    }

    #[test]
    fn inline_secrets_are_found_anywhere_but_shell_variables_are_not() {
        let doc = json!({
            "a": "postgres://u:hunter2@h/db",
            "b": ["pg_dump 'mysql://u@h/db?sslmode=x&api_key=abc' | zstd"],
            "c": "https://hooks.example/x?token=abc",
            "d": "postgres://u:$PGPASSWORD@h/db",
            "e": "postgres://u@h/db?sslkey=/etc/key.pem",
            "f": "AGE-SECRET-KEY-1QQQ",
        });
        let mut found = Vec::new();
        find_inline_secrets(&doc, "", &mut found);
        let ptrs: Vec<&str> = found.iter().map(|f| f.ptr.as_str()).collect();
        assert_eq!(ptrs, ["/a", "/b/0", "/c", "/f"]);
        assert!(found.iter().all(|f| !f.message.contains("hunter2")));
    }
}
