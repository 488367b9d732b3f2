//! Pure: every database endpoint (host, port) a client may connect to for a
//! URL — multi-host lists and libpq's `host`/`hostaddr`/`port` query
//! parameters included — and the operator's host patterns they must match.

use glob::Pattern;

/// `host`, `host:port`, `host:*`, `[v6]:port`; the host is a glob
/// (`*.payments.internal`); `localhost` also covers 127.0.0.1, ::1 and Unix sockets.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPattern {
    pub text: String,
    host: Pattern,
    /// `None` = any port.
    port: Option<u16>,
}

impl HostPattern {
    /// Parses one pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let t = text.trim();
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| "`[` without `]`".to_owned())?;
            (h, after.strip_prefix(':'))
        } else {
            match t.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                Some(_) => return Err("an IPv6 address needs brackets: `[::1]:5432`".into()),
                None => (t, None),
            }
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.*?[]:_".contains(c))
        {
            return Err("not a host name, address or glob".into());
        }
        let port = match port {
            None | Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("`{p}` is not a port (1-65535 or `*`)"))?,
            ),
        };
        let host = Pattern::new(&normalize_host(host)).map_err(|e| e.msg.to_owned())?;
        Ok(HostPattern {
            text: t.to_owned(),
            host,
            port,
        })
    }

    pub(crate) fn allows(&self, host: &str, port: u16) -> bool {
        self.host.matches(host) && self.port.is_none_or(|p| p == port)
    }
}

pub(crate) fn default_port(kind: &str) -> u16 {
    if kind == "mysql" { 3306 } else { 5432 }
}

/// Lowercase, no trailing dot; the local machine in any spelling = `localhost`.
fn normalize_host(h: &str) -> String {
    let h = percent_decode(h).to_ascii_lowercase();
    let h = h.trim_end_matches('.');
    if h.is_empty() || h.starts_with('/') || matches!(h, "localhost" | "127.0.0.1" | "::1") {
        "localhost".to_owned()
    } else {
        h.to_owned()
    }
}

/// Every (host, port) the URL may make a client connect to.
pub(crate) fn endpoints(url: &str, default_port: u16) -> Vec<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('#').next().unwrap_or_default();
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or_default();
    let hostlist = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut hosts: Vec<(String, Option<u16>)> = hostlist.split(',').map(split_port).collect();
    let mut query_ports = Vec::new();
    for (key, value) in query.split('&').filter_map(|p| p.split_once('=')) {
        match key {
            "host" | "hostaddr" => {
                hosts.extend(value.split(',').map(|h| (normalize_host(h), None)))
            }
            "socket" => hosts.push(("localhost".to_owned(), None)),
            // An unparseable port connects nowhere; 0 is allowed only by `host:*` patterns.
            "port" => query_ports.extend(value.split(',').map(|p| p.trim().parse().unwrap_or(0))),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (host, port) in hosts {
        out.push((host.clone(), port.unwrap_or(default_port)));
        for q in &query_ports {
            out.push((host.clone(), *q));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn split_port(hostport: &str) -> (String, Option<u16>) {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').map(|p| p.parse().unwrap_or(0));
        return (normalize_host(h), port);
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => (normalize_host(h), Some(p.parse().unwrap_or(0))),
        None => (normalize_host(hostport), None),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_cover_host_lists_and_query_overrides() {
        assert_eq!(
            endpoints("postgres://u@db.internal/orders", 5432),
            vec![("db.internal".to_owned(), 5432)]
        );
        assert_eq!(
            endpoints("postgres://u@a:5433,B.:6000/x", 5432),
            vec![("a".to_owned(), 5433), ("b".to_owned(), 6000)]
        );
        let e = endpoints("postgres://u@ok.internal/x?host=evil.example&port=1", 5432);
        assert!(e.contains(&("evil.example".to_owned(), 1)), "{e:?}");
        assert!(e.contains(&("ok.internal".to_owned(), 5432)), "{e:?}");
        assert_eq!(
            endpoints("postgres:///x?host=%2Fvar%2Frun%2Fpostgresql", 5432),
            vec![("localhost".to_owned(), 5432)]
        );
        assert_eq!(
            endpoints("mysql://root@127.0.0.1:3306/x", 3306),
            vec![("localhost".to_owned(), 3306)]
        );
        assert_eq!(
            endpoints("postgres://u@[::1]:5432/x", 5432),
            vec![("localhost".to_owned(), 5432)]
        );
    }

    #[test]
    fn host_patterns_match_hosts_and_ports() {
        let p = HostPattern::parse("*.payments.internal:5432").unwrap();
        assert!(p.allows("pg.payments.internal", 5432));
        assert!(!p.allows("pg.payments.internal", 5433));
        assert!(!p.allows("pg.web.internal", 5432));
        let any_port = HostPattern::parse("localhost").unwrap();
        assert!(any_port.allows("localhost", 1));
        assert!(
            HostPattern::parse("127.0.0.1:*")
                .unwrap()
                .allows("localhost", 9)
        );
        assert!(
            HostPattern::parse("[::1]:5432")
                .unwrap()
                .allows("localhost", 5432)
        );
        for bad in ["", "a b", "db:99999", "db:0", "::1", "[::1"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
