//! `Storage` documents: S3 fields and defaults, endpoints, age recipients.

use std::path::PathBuf;

use super::*;

fn s3_storage(fields: &str) -> String {
    STORAGE.replace(
        "type: local\n  path: /var/lib/safepoint/backups",
        &format!("type: s3\n{fields}"),
    )
}

#[test]
fn s3_storage_loads_with_documented_defaults() {
    let text = s3_storage(
        "  bucket: backups\n  prefix: /prod/sp/\n  endpoint: http://127.0.0.1:9000\n  \
         credentials:\n    accessKeyIdFrom: {env: S3_KEY_ID}\n    secretAccessKeyFrom: {file: /run/secrets/s3}",
    );
    let state = load(&[file("s.yaml", &text)]).unwrap_or_else(|d| panic!("{}", render(&d)));
    assert_eq!(
        state.storages["primary"].kind,
        StorageKind::S3 {
            bucket: "backups".into(),
            prefix: "prod/sp".into(),
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            path_style: true,
            allow_http: true,
            credentials: Some(S3Credentials {
                access_key_id_from: SecretRef::Env("S3_KEY_ID".into()),
                secret_access_key_from: SecretRef::File(PathBuf::from("/run/secrets/s3")),
            }),
        }
    );
    let aws = s3_storage("  bucket: backups\n  region: eu-central-1");
    let state = load(&[file("s.yaml", &aws)]).unwrap_or_else(|d| panic!("{}", render(&d)));
    assert!(matches!(
        &state.storages["primary"].kind,
        StorageKind::S3 {
            endpoint: None,
            path_style: false,
            allow_http: false,
            credentials: None,
            ..
        }
    ));
}

#[test]
fn s3_storage_needs_bucket_and_region_on_aws() {
    let diags = problems(&[file("s.yaml", &s3_storage("  prefix: x"))]);
    let text = render(&diags);
    assert!(text.contains("needs `bucket`"), "{text}");
    assert!(text.contains("needs `region`"), "{text}");
}

#[test]
fn s3_endpoint_must_not_hold_credentials_or_plain_http_off_loopback() {
    let diags = problems(&[file(
        "s.yaml",
        &s3_storage("  bucket: backups\n  endpoint: http://minio.internal:9000"),
    )]);
    let d = only(&diags, "s.yaml", 8, "plain http endpoint");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.contains("allowHttp: true"))
    );
    let explicit =
        s3_storage("  bucket: backups\n  endpoint: http://minio.internal:9000\n  allowHttp: true");
    assert!(load(&[file("s.yaml", &explicit)]).is_ok());
    let diags = problems(&[file(
        "s.yaml",
        &s3_storage("  bucket: backups\n  endpoint: https://AKIAXXX:hunter2@minio.internal"),
    )]);
    let d = only(&diags, "s.yaml", 8, "password is written inline");
    assert!(!d.message.contains("hunter2"));
    let diags = problems(&[file(
        "s.yaml",
        &s3_storage("  bucket: Bad_Bucket\n  region: x\n  path: /x"),
    )]);
    let text = render(&diags);
    assert!(text.contains("not a valid bucket name"), "{text}");
    assert!(
        text.contains("`path` does not apply to a `s3` storage"),
        "{text}"
    );
}

#[test]
fn invalid_age_recipient_is_reported() {
    let text = STORAGE.replace("age1ql3z7hjy54", "age1ql3z7hjy55");
    let diags = problems(&[file("s.yaml", &text)]);
    only(&diags, "s.yaml", 9, "invalid age public key");
}
