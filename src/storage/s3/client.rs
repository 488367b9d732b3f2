//! IO: the S3 client of one storage, built from its declaration: endpoint
//! style, retries and timeouts, credentials read from their references.

use std::sync::Arc;
use std::time::Duration;

use object_store::ClientOptions;
use object_store::aws::AmazonS3Builder;

use super::{S3Config, S3Options, S3Storage};
use crate::policy::SecretRef;
use crate::storage::StorageError;
use crate::storage::s3_error::Target;

impl S3Storage {
    /// Builds the client (no request is made). Fails on unreadable
    /// credential references or an unusable configuration.
    pub fn new(config: S3Config, options: S3Options) -> Result<S3Storage, StorageError> {
        // reqwest is built without a default TLS provider: use ring (`cli::main`
        // installs it too; an already installed provider stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let name = config.name.clone();
        let endpoint = request_endpoint(&config);
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_retry(options.retry.clone())
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(options.request_timeout),
            );
        if let Some(e) = &endpoint {
            builder = builder.with_endpoint(e);
        }
        if let Some(c) = &config.credentials {
            builder = builder
                .with_access_key_id(secret(&name, "access key id", &c.access_key_id_from)?)
                .with_secret_access_key(secret(
                    &name,
                    "secret access key",
                    &c.secret_access_key_from,
                )?);
        }
        let target = Target {
            storage: name.clone(),
            bucket: config.bucket.clone(),
            endpoint: config.endpoint.clone(),
        };
        let store = builder.build().map_err(|e| StorageError::Config {
            storage: name.clone(),
            message: format!(
                "cannot configure S3 client for bucket {}: {e}",
                config.bucket
            ),
            hint: "check bucket, region and endpoint in the Storage document".into(),
        })?;
        Ok(S3Storage {
            store: Arc::new(store),
            target,
            prefix: config
                .prefix
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            options,
        })
    }
}

/// The endpoint requests go to: the declared one, with the bucket in the
/// host for virtual-hosted style (`None` = AWS).
fn request_endpoint(config: &S3Config) -> Option<String> {
    match (&config.endpoint, config.path_style) {
        (Some(e), false) => Some(match e.split_once("://") {
            Some((scheme, host)) => format!("{scheme}://{}.{host}", config.bucket),
            None => e.clone(),
        }),
        (e, _) => e.clone(),
    }
}

/// The value a credential reference points at.
fn secret(storage: &str, what: &str, r: &SecretRef) -> Result<String, StorageError> {
    let config = |message: String, hint: &str| StorageError::Config {
        storage: storage.to_string(),
        message,
        hint: hint.to_string(),
    };
    match r {
        SecretRef::Env(name) => std::env::var(name).map_err(|_| {
            config(
                format!("the {what} comes from environment variable {name}, which is not set"),
                "set it in the daemon's environment",
            )
        }),
        SecretRef::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| {
                config(
                    format!("cannot read the {what} from {}: {e}", path.display()),
                    "check that the file exists and the daemon may read it",
                )
            }),
    }
}
