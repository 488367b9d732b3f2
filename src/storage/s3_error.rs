//! IO support: turns object_store errors into `StorageError::Remote` with a
//! bounded class and a hint naming bucket, endpoint and what to do.

use object_store::path::Path;

use super::StorageError;

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

/// Classifies `e` (`auth`, `no-bucket`, `not-found`, `unreachable`, `remote`)
/// and says what to do about it.
pub fn remote(t: &Target, op: &'static str, key: &Path, e: object_store::Error) -> StorageError {
    let text = format!("{e:?} {e}");
    let (class, hint) = if text.contains("NoSuchBucket") {
        (
            "no-bucket",
            format!(
                "bucket {} does not exist on {}; create it (e.g. `aws s3 mb s3://{}`) or fix \
                 spec.bucket/spec.endpoint",
                t.bucket,
                t.endpoint(),
                t.bucket
            ),
        )
    } else if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "403 Forbidden",
    ]
    .iter()
    .any(|w| text.contains(w))
    {
        (
            "auth",
            format!(
                "{} refused the credentials for bucket {}; check the access key \
                 (spec.credentials, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and that it may \
                 list, read, write and delete in the bucket",
                t.endpoint(),
                t.bucket
            ),
        )
    } else if matches!(e, object_store::Error::NotFound { .. }) {
        (
            "not-found",
            format!("the object is gone from bucket {}", t.bucket),
        )
    } else if [
        "error sending request",
        "Connection refused",
        "connect",
        "dns error",
        "timed out",
    ]
    .iter()
    .any(|w| text.contains(w))
    {
        (
            "unreachable",
            format!(
                "cannot reach {}; check spec.endpoint, the network and that the server runs \
                 (the next cycle retries)",
                t.endpoint()
            ),
        )
    } else {
        (
            "remote",
            format!(
                "request to {} for bucket {} failed; the next cycle retries",
                t.endpoint(),
                t.bucket
            ),
        )
    };
    StorageError::Remote {
        storage: t.storage.clone(),
        op,
        target: format!("s3://{}/{key}", t.bucket),
        class,
        hint,
        source: Box::new(e),
    }
}
