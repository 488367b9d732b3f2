//! Pure: semantic checks of a `Storage` document (local directory or S3) and
//! its encryption recipients, turning it into the typed model.

use std::path::PathBuf;
use std::str::FromStr;

use super::model;
use super::raw;
use super::url;
use super::validate::{Sink, does_not_apply, secret_ref};

pub(crate) fn storage(
    sink: &mut Sink<'_>,
    name: &str,
    spec: raw::StorageSpec,
) -> Option<model::StorageSpec> {
    let mut ok = true;
    let encryption = spec.encryption.clone();
    let kind = match spec.kind {
        raw::StorageType::S3 => s3(sink, spec, &mut ok),
        raw::StorageType::Local => local(sink, spec, &mut ok),
    };
    let mut age_recipients = Vec::new();
    for (i, r) in encryption
        .map(|e| e.age_recipients)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let ptr = format!("/spec/encryption/ageRecipients/{i}");
        if r.starts_with("AGE-SECRET-KEY-") {
            ok = false; // reported by the inline-secret scan
        } else if r.starts_with("age1") {
            if let Err(e) = age::x25519::Recipient::from_str(&r) {
                ok = false;
                sink.err(
                    &ptr,
                    format!("invalid age public key: {e}"),
                    "copy the `age1...` line `age-keygen -y key.txt` prints".to_owned(),
                );
            } else {
                age_recipients.push(r);
            }
        } else if r.starts_with("ssh-ed25519 ") || r.starts_with("ssh-rsa ") {
            if age::ssh::Recipient::from_str(&r).is_err() {
                ok = false;
                sink.err(
                    &ptr,
                    "invalid ssh public key".to_owned(),
                    "copy the whole line of the `.pub` file (`ssh-ed25519 AAAA...`)".to_owned(),
                );
            } else {
                age_recipients.push(r);
            }
        } else {
            ok = false;
            sink.err(
                &ptr,
                "not an age recipient".to_owned(),
                "use an age public key (`age1...`) or an ssh public key (`ssh-ed25519 ...`)"
                    .to_owned(),
            );
        }
    }
    Some(model::StorageSpec {
        name: name.to_owned(),
        kind: kind.filter(|_| ok)?,
        age_recipients,
    })
}

fn local(sink: &mut Sink<'_>, spec: raw::StorageSpec, ok: &mut bool) -> Option<model::StorageKind> {
    for (field, present) in [
        ("bucket", spec.bucket.is_some()),
        ("prefix", spec.prefix.is_some()),
        ("region", spec.region.is_some()),
        ("endpoint", spec.endpoint.is_some()),
        ("pathStyle", spec.path_style.is_some()),
        ("allowHttp", spec.allow_http.is_some()),
        ("credentials", spec.credentials.is_some()),
    ] {
        if present {
            *ok = false;
            does_not_apply(sink, "/spec", field, "local", "storage", "path");
        }
    }
    match spec.path {
        // Relative paths resolve against the daemon's working directory.
        Some(p) if !p.trim().is_empty() => Some(model::StorageKind::Local {
            path: PathBuf::from(p),
        }),
        Some(_) => {
            sink.err(
                "/spec/path",
                "storage path is empty".to_owned(),
                "write a directory, e.g. `/var/lib/safepoint/backups`".to_owned(),
            );
            None
        }
        None => {
            sink.err_key(
                "/spec",
                "`local` storage needs `path`".to_owned(),
                "add `path: /var/lib/safepoint/backups`".to_owned(),
            );
            None
        }
    }
}

fn s3(sink: &mut Sink<'_>, spec: raw::StorageSpec, ok: &mut bool) -> Option<model::StorageKind> {
    if spec.path.is_some() {
        *ok = false;
        does_not_apply(
            sink,
            "/spec",
            "path",
            "s3",
            "storage",
            "bucket, prefix, region, endpoint",
        );
    }
    let bucket = bucket(sink, spec.bucket);
    let prefix = prefix(sink, spec.prefix.unwrap_or_default(), ok);
    let has_endpoint = spec.endpoint.is_some();
    let endpoint = spec
        .endpoint
        .and_then(|e| endpoint(sink, &e, spec.allow_http.unwrap_or(false), ok));
    let region = region(sink, spec.region, has_endpoint);
    let credentials = spec.credentials.and_then(|c| credentials(sink, c, ok));
    Some(model::StorageKind::S3 {
        bucket: bucket?,
        prefix: prefix?,
        region: region?,
        path_style: spec.path_style.unwrap_or(endpoint.is_some()),
        allow_http: endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://")),
        endpoint,
        credentials,
    })
}

/// A bucket name every S3-compatible store accepts.
fn bucket(sink: &mut Sink<'_>, bucket: Option<String>) -> Option<String> {
    match bucket {
        Some(b) if bucket_name_ok(&b) => Some(b),
        Some(b) => {
            sink.err(
                "/spec/bucket",
                format!("`{b}` is not a valid bucket name"),
                "use 3-63 lowercase letters, digits, `-` and `.`, starting and ending with a \
                 letter or digit"
                    .to_owned(),
            );
            None
        }
        None => {
            sink.err_key(
                "/spec",
                "`s3` storage needs `bucket`".to_owned(),
                "add `bucket: my-backups`".to_owned(),
            );
            None
        }
    }
}

/// The key prefix without leading or trailing `/`, when every part of it
/// is a usable name.
fn prefix(sink: &mut Sink<'_>, prefix: String, ok: &mut bool) -> Option<String> {
    let trimmed = prefix.trim_matches('/');
    let usable = trimmed.is_empty()
        || trimmed
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\\'));
    if usable {
        return Some(trimmed.to_owned());
    }
    *ok = false;
    sink.err(
        "/spec/prefix",
        format!("`{prefix}` is not a usable key prefix"),
        "use `/`-separated names without empty, `.` or `..` parts, e.g. `prod/safepoint`"
            .to_owned(),
    );
    None
}

/// The bucket's region; on an S3-compatible endpoint it may be left out.
fn region(sink: &mut Sink<'_>, region: Option<String>, has_endpoint: bool) -> Option<String> {
    match (region, has_endpoint) {
        (Some(r), _) if !r.trim().is_empty() => Some(r),
        (Some(_), _) => {
            sink.err(
                "/spec/region",
                "region is empty".to_owned(),
                "write the bucket's region, e.g. `eu-central-1`".to_owned(),
            );
            None
        }
        // S3-compatible stores mostly ignore the region but SigV4 needs one.
        (None, true) => Some("us-east-1".to_owned()),
        (None, false) => {
            sink.err_key(
                "/spec",
                "`s3` storage on AWS needs `region`".to_owned(),
                "add the bucket's region, e.g. `region: eu-central-1` (or an `endpoint` for an \
                 S3-compatible store)"
                    .to_owned(),
            );
            None
        }
    }
}

/// Both keys as references (never inline).
fn credentials(
    sink: &mut Sink<'_>,
    c: raw::S3Credentials,
    ok: &mut bool,
) -> Option<model::S3Credentials> {
    let id = secret_ref(
        sink,
        "/spec/credentials/accessKeyIdFrom",
        c.access_key_id_from,
        ok,
    );
    let key = secret_ref(
        sink,
        "/spec/credentials/secretAccessKeyFrom",
        c.secret_access_key_from,
        ok,
    );
    Some(model::S3Credentials {
        access_key_id_from: id?,
        secret_access_key_from: key?,
    })
}

/// `http(s)://host[:port]` without credentials, path or query. Plain HTTP
/// only on loopback unless `allowHttp: true` says so explicitly.
fn endpoint(sink: &mut Sink<'_>, e: &str, allow_http: bool, ok: &mut bool) -> Option<String> {
    const PTR: &str = "/spec/endpoint";
    let Some(u) = url::parse(e).filter(|u| !u.host.is_empty()) else {
        *ok = false;
        sink.err(
            PTR,
            "endpoint is not an http(s) URL".to_owned(),
            "write it like `https://minio.internal:9000`".to_owned(),
        );
        return None;
    };
    let mut fail = |message: String, hint: &str| {
        sink.err(PTR, message, hint.to_owned());
        None
    };
    if u.user.is_some() {
        // The inline-secret scan reports a password; a bare user is still wrong here.
        *ok = false;
        return if u.password.is_some() {
            None
        } else {
            fail(
                "the endpoint URL holds a user name".to_owned(),
                "remove it and give the access key with `credentials.accessKeyIdFrom`",
            )
        };
    }
    if !(u.path.is_empty() || u.path == "/") || !u.query.is_empty() || e.contains('#') {
        *ok = false;
        return fail(
            "the endpoint URL has a path, query or fragment".to_owned(),
            "write only scheme, host and port, e.g. `https://minio.internal:9000`; put key \
             prefixes in `prefix`",
        );
    }
    match u.scheme {
        "https" => {}
        "http" if allow_http || is_loopback(u.host) => {}
        "http" => {
            *ok = false;
            return fail(
                format!("plain http endpoint `{e}` is not on loopback"),
                "use https, or set `allowHttp: true` if the network path is trusted",
            );
        }
        other => {
            *ok = false;
            return fail(
                format!("endpoint scheme `{other}` is not http or https"),
                "write it like `https://minio.internal:9000`",
            );
        }
    }
    Some(e.trim_end_matches('/').to_owned())
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host == "::1"
        || host
            .parse::<core::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// S3 bucket naming rules (the common subset every S3-compatible store accepts).
fn bucket_name_ok(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !b.contains("..")
}
