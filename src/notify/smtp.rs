//! IO: SMTP delivery through lettre. STARTTLS is required by default;
//! implicit TLS (`tls`, port 465) or plaintext (`none`, only for a local relay
//! configured explicitly) are opt-in. The password is read by the CLI from a
//! file or `SAFEPOINT_SMTP_PASSWORD` and never printed.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::NotifyError;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SmtpTls {
    /// Plaintext connection upgraded with STARTTLS; refuses servers without it.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// Plaintext, no TLS at all: only for a trusted local relay.
    None,
}

impl SmtpTls {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// The daemon's SMTP settings.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM CA certificates trusted besides the public roots (`--smtp-ca-file`).
    pub ca_pem: Option<Vec<u8>>,
    /// Sender when a notifier sets no `email.from`.
    pub from: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("from", &self.from)
            .finish()
    }
}

/// The `CERTIFICATE` blocks of a PEM file, each as its own PEM text.
fn pem_blocks(pem: &[u8]) -> Vec<Vec<u8>> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    text.split_inclusive(END)
        .filter_map(|chunk| {
            let start = chunk.find("-----BEGIN CERTIFICATE-----")?;
            chunk
                .ends_with(END)
                .then(|| chunk.as_bytes()[start..].to_vec())
        })
        .collect()
}

/// A configured SMTP transport (connects per send).
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    settings: SmtpSettings,
}

impl Mailer {
    pub fn new(settings: SmtpSettings) -> Result<Mailer, NotifyError> {
        let host = settings.host.as_str();
        let builder = match settings.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
        }
        .map_err(|source| NotifyError::Smtp {
            host: settings.host.clone(),
            permanent: true,
            source,
        })?;
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        if let Some(pem) = &settings.ca_pem {
            let smtp_err = |source| NotifyError::Smtp {
                host: settings.host.clone(),
                permanent: true,
                source,
            };
            let mut params = TlsParameters::builder(settings.host.clone());
            // Every certificate of the PEM file (a CA bundle) is trusted.
            for block in pem_blocks(pem) {
                params =
                    params.add_root_certificate(Certificate::from_pem(&block).map_err(smtp_err)?);
            }
            let params = params.build_rustls().map_err(smtp_err)?;
            builder = match settings.tls {
                SmtpTls::Starttls => builder.tls(Tls::Required(params)),
                SmtpTls::Tls => builder.tls(Tls::Wrapper(params)),
                SmtpTls::None => builder,
            };
        }
        if let Some(user) = &settings.username {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                settings.password.clone().unwrap_or_default(),
            ));
        }
        Ok(Mailer {
            transport: builder.build(),
            settings,
        })
    }

    pub fn settings(&self) -> &SmtpSettings {
        &self.settings
    }

    /// Sends one plain-text mail to every address in `to`.
    pub async fn send(
        &self,
        from: Option<&str>,
        to: &[String],
        subject: &str,
        body: &str,
    ) -> Result<(), NotifyError> {
        let from = from
            .or(self.settings.from.as_deref())
            .ok_or(NotifyError::NoSender)?;
        let mailbox = |a: &str| {
            a.parse::<Mailbox>().map_err(|source| NotifyError::Address {
                address: a.to_string(),
                source,
            })
        };
        let mut message = Message::builder().from(mailbox(from)?);
        for t in to {
            message = message.to(mailbox(t)?);
        }
        let message = message
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|e| NotifyError::Build(e.to_string()))?;
        let host = format!("{}:{}", self.settings.host, self.settings.port);
        // lettre's own timeout bounds single socket operations only on some
        // paths (a server that accepts the connection and never sends its
        // greeting is waited for indefinitely): `--smtp-timeout` bounds the
        // whole delivery attempt here. A timeout is transient: the notice
        // stays queued and is retried with backoff.
        match tokio::time::timeout(self.settings.timeout, self.transport.send(message)).await {
            Err(_) => Err(NotifyError::SmtpTimeout {
                host,
                seconds: self.settings.timeout.as_secs(),
            }),
            Ok(sent) => sent.map(|_| ()).map_err(|source| NotifyError::Smtp {
                host,
                permanent: source.is_permanent(),
                source,
            }),
        }
    }
}
