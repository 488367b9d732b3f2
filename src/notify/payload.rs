//! Pure: the webhook bodies and their signature. `Payload` is the versioned
//! JSON document a `format: json` notifier posts (docs/webhook-payload.schema.json),
//! `slack` the Slack/Mattermost incoming-webhook message, `sign` the
//! `X-Safepoint-Signature` value (HMAC-SHA256 over `<unix time>.<body>`) and
//! `verify` its constant-time check with a replay window.

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use super::alerts::Notice;

/// The payload version; bumped on any incompatible change.
pub const VERSION: u32 = 1;
/// The header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-safepoint-signature";
/// The header carrying the payload's `id` (the same on every retry).
pub const DELIVERY_HEADER: &str = "x-safepoint-delivery";
/// How far a signature's timestamp may be from the receiver's clock.
pub const TOLERANCE_SECONDS: i64 = 300;

/// The JSON a `format: json` webhook receives (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub version: u32,
    /// Unique per notice and notifier, the same on every retry: receivers
    /// drop a repeated id. Empty until the notice is queued.
    pub id: String,
    /// `firing`, `reminder`, `resolved`, `event` or `test`.
    pub kind: String,
    /// The policy; `null` for the policy repository itself and tests.
    pub policy: Option<String>,
    /// A drift kind (`backup-failed`, `rpo-missed`, ...), `deploy-failed`,
    /// `policy-invalid` or `test`.
    pub reason: String,
    /// One line, the mail's subject.
    pub summary: String,
    pub detail: String,
    /// What to run next; `null` when there is nothing to do.
    pub next_step: Option<String>,
    pub since: DateTime<Utc>,
    pub at: DateTime<Utc>,
    /// Backup ids involved (the newest verified one, the pre-deploy snapshot).
    pub backups: Vec<String>,
    /// The exact restore command (deploy failures).
    pub restore_command: Option<String>,
    /// The `Notifier` this was sent through.
    pub notifier: String,
}

impl Payload {
    pub fn new(n: &Notice, notifier: &str) -> Payload {
        Payload {
            version: VERSION,
            id: String::new(),
            kind: n.kind.as_str().to_ascii_lowercase(),
            policy: Some(n.policy.clone()).filter(|p| !p.is_empty()),
            reason: n.reason.clone(),
            summary: n.subject.clone(),
            detail: n.detail.clone(),
            next_step: n.next.clone(),
            since: n.since,
            at: n.at,
            backups: n.backups.clone(),
            restore_command: n.restore_command.clone(),
            notifier: notifier.to_string(),
        }
    }
}

/// Slack's three escapes for message text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack (or Mattermost) incoming-webhook body: `{"text": ...}` in mrkdwn.
pub fn slack(p: &Payload) -> serde_json::Value {
    let mut text = format!(
        "*{}*\n{}",
        slack_escape(&p.summary),
        slack_escape(&p.detail)
    );
    if !p.backups.is_empty() {
        text.push_str(&format!("\nBackups: `{}`", p.backups.join("`, `")));
    }
    if let Some(cmd) = &p.restore_command {
        text.push_str(&format!("\nRestore with: `{}`", slack_escape(cmd)));
    }
    if let Some(next) = &p.next_step {
        text.push_str(&format!("\nNext step: {}", slack_escape(next)));
    }
    text.push_str(&format!(
        "\n_since {} · notifier {} · id {}_",
        p.since.format("%Y-%m-%d %H:%M UTC"),
        slack_escape(&p.notifier),
        p.id
    ));
    serde_json::json!({ "text": text })
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<hmac::Hmac<sha2::Sha256>> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `X-Safepoint-Signature` value for `body` sent at `now`.
pub fn sign(secret: &[u8], body: &[u8], now: DateTime<Utc>) -> String {
    let t = now.timestamp();
    let sig = mac(secret, t, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={t},v1={sig}")
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    Stale,
    Mismatch,
}

/// Checks a signature header the way a receiver should: the timestamp is
/// within `TOLERANCE_SECONDS` of `now` and the HMAC matches (constant time).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: DateTime<Utc>) -> Result<(), Refused> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(Refused::Malformed);
    };
    if (now.timestamp() - t).abs() > TOLERANCE_SECONDS {
        return Err(Refused::Stale);
    }
    let mac = mac(secret, t, body).ok_or(Refused::Malformed)?;
    mac.verify_slice(&v1).map_err(|_| Refused::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::alerts::{EventDetail, event_notice};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    fn deploy_failed() -> Payload {
        let n = event_notice(
            "orders",
            "deploy-failed",
            EventDetail {
                detail: "deploy of release v1.4.0 <failed>".into(),
                next: "restore".into(),
                backups: vec!["orders-20261125T060000Z-ab12".into()],
                restore_command: Some(
                    "safepoint restore --policy orders --release v1.4.0 --pre-deploy".into(),
                ),
            },
            Vec::new(),
            at(0),
        );
        Payload::new(&n, "chat")
    }

    #[test]
    fn a_signature_verifies_and_any_change_or_a_stale_timestamp_is_refused() {
        let body = br#"{"version":1}"#;
        let header = sign(b"s3cret", body, at(0));
        assert!(header.starts_with("t=1790000000,v1="), "{header}");
        assert_eq!(verify(b"s3cret", &header, body, at(10)), Ok(()));
        assert_eq!(
            verify(b"other", &header, body, at(10)),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &header, br#"{"version":2}"#, at(10)),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &header, body, at(301)),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify(b"s3cret", "v1=00", body, at(0)),
            Err(Refused::Malformed)
        );
        // The timestamp is signed too: moving it breaks the signature.
        let moved = header.replace("t=1790000000", "t=1790000100");
        assert_eq!(
            verify(b"s3cret", &moved, body, at(100)),
            Err(Refused::Mismatch)
        );
    }

    #[test]
    fn the_payload_carries_the_restore_command_and_backup_ids() {
        let p = deploy_failed();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["kind"], "event");
        assert_eq!(v["policy"], "orders");
        assert_eq!(v["backups"][0], "orders-20261125T060000Z-ab12");
        assert_eq!(
            v["restore_command"],
            "safepoint restore --policy orders --release v1.4.0 --pre-deploy"
        );
    }

    #[test]
    fn the_slack_body_is_one_escaped_text_with_the_restore_command() {
        let text = slack(&deploy_failed())["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            text.starts_with("*[safepoint] deploy-failed: policy orders*"),
            "{text}"
        );
        assert!(text.contains("&lt;failed&gt;"), "{text}");
        assert!(
            text.contains(
                "Restore with: `safepoint restore --policy orders --release v1.4.0 --pre-deploy`"
            ),
            "{text}"
        );
    }
}
