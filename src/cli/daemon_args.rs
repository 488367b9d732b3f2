//! The daemon's flags: replicas (leases), the HTTP listener and SMTP alerting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chrono::TimeDelta;
use clap::Args;

use crate::daemon::Options;
use crate::notify::{Mailer, SmtpSettings, SmtpTls};

/// Several replicas on one PostgreSQL catalog (`--catalog postgres://…`):
/// every daemon on the same catalog is a replica; policies are spread over
/// the live ones through leases. A SQLite catalog is one node.
#[derive(Debug, Args)]
pub struct ReplicaArgs {
    /// This replica's name among those sharing the catalog
    /// [default: kept in <data-dir>/replica-id, created as HOSTNAME-RANDOM].
    #[arg(long, env = "SAFEPOINT_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Seconds a lease lives without renewal: a dead replica's policies are
    /// taken over within 4/3 of it; renewals run every third of it.
    #[arg(long, env = "SAFEPOINT_LEASE_TTL", default_value_t = 15)]
    pub lease_ttl: u64,
}

impl ReplicaArgs {
    /// The lease settings on a PostgreSQL catalog; `None` on SQLite.
    pub fn config(
        &self,
        backend: crate::catalog::Backend,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Option<crate::replica::ReplicaConfig>> {
        if backend != crate::catalog::Backend::Postgres {
            if self.replica_id.is_some() {
                anyhow::bail!(
                    "--replica-id needs a shared PostgreSQL catalog (--catalog postgres://…); a SQLite catalog serves one node"
                );
            }
            return Ok(None);
        }
        if self.lease_ttl < 3 {
            anyhow::bail!(
                "--lease-ttl must be at least 3 seconds (renewals run every third of it)"
            );
        }
        let id = crate::replica::replica_id(self.replica_id.as_deref(), data_dir)
            .with_context(|| format!("cannot keep the replica id in {}", data_dir.display()))?;
        Ok(Some(crate::replica::ReplicaConfig {
            id,
            ttl: Duration::from_secs(self.lease_ttl),
        }))
    }
}

#[derive(Debug, Args)]
pub struct ObservabilityArgs {
    /// Address of the HTTP API (/metrics, /healthz, /readyz, /api/v1/...).
    /// Not opened with --once.
    #[arg(long, env = "SAFEPOINT_LISTEN", default_value = "127.0.0.1:9187")]
    pub listen: SocketAddr,
    /// Bearer tokens for the mutating API: a file of `name token` lines
    /// (tokens of at least 16 characters). Without it, mutating calls get 401.
    #[arg(long, env = "SAFEPOINT_API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,
    /// Secret of the Git push webhook (`POST /api/v1/hooks/git`, GitHub's
    /// X-Hub-Signature-256). Without it, the webhook answers 401.
    #[arg(long, env = "SAFEPOINT_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    #[command(flatten)]
    pub smtp: SmtpArgs,
    /// Seconds between looks for alert notices queued by another process
    /// (e.g. a local `deploy finish`); notices the daemon queues itself are
    /// sent at once.
    #[arg(long, env = "SAFEPOINT_OUTBOX_POLL", default_value_t = 60)]
    pub outbox_poll: u64,
    /// Re-notify a problem that persists after this many seconds (0 = never).
    #[arg(long, env = "SAFEPOINT_ALERT_REMINDER", default_value_t = 86_400)]
    pub alert_reminder: i64,
}

impl ObservabilityArgs {
    /// The daemon's secret files: no policy may read them.
    pub fn secret_files(&self) -> Vec<(Option<PathBuf>, &'static str)> {
        vec![
            (self.api_tokens_file.clone(), "API tokens file"),
            (self.webhook_secret_file.clone(), "webhook secret file"),
            (self.smtp.smtp_password_file.clone(), "SMTP password file"),
        ]
    }

    pub fn options(&self, once: bool) -> anyhow::Result<Options> {
        let mailer = self.smtp.mailer()?;
        let tokens = match &self.api_tokens_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --api-tokens-file {}", path.display()))?;
                crate::http::api::parse_tokens(&text)
                    .map_err(|e| anyhow::anyhow!("--api-tokens-file {}: {e}", path.display()))?
            }
            None => Vec::new(),
        };
        let webhook_secret = match &self.webhook_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| {
                        format!("cannot read --webhook-secret-file {}", path.display())
                    })?
                    .trim()
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        };
        Ok(Options {
            listen: (!once).then_some(self.listen),
            mailer,
            reminder: TimeDelta::seconds(self.alert_reminder.max(0)),
            outbox_poll: Duration::from_secs(self.outbox_poll.max(1)),
            plan: crate::plan::PlanOptions::default(),
            permissions: std::sync::Arc::new(crate::policy::Permissions::single_team()),
            auth: std::sync::Arc::new(crate::http::api::Auth::new(tokens, webhook_secret)),
            replica: None,
        })
    }
}

/// SMTP settings (daemon and `notify test`).
#[derive(Debug, Args)]
pub struct SmtpArgs {
    /// SMTP server for alert mails; without it no mail is sent.
    #[arg(long, env = "SAFEPOINT_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP port [default: 587 for starttls, 465 for tls, 25 for none].
    #[arg(long, env = "SAFEPOINT_SMTP_PORT")]
    pub smtp_port: Option<u16>,
    /// How the SMTP connection is secured; `none` (plaintext) only for a
    /// trusted local relay.
    #[arg(long, env = "SAFEPOINT_SMTP_TLS", value_enum, default_value_t = SmtpTls::Starttls)]
    pub smtp_tls: SmtpTls,
    /// SMTP user name (AUTH); the password comes from --smtp-password-file
    /// or SAFEPOINT_SMTP_PASSWORD.
    #[arg(long, env = "SAFEPOINT_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// File holding the SMTP password (trailing newline ignored).
    #[arg(long, env = "SAFEPOINT_SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,
    /// Sender address when a Notifier sets no email.from.
    #[arg(long, env = "SAFEPOINT_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// PEM file of CA certificates trusted for the SMTP server's TLS
    /// certificate, in addition to the public roots (a private CA or a
    /// self-signed relay certificate).
    #[arg(long, env = "SAFEPOINT_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// Seconds one delivery attempt of one mail may take (connect, TLS,
    /// greeting, send); a mail that times out stays queued and is retried.
    #[arg(long, env = "SAFEPOINT_SMTP_TIMEOUT", default_value_t = 10)]
    pub smtp_timeout: u64,
}

impl SmtpArgs {
    /// The configured mailer; `None` without --smtp-host.
    pub fn mailer(&self) -> anyhow::Result<Option<Mailer>> {
        Ok(match &self.smtp_host {
            None => None,
            Some(host) => {
                let password = match &self.smtp_password_file {
                    Some(path) => Some(
                        std::fs::read_to_string(path)
                            .with_context(|| {
                                format!("cannot read --smtp-password-file {}", path.display())
                            })?
                            .trim_end_matches(['\r', '\n'])
                            .to_string(),
                    ),
                    None => std::env::var("SAFEPOINT_SMTP_PASSWORD").ok(),
                };
                let ca_pem = match &self.smtp_ca_file {
                    Some(path) => Some(std::fs::read(path).with_context(|| {
                        format!("cannot read --smtp-ca-file {}", path.display())
                    })?),
                    None => None,
                };
                if ca_pem.is_some() && self.smtp_tls == SmtpTls::None {
                    anyhow::bail!("--smtp-ca-file needs --smtp-tls starttls or tls");
                }
                if password.is_some() && self.smtp_username.is_none() {
                    anyhow::bail!("an SMTP password is set but no --smtp-username");
                }
                Some(Mailer::new(SmtpSettings {
                    host: host.clone(),
                    port: self.smtp_port.unwrap_or(self.smtp_tls.default_port()),
                    tls: self.smtp_tls,
                    username: self.smtp_username.clone(),
                    password,
                    ca_pem,
                    from: self.smtp_from.clone(),
                    timeout: Duration::from_secs(self.smtp_timeout.max(1)),
                })?)
            }
        })
    }
}
