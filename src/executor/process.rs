//! IO: running the external tools of database and command sources. A child
//! runs in its own process group; its stdout is pumped into the artifact
//! writer (or the restore stream into its stdin) on the calling blocking
//! thread; the last few KiB of stderr are kept (redacted) for the error; a
//! watchdog kills the whole group when a stop signal is set (timeout,
//! shutdown, a failed sibling step) or the writer fails.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::ExecError;
use super::classify::is_transient_text;
use super::secret::Redactor;
use crate::storage::pipeline::Cancel;

/// How much of a tool's stderr is kept for the error message.
const STDERR_TAIL: usize = 4096;
/// How often the watchdog looks at the stop signals and the child.
const POLL: Duration = Duration::from_millis(20);
/// Read size of the stdout pump.
const CHUNK: usize = 256 * 1024;

/// A tool invocation: the command, its name for messages, where it points
/// (a URL without password, or a path) and what to redact from its output.
pub(crate) struct Tool {
    pub cmd: Command,
    pub name: String,
    pub target: String,
    pub redactor: Redactor,
}

impl Tool {
    pub fn new(program: &str, target: &str, redactor: Redactor) -> Tool {
        Tool {
            cmd: Command::new(program),
            name: program.to_string(),
            target: redactor.redact(target),
            redactor,
        }
    }
}

/// A running child: its pipes and the threads watching it.
struct Running {
    stdout: Option<ChildStdout>,
    stdin: Option<ChildStdin>,
    watchdog: JoinHandle<io::Result<ExitStatus>>,
    stderr: JoinHandle<Vec<u8>>,
    abort: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
}

fn spawn(tool: &mut Tool, stdin: Stdio, stops: &[Cancel]) -> Result<Running, ExecError> {
    tool.cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = tool.cmd.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ExecError::ToolMissing {
            tool: tool.name.clone(),
        },
        _ => ExecError::Tool {
            tool: tool.name.clone(),
            target: tool.target.clone(),
            status: "could not start".into(),
            stderr: e.to_string(),
            transient: false,
        },
    })?;
    let stderr = match child.stderr.take() {
        Some(s) => tail_reader(s),
        None => std::thread::spawn(Vec::new),
    };
    let (stdout, stdin) = (child.stdout.take(), child.stdin.take());
    let abort = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(AtomicBool::new(false));
    let pid = child.id() as i32;
    let watchdog = {
        let (abort, stopped, stops) = (abort.clone(), stopped.clone(), stops.to_vec());
        std::thread::spawn(move || {
            loop {
                if let Some(status) = child.try_wait()? {
                    kill_group(pid); // background leftovers of the tool
                    return Ok(status);
                }
                if abort.load(Ordering::SeqCst) || stops.iter().any(Cancel::is_cancelled) {
                    stopped.store(true, Ordering::SeqCst);
                    kill_group(pid);
                }
                std::thread::sleep(POLL);
            }
        })
    };
    Ok(Running {
        stdout,
        stdin,
        watchdog,
        stderr,
        abort,
        stopped,
    })
}

/// Kills the child's process group (the child leads it: `process_group(0)`).
fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory
    // is shared. ESRCH (the group is already gone) is expected and ignored.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

fn tail_reader(mut stderr: ChildStderr) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut tail = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
        tail
    })
}

impl Running {
    /// Waits for the child and turns its exit into a result. `io_error` is
    /// an error of our side of the pipe, reported only when the tool itself
    /// did not fail first.
    fn finish(
        self,
        tool: &Tool,
        stops: &[Cancel],
        io_error: Option<ExecError>,
    ) -> Result<(), ExecError> {
        if io_error.is_some() {
            self.abort.store(true, Ordering::SeqCst);
        }
        drop(self.stdin);
        drop(self.stdout);
        let status = self
            .watchdog
            .join()
            .map_err(|_| ExecError::Join(format!("watchdog of {} panicked", tool.name)))?
            .map_err(|e| ExecError::Join(format!("waiting for {}: {e}", tool.name)))?;
        let stderr = self.stderr.join().unwrap_or_default();
        if stops.iter().any(Cancel::is_cancelled) && !status.success() {
            return Err(ExecError::Cancelled);
        }
        if let Some(e) = io_error {
            return Err(e);
        }
        if status.success() && !self.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        let text = tool
            .redactor
            .redact(String::from_utf8_lossy(&stderr).trim());
        Err(ExecError::Tool {
            tool: tool.name.clone(),
            target: tool.target.clone(),
            status: status.to_string(),
            transient: is_transient_text(&text),
            stderr: if text.is_empty() {
                "(no output on stderr)".into()
            } else {
                text
            },
        })
    }
}

/// Runs the tool with no stdin and streams its stdout into `out`. The child
/// is killed as soon as `out` fails or one of `stops` is set.
pub(crate) fn pump_stdout<W: Write>(
    mut tool: Tool,
    mut out: W,
    stops: &[Cancel],
) -> Result<W, ExecError> {
    let mut running = spawn(&mut tool, Stdio::null(), stops)?;
    let mut io_error = None;
    if let Some(mut stdout) = running.stdout.take() {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = out.write_all(&buf[..n]) {
                        io_error = Some(ExecError::from_write(e));
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    io_error = Some(ExecError::Write(e));
                    break;
                }
            }
        }
    }
    running.finish(&tool, stops, io_error)?;
    Ok(out)
}

/// Runs the tool with `input` on its stdin (its stdout is discarded into
/// the stderr tail's budget: kept only for the error message).
pub(crate) fn feed_stdin(mut tool: Tool, input: &mut dyn Read) -> Result<(), ExecError> {
    let mut running = spawn(&mut tool, Stdio::piped(), &[])?;
    // The tool's stdout is drained so that it never blocks on a full pipe.
    let drain = running.stdout.take().map(|mut s| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut s, &mut io::sink());
        })
    });
    let mut io_error = None;
    if let Some(mut stdin) = running.stdin.take() {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    io_error = Some(ExecError::RestoredInvalid(format!(
                        "reading the backup failed: {e}"
                    )));
                    break;
                }
            };
            // A closed pipe means the tool exited: its status and stderr tell why.
            if stdin.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    }
    let result = running.finish(&tool, &[], io_error);
    if let Some(d) = drain {
        let _ = d.join();
    }
    result
}

/// Runs a short tool invocation (`--version`) and returns its stdout.
pub(crate) fn output(tool: Tool) -> Result<String, ExecError> {
    let out = pump_stdout(tool, Vec::new(), &[])?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Tool {
        let mut t = Tool::new("sh", "test", Redactor::default().with(Some("s3cret")));
        t.cmd.arg("-c").arg(script);
        t
    }

    #[test]
    fn stdout_is_streamed_and_a_failing_tool_reports_its_redacted_stderr() {
        let out = pump_stdout(sh("printf hello"), Vec::new(), &[]).unwrap();
        assert_eq!(out, b"hello");
        let err = pump_stdout(
            sh("echo 'auth s3cret: connection refused' >&2; exit 3"),
            Vec::new(),
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("auth ***: connection refused"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(err.is_transient());
    }

    #[test]
    fn a_stop_signal_kills_the_whole_process_group() {
        let cancel = Cancel::new();
        cancel.cancel();
        let started = std::time::Instant::now();
        let err = pump_stdout(sh("sleep 30 & sleep 30"), Vec::new(), &[cancel]).unwrap_err();
        assert!(matches!(err, ExecError::Cancelled), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn stdin_is_fed_and_an_early_exit_is_reported_not_the_broken_pipe() {
        let mut data: &[u8] = b"abc";
        feed_stdin(sh("test \"$(cat)\" = abc"), &mut data).unwrap();
        let big = vec![b'x'; 4 << 20];
        let err = feed_stdin(sh("echo 'no such table' >&2; exit 1"), &mut &big[..]).unwrap_err();
        assert!(err.to_string().contains("no such table"), "{err}");
        assert!(!err.is_transient());
    }
}
