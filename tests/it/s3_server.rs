//! A real S3-compatible server on loopback for the tests: s3s-fs (objects as
//! files in a temp dir) served by hyper on 127.0.0.1:0 in its own thread. It
//! can be stopped at once (connections cut), optionally when the N-th part of
//! a multipart upload arrives, and restarted on the same data.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tempfile::TempDir;
use tokio::sync::watch;

pub const ACCESS_KEY: &str = "safepoint-test";
pub const SECRET_KEY: &str = "safepoint-test-secret";

pub struct S3Server {
    pub addr: SocketAddr,
    root: Arc<TempDir>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    /// Part uploads (`PUT ...?partNumber=`) received so far.
    pub parts: Arc<AtomicUsize>,
}

impl S3Server {
    pub fn start() -> S3Server {
        Self::start_on(Arc::new(tempfile::tempdir().unwrap()), None)
    }

    /// Stops itself (cutting every connection) when part number
    /// `stop_at_part` of a multipart upload arrives.
    pub fn start_stopping_at_part(stop_at_part: usize) -> S3Server {
        Self::start_on(Arc::new(tempfile::tempdir().unwrap()), Some(stop_at_part))
    }

    fn start_on(root: Arc<TempDir>, stop_at_part: Option<usize>) -> S3Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = watch::channel(false);
        let parts = Arc::new(AtomicUsize::new(0));
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let (stop2, parts2) = (stop.clone(), parts.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    let socket = tokio::select! {
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                        _ = stopped.wait_for(|s| *s) => break,
                    };
                    let (service, stop, parts) = (service.clone(), stop2.clone(), parts2.clone());
                    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let is_part = req.method() == hyper::Method::PUT
                            && req.uri().query().is_some_and(|q| q.contains("partNumber="));
                        let n = if is_part {
                            parts.fetch_add(1, Ordering::SeqCst) + 1
                        } else {
                            0
                        };
                        let cut = is_part && stop_at_part.is_some_and(|at| n >= at);
                        if cut {
                            let _ = stop.send(true);
                        }
                        let call = hyper::service::Service::call(&service, req);
                        async move {
                            if cut {
                                // The server dies with this request unanswered.
                                std::future::pending::<()>().await;
                            }
                            call.await
                        }
                    });
                    conns.spawn(async move {
                        let _ = ConnBuilder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(socket), svc)
                            .await;
                    });
                }
                conns.shutdown().await;
            });
        });
        S3Server {
            addr,
            root,
            stop,
            thread: Some(thread),
            parts,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.path().join(bucket)).unwrap();
    }

    /// Where s3s-fs keeps an object's bytes.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    /// Stops the server at once: the listener closes, connections are cut.
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// A fresh server (new port) on the same objects.
    pub fn restart(mut self) -> S3Server {
        self.stop();
        Self::start_on(self.root.clone(), None)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
