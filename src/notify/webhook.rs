//! IO: webhook delivery. Posts a `Payload` (or its Slack rendering) with
//! reqwest (rustls with ring), signed when the notifier names a secret, and
//! classifies the answer: 2xx delivered; 408, 425, 429, 5xx and network
//! errors retried; any other answer (4xx, a redirect) permanent. URLs are
//! shown without path or query (a Slack URL's path is its secret).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::NotifyError;
use super::alerts::WebhookTarget;
use super::payload::{self, Payload};
use crate::policy::WebhookFormat;

/// How long one POST may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint answered to a delivered notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The start of the response body, for `notify test`.
    pub body: String,
}

/// `https://hooks.example.com/…`: scheme and authority only.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}/…")
        }
        None => "<invalid url>".into(),
    }
}

/// A reusable HTTP client for webhooks.
#[derive(Clone)]
pub struct Poster {
    client: reqwest::Client,
}

impl Poster {
    pub fn new() -> Result<Poster, NotifyError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("safepoint/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Webhook {
                url: String::new(),
                permanent: true,
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Poster { client })
    }

    /// Posts `p` to `target` at `now`.
    pub async fn post(
        &self,
        target: &WebhookTarget,
        p: &Payload,
        now: DateTime<Utc>,
    ) -> Result<Answer, NotifyError> {
        let url = redacted(&target.url);
        let fail = |permanent: bool, message: String| NotifyError::Webhook {
            url: url.clone(),
            permanent,
            message,
        };
        let body = match target.format {
            WebhookFormat::Json => serde_json::to_vec(p),
            WebhookFormat::Slack => serde_json::to_vec(&payload::slack(p)),
        }
        .map_err(|e| fail(true, format!("cannot encode the payload: {e}")))?;
        let mut request = self
            .client
            .post(&target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(payload::DELIVERY_HEADER, &p.id);
        if let Some(secret) = &target.secret_from {
            let secret = crate::executor::secret::resolve(secret)
                .map_err(|e| fail(false, format!("webhook secretFrom: {e}")))?;
            request = request.header(
                payload::SIGNATURE_HEADER,
                payload::sign(secret.as_bytes(), &body, now),
            );
        }
        let response = request.body(body).send().await.map_err(|e| {
            // Connection refused, DNS, timeouts: the endpoint may come back.
            fail(false, chain(&e.without_url()))
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let snippet: String = text.chars().take(300).collect();
        let answer = Answer {
            status: status.as_u16(),
            body: snippet.trim().to_string(),
        };
        if status.is_success() {
            return Ok(answer);
        }
        let transient = status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429);
        Err(fail(
            !transient,
            format!("endpoint answered {status}: {}", answer.body),
        ))
    }
}

/// An error and its causes on one line.
fn chain(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_path_query_or_credentials() {
        assert_eq!(
            redacted("https://hooks.slack.com/services/T0/B0/XXXX"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redacted("http://user:pw@127.0.0.1:8080/x?token=1"),
            "http://127.0.0.1:8080/…"
        );
        assert_eq!(redacted("nonsense"), "<invalid url>");
    }
}
