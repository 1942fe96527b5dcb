//! Test-only support for kube-dns-rs: a fake Kubernetes API server, Kubernetes object builders,
//! a DNS test client, a minimal HTTP client and a harness for spawned processes.

pub mod dns_client;
pub mod fake_api;
pub mod fake_upstream;
pub mod http_client;
pub mod objects;
pub mod process;

pub use fake_api::{FakeApiServer, Resource, write_kubeconfig};

use std::path::PathBuf;

/// Absolute path of the workspace's `tests/fixtures` directory.
pub fn fixtures_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/support has a parent directory")
        .join("fixtures")
}
