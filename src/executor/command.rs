//! IO: `command` sources for anything else: `sh -c <backupCommand>` runs in
//! the daemon's working directory and its stdout is the backup; a restore runs
//! `sh -c <restoreCommand>` with the backup on stdin and the `--to` value in
//! SAFEPOINT_RESTORE_TO. A non-zero exit fails with the (redacted) stderr.

use std::io::{Read, Write};

use super::process::{self, Tool};
use super::secret::{Redactor, scrub_url_passwords};
use super::{ExecContext, ExecError, Produced};

/// How a command is named in messages: its first line, shortened.
fn describe(kind: &str, command: &str) -> String {
    let first = command.lines().next().unwrap_or_default();
    let short: String = first.chars().take(80).collect();
    let more = if short.len() < command.len() {
        " ..."
    } else {
        ""
    };
    format!("{kind} `{}{more}`", scrub_url_passwords(&short))
}

fn shell(kind: &str, command: &str) -> Tool {
    let mut tool = Tool::new("sh", &describe(kind, command), Redactor::default());
    tool.name = format!("{kind} command");
    tool.cmd.arg("-c").arg(command);
    tool
}

pub async fn backup<W: Write + Send + 'static>(
    command: &str,
    ctx: &ExecContext,
    out: W,
) -> Result<(W, Produced), ExecError> {
    let mut tool = shell("backup", command);
    tool.cmd.current_dir(&ctx.base);
    let stops = vec![ctx.cancel.clone()];
    let out = super::blocking(move || process::pump_stdout(tool, out, &stops)).await?;
    let mut produced = Produced::default();
    produced
        .tools
        .insert("command".into(), scrub_url_passwords(command));
    Ok((out, produced))
}

pub async fn restore(
    mut input: Box<dyn Read + Send>,
    command: &str,
    target: &str,
) -> Result<Produced, ExecError> {
    let mut tool = shell("restore", command);
    tool.cmd.env("SAFEPOINT_RESTORE_TO", target);
    super::blocking(move || process::feed_stdin(tool, &mut input)).await?;
    Ok(Produced::default())
}
