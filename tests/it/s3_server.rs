//! A real S3-compatible server on loopback for the tests: s3s-fs (objects as
//! files in a temp dir) served by hyper on 127.0.0.1:0 in its own thread. It
//! can be stopped at once (connections cut), optionally when the N-th part of
//! a multipart upload arrives, and restarted on the same data.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// While set, every delete (`DELETE`, batch `POST ?delete`) is refused
    /// with 403 AccessDenied, as a bucket policy without delete rights would.
    deny_deletes: Arc<AtomicBool>,
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
        let deny_deletes = Arc::new(AtomicBool::new(false));
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let (stop2, parts2, deny2) = (stop.clone(), parts.clone(), deny_deletes.clone());
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
                    let deny = deny2.clone();
                    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let is_delete = req.method() == hyper::Method::DELETE
                            || (req.method() == hyper::Method::POST
                                && req.uri().query().is_some_and(|q| q.contains("delete")));
                        let refuse = is_delete && deny.load(Ordering::SeqCst);
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
                            if refuse {
                                return Ok(access_denied());
                            }
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
            deny_deletes,
        }
    }

    /// Refuse (true) or allow (false) deletes from now on.
    pub fn deny_deletes(&self, deny: bool) {
        self.deny_deletes.store(deny, Ordering::SeqCst);
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

/// The answer of a bucket policy that does not grant `s3:DeleteObject`.
fn access_denied() -> hyper::Response<s3s::Body> {
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
               <Message>Access Denied</Message></Error>";
    hyper::Response::builder()
        .status(403)
        .header("content-type", "application/xml")
        .body(s3s::Body::from(xml.to_string()))
        .unwrap()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
