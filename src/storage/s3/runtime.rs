//! IO support: the S3 module's own tokio runtime, and `block`, which drives
//! a future to completion on the calling thread inside it (the runtime's
//! reactor and timers do the IO), so the sync `Storage` methods work from any
//! thread.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake};

pub(super) fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("safepoint-s3")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the S3 runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives `fut` to completion on the calling thread inside the S3 runtime's
/// context (its reactor and timers do the IO). Works from any thread.
pub(super) fn block<F: Future>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output {
    let _context = rt.enter();
    let mut fut = std::pin::pin!(fut);
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
