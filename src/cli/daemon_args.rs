//! The daemon's observability flags: the HTTP listener and SMTP alerting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chrono::TimeDelta;
use clap::Args;

use crate::monitor::MonitorOptions;
use crate::notify::{Mailer, SmtpSettings, SmtpTls};

#[derive(Debug, Args)]
pub struct ObservabilityArgs {
    /// Address of the HTTP API (/metrics, /healthz, /readyz, /api/v1/...).
    /// Not opened with --once.
    #[arg(long, env = "SAFEPOINT_LISTEN", default_value = "127.0.0.1:9187")]
    pub listen: SocketAddr,
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
    /// Seconds to wait for the SMTP server per mail.
    #[arg(long, env = "SAFEPOINT_SMTP_TIMEOUT", default_value_t = 10)]
    pub smtp_timeout: u64,
    /// Re-notify a problem that persists after this many seconds (0 = never).
    #[arg(long, env = "SAFEPOINT_ALERT_REMINDER", default_value_t = 86_400)]
    pub alert_reminder: i64,
}

impl ObservabilityArgs {
    pub fn options(&self, once: bool) -> anyhow::Result<MonitorOptions> {
        let mailer = match &self.smtp_host {
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
                if password.is_some() && self.smtp_username.is_none() {
                    anyhow::bail!("an SMTP password is set but no --smtp-username");
                }
                Some(Mailer::new(SmtpSettings {
                    host: host.clone(),
                    port: self.smtp_port.unwrap_or(self.smtp_tls.default_port()),
                    tls: self.smtp_tls,
                    username: self.smtp_username.clone(),
                    password,
                    from: self.smtp_from.clone(),
                    timeout: Duration::from_secs(self.smtp_timeout.max(1)),
                })?)
            }
        };
        Ok(MonitorOptions {
            listen: (!once).then_some(self.listen),
            mailer,
            reminder: TimeDelta::seconds(self.alert_reminder.max(0)),
        })
    }
}
