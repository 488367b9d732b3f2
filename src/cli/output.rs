//! What the CLI writes: stdout through `write_stdout` (a reader that went
//! away ends the command quietly) and the final error line.

/// The error and its causes, each said once: most of our errors already
/// write their cause into their own message (`cannot open catalog X:
/// {source}`), which anyhow's `{:#}` would print again.
pub(super) fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Writing to stdout failed (its reader went away, or the disk is full).
#[derive(Debug, thiserror::Error)]
#[error("cannot write to stdout: {0}")]
pub(crate) struct StdoutError(#[source] std::io::Error);

/// Writes to stdout and flushes, so that a reader that went away is seen
/// here (as `BrokenPipe`) rather than as a panic of `println!`.
pub(crate) fn write_stdout(args: std::fmt::Arguments) -> Result<(), StdoutError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .map_err(StdoutError)
}

/// Whether a command ended because its stdout was closed by the reader
/// (only our own writes to stdout count, not a tool's broken pipe).
pub(super) fn is_closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<StdoutError>()
            .is_some_and(|s| s.0.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open catalog x: {0}")]
    struct Says(#[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::other("pool timed out");
        let e = anyhow::Error::new(Says(io()));
        assert_eq!(error_text(&e), "cannot open catalog x: pool timed out");
        let e = anyhow::Error::new(io()).context("restore failed");
        assert_eq!(error_text(&e), "restore failed: pool timed out");
    }

    #[test]
    fn only_a_broken_pipe_on_our_stdout_is_a_quiet_end() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_closed_stdout(&StdoutError(pipe).into()));
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(!is_closed_stdout(&StdoutError(full).into()));
        let tool = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(!is_closed_stdout(&tool.into()));
    }
}
