//! `notify test NOTIFIER`: sends one test notice straight through a Notifier
//! of the policies in force (each of its channels: email with the --smtp-*
//! settings, webhook) and prints what each endpoint answered.
//! Exit codes: 0 every channel accepted it, 1 a channel refused or could not
//! be reached, 2 could not run, 4 no such notifier.

use chrono::Utc;
use serde::Serialize;

use super::shared::loaded_state;
use crate::cli::Output;
use crate::cli::daemon_args::SmtpArgs;
use crate::engine::context::Context;
use crate::notify::{self, Poster};

#[derive(Serialize)]
struct Line {
    notifier: String,
    channel: &'static str,
    destination: String,
    ok: bool,
    answer: String,
}

pub(super) async fn run(
    ctx: &Context,
    name: &str,
    smtp: &SmtpArgs,
    output: Output,
) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let desired = state
        .desired()
        .map_err(|e| anyhow::anyhow!("no valid policy revision is applied: {e}"))?;
    let Some(spec) = desired.notifiers.get(name) else {
        let known: Vec<&str> = desired.notifiers.keys().map(String::as_str).collect();
        eprintln!(
            "error: no Notifier `{name}` in the policies in force (known: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        return Ok(4);
    };
    let recipient = notify::alerts::recipient(spec);
    let mailer = smtp.mailer()?;
    let poster = Poster::new()?;
    let outcomes = notify::test(&recipient, mailer.as_ref(), &poster, Utc::now()).await;
    let lines: Vec<Line> = outcomes
        .into_iter()
        .map(|o| Line {
            notifier: name.to_string(),
            channel: o.channel,
            destination: o.destination,
            ok: o.result.is_ok(),
            answer: match o.result {
                Ok(a) => a,
                Err(e) => e.to_string(),
            },
        })
        .collect();
    match output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&lines)?),
        Output::Table => {
            for l in &lines {
                let verdict = if l.ok { "ok" } else { "FAILED" };
                outln!("{verdict} {} {}: {}", l.channel, l.destination, l.answer);
            }
        }
    }
    Ok(if lines.iter().all(|l| l.ok) { 0 } else { 1 })
}
