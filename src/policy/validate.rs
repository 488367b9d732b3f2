//! Pure: semantic checks of one raw document and its conversion into the typed
//! model. Every problem becomes a `Diagnostic` located at the offending value;
//! checks never stop at the first problem.

use std::path::PathBuf;
use std::str::FromStr;

use chrono::TimeDelta;

use super::Diagnostic;
use super::duration::parse_duration;
use super::model::{self, SecretRef};
use super::raw;
use super::schema::display_path;
use super::suggest::closest;
use super::url;
use super::yaml::{Locations, Pos};

/// Where diagnostics of one document go.
pub(crate) struct Sink<'a> {
    pub file: &'a str,
    pub locs: &'a Locations,
    pub diags: &'a mut Vec<Diagnostic>,
}

impl Sink<'_> {
    pub fn at(&mut self, pos: Pos, message: String, hint: Option<String>) {
        self.diags.push(Diagnostic {
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.col,
            message,
            hint,
        });
    }

    /// A problem with the value at `ptr`.
    pub fn err(&mut self, ptr: &str, message: String, hint: impl Into<Option<String>>) {
        let pos = self.locs.value(ptr);
        self.at(pos, message, hint.into());
    }

    /// A problem with the member at `ptr` as a whole (located at its key).
    pub fn err_key(&mut self, ptr: &str, message: String, hint: impl Into<Option<String>>) {
        let pos = self.locs.key(ptr);
        self.at(pos, message, hint.into());
    }
}

pub(crate) const API_VERSION: &str = "safepoint/v1";
const CRON_HINT: &str = "use 5 fields `minute hour day-of-month month day-of-week` \
                         (or 6 with seconds first), e.g. `0 */6 * * *` = every 6 hours";

pub(crate) fn api_version(sink: &mut Sink<'_>, v: &str) {
    if v != API_VERSION {
        sink.err(
            "/apiVersion",
            format!("unsupported apiVersion `{v}`"),
            format!("set `apiVersion: {API_VERSION}`"),
        );
    }
}

/// DNS-label: lowercase alphanumerics and `-`, not at the ends, at most 63.
pub(crate) fn name(sink: &mut Sink<'_>, name: &str) -> bool {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        let suggestion: String = name
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let suggestion = suggestion.trim_matches('-');
        sink.err(
            "/metadata/name",
            format!("invalid name `{name}`: not a DNS label"),
            format!(
                "use lowercase letters, digits and `-` (not first or last), at most 63 \
                 characters, e.g. `{}`",
                if suggestion.is_empty() {
                    "orders-db"
                } else {
                    suggestion
                }
            ),
        );
    }
    ok
}

pub(crate) fn notifier(
    sink: &mut Sink<'_>,
    name: &str,
    spec: raw::NotifierSpec,
) -> Option<model::NotifierSpec> {
    let mut ok = true;
    if spec.email.is_none() && spec.webhook.is_none() {
        sink.err_key(
            "/spec",
            "notifier has neither `email` nor `webhook`".to_owned(),
            "add `email: {to: [oncall@example.com]}` or `webhook: {url: https://...}`".to_owned(),
        );
        ok = false;
    }
    let email = spec.email.map(|e| {
        if e.to.is_empty() {
            ok = false;
            sink.err_key(
                "/spec/email/to",
                "email notifier has no recipient".to_owned(),
                "list at least one address in `to`".to_owned(),
            );
        }
        for (i, addr) in e.to.iter().enumerate() {
            ok &= email_address(sink, &format!("/spec/email/to/{i}"), addr);
        }
        if let Some(from) = &e.from {
            ok &= email_address(sink, "/spec/email/from", from);
        }
        model::EmailNotifier {
            to: e.to,
            from: e.from,
        }
    });
    let webhook = spec.webhook.map(|w| {
        match url::parse(&w.url) {
            Some(u) if (u.scheme == "https" || u.scheme == "http") && !u.host.is_empty() => {}
            _ => {
                ok = false;
                sink.err(
                    "/spec/webhook/url",
                    "webhook url is not an http(s) URL".to_owned(),
                    "write it like `https://hooks.example.com/safepoint`".to_owned(),
                );
            }
        }
        let secret_from = w
            .secret_from
            .and_then(|s| secret_ref(sink, "/spec/webhook/secretFrom", s, &mut ok));
        model::WebhookNotifier {
            url: w.url,
            secret_from,
            format: match w.format {
                Some(raw::WebhookFormat::Slack) => model::WebhookFormat::Slack,
                Some(raw::WebhookFormat::Json) | None => model::WebhookFormat::Json,
            },
        }
    });
    ok.then(|| model::NotifierSpec {
        name: name.to_owned(),
        email,
        webhook,
    })
}

fn email_address(sink: &mut Sink<'_>, ptr: &str, addr: &str) -> bool {
    let ok = matches!(addr.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !addr.contains(char::is_whitespace));
    if !ok {
        sink.err(
            ptr,
            format!("`{addr}` is not an email address"),
            "write it like `oncall@example.com`".to_owned(),
        );
    }
    ok
}

/// `{env: NAME}` or `{file: PATH}`, exactly one.
pub(crate) fn secret_ref(
    sink: &mut Sink<'_>,
    ptr: &str,
    s: raw::SecretFrom,
    ok: &mut bool,
) -> Option<SecretRef> {
    let field = ptr.rsplit('/').next().unwrap_or_default();
    match (s.env, s.file) {
        (Some(env), None) => {
            let valid = env
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                *ok = false;
                sink.err(
                    &format!("{ptr}/env"),
                    format!("`{env}` is not an environment variable name"),
                    "use letters, digits and `_`, e.g. `ORDERS_DB_PASSWORD`".to_owned(),
                );
                return None;
            }
            Some(SecretRef::Env(env))
        }
        (None, Some(file)) => {
            if !file.starts_with('/') {
                *ok = false;
                sink.err(
                    &format!("{ptr}/file"),
                    format!("secret file `{file}` is not an absolute path"),
                    "write the full path, e.g. `/run/secrets/orders`".to_owned(),
                );
                return None;
            }
            Some(SecretRef::File(PathBuf::from(file)))
        }
        (env, _) => {
            *ok = false;
            let what = if env.is_some() {
                "both `env` and `file`"
            } else {
                "neither `env` nor `file`"
            };
            sink.err_key(
                ptr,
                format!("`{field}` has {what}"),
                format!("write exactly one: `{field}: {{env: NAME}}` or `{field}: {{file: PATH}}`"),
            );
            None
        }
    }
}

pub(crate) fn does_not_apply(
    sink: &mut Sink<'_>,
    base: &str,
    field: &str,
    kind: &str,
    what: &str,
    uses: &str,
) {
    sink.err_key(
        &format!("{base}/{field}"),
        format!("`{field}` does not apply to a `{kind}` {what}"),
        format!("remove it; a `{kind}` {what} uses {uses}"),
    );
}

pub(crate) fn schedule(
    sink: &mut Sink<'_>,
    ptr: &str,
    s: raw::ScheduleSpec,
) -> Option<model::Schedule> {
    let cron_ok = cron(sink, &format!("{ptr}/cron"), &s.cron);
    let tz = timezone(
        sink,
        &format!("{ptr}/timezone"),
        s.timezone.as_deref().unwrap_or("UTC"),
    );
    Some(model::Schedule {
        cron: s.cron,
        timezone: tz?,
    })
    .filter(|_| cron_ok)
}

fn cron(sink: &mut Sink<'_>, ptr: &str, expr: &str) -> bool {
    let fields = expr.split_whitespace().count();
    let result = if expr.trim_start().starts_with('@') || fields == 5 || fields == 6 {
        croner::Cron::from_str(expr)
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        Err(format!("expected 5 or 6 fields, found {fields}"))
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            sink.err(
                ptr,
                format!(
                    "invalid cron expression `{expr}`: {}",
                    e.trim_end_matches('.')
                ),
                CRON_HINT.to_owned(),
            );
            false
        }
    }
}

fn timezone(sink: &mut Sink<'_>, ptr: &str, name: &str) -> Option<chrono_tz::Tz> {
    match name.parse::<chrono_tz::Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
            let hint = match closest(name, &names) {
                Some(c) => format!("did you mean `{c}`?"),
                None => "use an IANA time zone name such as `UTC` or `Europe/Berlin`".to_owned(),
            };
            sink.err(ptr, format!("unknown time zone `{name}`"), hint);
            None
        }
    }
}

/// `Ok(None)` when absent, `Err(())` when reported as invalid.
pub(crate) fn duration(
    sink: &mut Sink<'_>,
    ptr: &str,
    text: Option<&str>,
) -> Result<Option<TimeDelta>, ()> {
    match text.map(parse_duration) {
        None => Ok(None),
        Some(Ok(d)) => Ok(Some(d)),
        Some(Err(e)) => {
            let (message, hint) = match e.split_once(": ") {
                Some((m, h)) => (m.to_owned(), h.to_owned()),
                None => (e, String::new()),
            };
            sink.err(ptr, format!("{message} in `{}`", display_path(ptr)), hint);
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_are_checked() {
        let locs = Locations::default();
        let mut diags = Vec::new();
        let mut sink = Sink {
            file: "f",
            locs: &locs,
            diags: &mut diags,
        };
        assert!(name(&mut sink, "orders-db"));
        assert!(name(&mut sink, "a1"));
        assert!(!name(&mut sink, "Orders_DB"));
        assert!(!name(&mut sink, "-x"));
        assert!(!name(&mut sink, &"a".repeat(64)));
        assert_eq!(
            diags[0]
                .hint
                .as_deref()
                .map(|h| h.ends_with("e.g. `orders-db`")),
            Some(true)
        );
    }
}
