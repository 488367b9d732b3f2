//! Tests of `load` as a whole: a complete example, every diagnostic kind
//! with its exact file:line, and the generated schema file; one file per
//! topic, sharing the example documents and helpers below.

mod documents;
mod drill;
mod load;
mod policy_spec;
mod secrets;
mod source;
mod storage;

use super::*;

const STORAGE: &str = "\
apiVersion: safepoint/v1
kind: Storage
metadata:
  name: primary
spec:
  type: local
  path: /var/lib/safepoint/backups
  encryption:
    ageRecipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
";

const NOTIFIER: &str = "\
apiVersion: safepoint/v1
kind: Notifier
metadata:
  name: oncall
spec:
  email:
    to: [oncall@example.com]
    from: safepoint@example.com
  webhook:
    url: https://hooks.example.com/safepoint
    secretFrom: {env: WEBHOOK_SECRET}
";

/// A complete example policy using every kind of field, verbatim.
const POLICY: &str = r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata:
  name: orders-db
  labels: {team: payments}
spec:
  source:
    type: postgres                    # postgres | mysql | sqlite | directory | command
    url: postgres://backup@db.internal:5432/orders
    passwordFrom: {env: ORDERS_DB_PASSWORD}   # or {file: /run/secrets/orders}
  storage: primary                    # a Storage name
  schedule: {cron: "0 */6 * * *", timezone: UTC}
  rpo: 6h                             # newest good backup older than this = drift
  releases:
    tagPattern: "v*"                  # a new matching tag => release baseline backup
  deploy:
    before: snapshot                  # what `deploy start` does for this policy
    onSuccess: baseline               # backup marking the new known-good state
    onFailure: [pin-pre-deploy, forensic-snapshot, alert]
  retention:
    keepLast: 3
    keepHourly: 24
    keepDaily: 7
    keepWeekly: 4
    keepMonthly: 12
    keepYearly: 0
    keepReleases: 10                  # release baselines and their pre-deploy snapshots
  drill:
    schedule: {cron: "30 3 * * *"}
    target:                           # segregated scratch server, never the source
      type: postgres
      url: postgres://drill@scratch.internal:5432/postgres
    verify:
      completeness: exact             # exact | estimate | off: per-table row counts vs the backup's
      checks:
        - name: users exist
          sql: "select count(*) from users"
          expect: ">= 1"
    maxDuration: 15m                  # the recovery-time objective the drill must meet
  alerts: {notifiers: [oncall]}
  suspend: false
"#;

fn file(path: &str, text: &str) -> PolicyFile {
    PolicyFile::new(path, text)
}

fn base() -> Vec<PolicyFile> {
    vec![
        file("policies/storage.yaml", STORAGE),
        file("policies/notifier.yaml", NOTIFIER),
    ]
}

/// Loads `files` expecting failure; the diagnostics as `file:line: message`.
fn problems(files: &[PolicyFile]) -> Vec<Diagnostic> {
    match load(files) {
        Ok(state) => panic!("expected diagnostics, got {state:#?}"),
        Err(diags) => diags,
    }
}

/// The example policy with `edit` applied to its text.
fn policy_with(edit: impl Fn(&str) -> String) -> Vec<PolicyFile> {
    let mut files = base();
    files.push(file("policies/orders.yaml", &edit(POLICY)));
    files
}

/// The single diagnostic; asserts its file, line and a part of its message.
fn only(diags: &[Diagnostic], file: &str, line: usize, message_part: &str) -> Diagnostic {
    assert_eq!(diags.len(), 1, "{}", render(diags));
    let d = diags[0].clone();
    assert_eq!((d.file.as_str(), d.line), (file, line), "{d}");
    assert!(d.message.contains(message_part), "{d}");
    d
}

fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("{d}\n")).collect()
}

const ORDERS: &str = "policies/orders.yaml";
