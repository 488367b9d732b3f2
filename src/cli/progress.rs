//! IO: restore progress on a terminal (bytes restored, rate, elapsed) and the
//! comparison of restored row counts with the manifest's.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::table::bytes;

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A progress line redrawn twice a second on stderr, only when stderr is a
/// terminal (never in logs or pipes).
pub struct Progress {
    read: Arc<AtomicU64>,
    task: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

impl Progress {
    /// `total` = bytes of the decompressed stream (the manifest's raw size).
    pub fn start(total: u64) -> Progress {
        let read = Arc::new(AtomicU64::new(0));
        let task = std::io::stderr().is_terminal().then(|| {
            let (tx, mut rx) = tokio::sync::oneshot::channel();
            let read = read.clone();
            let started = Instant::now();
            let handle = tokio::spawn(async move {
                let draw = |done: bool| {
                    let n = read.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64();
                    let pct = (n.min(total) * 100).checked_div(total).unwrap_or(100);
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r\x1b[Krestoring: {} of {} ({pct}%), {}/s, {secs:.0}s elapsed",
                        bytes(n),
                        bytes(total),
                        bytes((n as f64 / secs.max(0.001)) as u64),
                    );
                    if done {
                        let _ = writeln!(err);
                    }
                    let _ = err.flush();
                };
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => draw(false),
                        _ = &mut rx => { draw(true); break; }
                    }
                }
            });
            (handle, tx)
        });
        Progress { read, task }
    }

    pub fn wrap(&self, input: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
        Box::new(Counting {
            inner: input,
            read: self.read.clone(),
        })
    }

    pub async fn stop(self) {
        if let Some((handle, tx)) = self.task {
            let _ = tx.send(());
            let _ = handle.await;
        }
    }
}

/// Tables whose restored row count differs from the backup's, as messages.
pub fn count_mismatches(
    expected: &BTreeMap<String, u64>,
    restored: &BTreeMap<String, u64>,
) -> Vec<String> {
    if expected.is_empty() || restored.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (table, want) in expected {
        match restored.get(table) {
            Some(got) if got == want => {}
            Some(got) => out.push(format!(
                "{table}: {got} rows restored, the backup counted {want}"
            )),
            None => out.push(format!(
                "{table}: missing after restore ({want} rows in the backup)"
            )),
        }
    }
    out
}
