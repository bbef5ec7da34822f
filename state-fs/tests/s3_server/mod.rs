//! An S3-compatible server (s3s-fs over a temporary directory) on 127.0.0.1 with a random
//! port, one per test binary, with bucket `bucket`: for state-fs's S3 tests and for the
//! examples' multi-process tests (included there by path).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The running server.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

/// One S3 server per test binary, on 127.0.0.1 with a random port.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bucket")).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single("AKIDTEST", "SECRETTEST"));
        let service = builder.build();
        rt.spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let conn = http
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Server {
            endpoint,
            _dir: dir,
            _rt: rt,
        }
    })
}

/// The store options that reach the server (endpoint and its test credentials).
pub fn store_options() -> BTreeMap<String, String> {
    // Through the typed config, so the S3 tests exercise it end to end.
    state_fs::S3Config::new()
        .endpoint(server().endpoint.clone())
        .credentials("AKIDTEST", "SECRETTEST")
        .into_options()
}
