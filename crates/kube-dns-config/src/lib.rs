//! The `kube-dns` ConfigMap, shared by kube-dns and the nanny: its model and the legacy
//! validation rules ([`config_map`], contract §5.3), and the mounted volume it arrives in, read
//! and watched for new content-hash versions ([`volume`], contract §5.2).

pub mod config_map;
pub mod retry;
pub mod volume;

pub use config_map::{ConfigError, DnsConfig};
pub use retry::ResolveRetry;
pub use volume::{ConfigFiles, read_config_dir, watch};
