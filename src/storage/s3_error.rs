//! IO support: turns object_store errors into `StorageError::Remote` with a
//! bounded class and a hint naming bucket, endpoint and what to do.

use object_store::path::Path;

use super::StorageError;

/// A failed request to a remote store, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("storage {storage}: cannot {op} {target}: {detail}; {hint}")]
pub struct RemoteError {
    pub storage: String,
    pub op: &'static str,
    /// `s3://bucket/key`.
    pub target: String,
    /// Bounded: its label is `auth`, `no-bucket`, `not-found`, `unreachable`
    /// or `remote`.
    pub class: RemoteClass,
    /// What the server said, short (the full error is the source).
    pub detail: String,
    pub hint: String,
    #[source]
    pub source: object_store::Error,
}

/// Which bucket on which endpoint, for messages.
#[derive(Debug, Clone)]
pub struct Target {
    pub storage: String,
    pub bucket: String,
    /// `None` = AWS.
    pub endpoint: Option<String>,
}

impl Target {
    fn endpoint(&self) -> &str {
        self.endpoint.as_deref().unwrap_or("AWS S3")
    }
}

/// What kind of failure a remote request met: a bounded label (metrics,
/// retry decisions) and the hint that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteClass {
    /// The bucket does not exist on the endpoint.
    NoBucket,
    /// No credentials at all: none configured and no instance or task role.
    NoCredentials,
    /// The endpoint refused the credentials given.
    Refused,
    /// The object is gone.
    NotFound,
    /// The endpoint did not answer.
    Unreachable,
    /// Anything else the endpoint answered.
    Remote,
}

impl RemoteClass {
    /// `no-bucket`, `auth`, `not-found`, `unreachable` or `remote`.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteClass::NoBucket => "no-bucket",
            RemoteClass::NoCredentials | RemoteClass::Refused => "auth",
            RemoteClass::NotFound => "not-found",
            RemoteClass::Unreachable => "unreachable",
            RemoteClass::Remote => "remote",
        }
    }

    /// The class of `e`, whose debug and display text is `text`.
    fn of(e: &object_store::Error, text: &str) -> RemoteClass {
        let any = |words: &[&str]| words.iter().any(|w| text.contains(w));
        if text.contains("NoSuchBucket") {
            RemoteClass::NoBucket
        } else if any(&["169.254.169.254", "169.254.170.2"]) {
            RemoteClass::NoCredentials
        } else if matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || any(&[
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "403 Forbidden",
        ]) {
            RemoteClass::Refused
        } else if matches!(e, object_store::Error::NotFound { .. }) {
            RemoteClass::NotFound
        } else if any(&[
            "error sending request",
            "Connection refused",
            "connect",
            "dns error",
            "timed out",
        ]) {
            RemoteClass::Unreachable
        } else {
            RemoteClass::Remote
        }
    }

    /// What to do about it, naming the bucket and the endpoint.
    fn hint(self, t: &Target) -> String {
        match self {
            RemoteClass::NoBucket => format!(
                "bucket {} does not exist on {}; create it (e.g. `aws s3 mb s3://{}`) or fix \
                 spec.bucket/spec.endpoint",
                t.bucket,
                t.endpoint(),
                t.bucket
            ),
            RemoteClass::NoCredentials => format!(
                "no S3 credentials for bucket {}: the Storage has no `credentials`, \
                 AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set and no instance or task \
                 role answered; set one of them",
                t.bucket
            ),
            RemoteClass::Refused => format!(
                "{} refused the credentials for bucket {}; check the access key \
                 (spec.credentials, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and that it may \
                 list, read, write and delete in the bucket",
                t.endpoint(),
                t.bucket
            ),
            RemoteClass::NotFound => format!("the object is gone from bucket {}", t.bucket),
            RemoteClass::Unreachable => format!(
                "cannot reach {}; check spec.endpoint, the network and that the server runs \
                 (the next cycle retries)",
                t.endpoint()
            ),
            RemoteClass::Remote => format!(
                "request to {} for bucket {} failed; the next cycle retries",
                t.endpoint(),
                t.bucket
            ),
        }
    }
}

/// Classifies `e` (`RemoteClass`) and says what to do about it.
pub fn remote(t: &Target, op: &'static str, key: &Path, e: object_store::Error) -> StorageError {
    let text = format!("{e:?} {e}");
    let class = RemoteClass::of(&e, &text);
    StorageError::Remote(Box::new(RemoteError {
        storage: t.storage.clone(),
        op,
        target: format!("s3://{}/{key}", t.bucket),
        class,
        detail: detail(&text, e.to_string()),
        hint: class.hint(t),
        source: e,
    }))
}

/// The S3 error code and HTTP status when the server sent them (short and
/// to the point), else object_store's own message.
fn detail(text: &str, display: String) -> String {
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code);
    let status = text
        .split_once("status code: ")
        .or_else(|| text.split_once("status: "))
        .map(|(_, rest)| {
            rest.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
        .filter(|s| !s.is_empty());
    match (code, status) {
        (Some(code), Some(status)) => format!("the server answered {code} (HTTP {status})"),
        (Some(code), None) => format!("the server answered {code}"),
        _ => display,
    }
}

#[cfg(test)]
mod tests {
    use super::detail;

    #[test]
    fn s3_error_codes_are_extracted_from_the_response() {
        let text = "Generic { .. } Error performing GET http://h/b in 4ms - Server returned \
                    non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error>\
                    <Code>SignatureDoesNotMatch</Code></Error>";
        assert_eq!(
            detail(text, String::new()),
            "the server answered SignatureDoesNotMatch (HTTP 403)"
        );
    }
}
