//! The route table from the configuration: `--server` lines, the `--servers-file` the nanny
//! writes and the resolv file's nameservers, with upstream objects (and their statistics) kept
//! across reloads for servers that did not change.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use dns_transport::SuffixRoutes;
use thiserror::Error;

use super::{Family, Route, RouteKind, RouteTable, Upstream};
use crate::config::{CacheConfig, ServerError, ServerSpec, ServerTarget, parse_servers_file};
use crate::policy::domain_set;

/// Why the servers could not be read (the current routes keep serving).
#[derive(Debug, Error)]
pub enum RoutesError {
    #[error("--servers-file {path}: {source}")]
    ServersFileSyntax {
        path: PathBuf,
        #[source]
        source: ServerError,
    },
    #[error("--servers-file {path}: {source}")]
    ServersFileRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The servers named by the command line, the servers file and the resolv file, and the
/// servers file's family lines.
fn server_specs(config: &CacheConfig) -> Result<(Vec<ServerSpec>, Family), RoutesError> {
    let mut specs = config.servers.clone();
    let mut family = Family::default();
    if let Some(path) = &config.servers_file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let file =
                    parse_servers_file(&text).map_err(|source| RoutesError::ServersFileSyntax {
                        path: path.clone(),
                        source,
                    })?;
                specs.extend(file.servers);
                family = Family {
                    ipv4_only: domain_set(&file.ipv4_only),
                    ipv6_only: domain_set(&file.ipv6_only),
                };
            }
            // A servers file that does not exist yet is empty (the nanny writes it later).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RoutesError::ServersFileRead {
                    path: path.clone(),
                    source,
                });
            }
        }
    }
    let has_default = specs
        .iter()
        .any(|s| s.domains.is_empty() && matches!(s.target, ServerTarget::Address(_)));
    if !has_default && !config.no_resolv {
        match std::fs::read_to_string(&config.resolv_file) {
            Ok(text) => specs.extend(
                dns_transport::resolv_conf::nameservers(&text)
                    .into_iter()
                    .map(|addr| ServerSpec {
                        domains: Vec::new(),
                        target: ServerTarget::Address(addr),
                    }),
            ),
            Err(e) => {
                tracing::warn!(path = %config.resolv_file.display(), error = %e, "cannot read resolv file")
            }
        }
    }
    Ok((specs, family))
}

/// Builds the route table, reusing `previous` upstream objects (and their statistics).
pub fn build_routes(
    config: &CacheConfig,
    previous: &HashMap<SocketAddr, Arc<Upstream>>,
) -> Result<RouteTable, RoutesError> {
    let (specs, family) = server_specs(config)?;
    let weight_of = |addr: &SocketAddr| {
        config
            .upstream_weights
            .iter()
            .find(|(a, _)| a == addr)
            .map_or(1, |(_, w)| *w)
    };
    let mut upstreams: HashMap<SocketAddr, Arc<Upstream>> = HashMap::new();
    let pooled = |addr: &SocketAddr| config.tcp_upstreams.contains(addr);
    let mut upstream_for = |addr: SocketAddr| {
        upstreams
            .entry(addr)
            .or_insert_with(|| {
                previous
                    .get(&addr)
                    .filter(|u| {
                        u.weight == weight_of(&addr)
                            && u.pool.as_ref().map(|p| p.size())
                                == pooled(&addr).then_some(config.tcp_pool_size)
                    })
                    .cloned()
                    .unwrap_or_else(|| {
                        let upstream = Upstream::new(addr, weight_of(&addr));
                        Arc::new(if pooled(&addr) {
                            upstream.with_tcp_pool(config.tcp_pool_size)
                        } else {
                            upstream
                        })
                    })
            })
            .clone()
    };
    let mut defaults: Vec<Arc<Upstream>> = Vec::new();
    for spec in specs.iter().filter(|s| s.domains.is_empty()) {
        if let ServerTarget::Address(addr) = spec.target
            && !defaults.iter().any(|u| u.addr == addr)
        {
            defaults.push(upstream_for(addr));
        }
    }
    // Domain routes in first-seen order; several lines for one domain form one pool.
    let mut domains: Vec<(String, Option<Vec<Arc<Upstream>>>)> = Vec::new();
    for spec in specs.iter().filter(|s| !s.domains.is_empty()) {
        for domain in &spec.domains {
            let position = match domains.iter().position(|(d, _)| d == domain) {
                Some(p) => p,
                None => {
                    domains.push((domain.clone(), Some(Vec::new())));
                    domains.len() - 1
                }
            };
            match &spec.target {
                ServerTarget::LocalOnly => domains[position].1 = None,
                ServerTarget::Default => {
                    if let Some(pool) = &mut domains[position].1 {
                        pool.extend(defaults.iter().cloned());
                    }
                }
                ServerTarget::Address(addr) => {
                    if let Some(pool) = &mut domains[position].1
                        && !pool.iter().any(|u| u.addr == *addr)
                    {
                        pool.push(upstream_for(*addr));
                    }
                }
            }
        }
    }
    let mut routes: Vec<Route> = domains
        .into_iter()
        .map(|(domain, pool)| match pool {
            Some(pool) => Route::new(domain, RouteKind::Forward(pool), config.forward_max),
            None => Route::new(domain, RouteKind::LocalOnly, config.forward_max),
        })
        .collect();
    if !defaults.is_empty() {
        routes.push(Route::new(
            String::new(),
            RouteKind::Forward(defaults),
            config.forward_max,
        ));
    }
    let routes = SuffixRoutes::new(routes.into_iter().map(|r| (r.domain.clone(), r)));
    Ok(RouteTable {
        routes,
        upstreams,
        family,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> CacheConfig {
        CacheConfig::parse_args(args.iter().copied()).expect("config")
    }

    #[test]
    fn domains_pool_their_lines_and_defaults_come_last() {
        let config = config(&[
            "--no-resolv",
            "--server=/cluster.local/10.0.0.1#10053",
            "--server=/cluster.local/10.0.0.2#10053",
            "--server=/corp/#",
            "--server=/blocked/",
            "--server=8.8.8.8",
        ]);
        let table = build_routes(&config, &HashMap::new()).expect("routes");
        let servers = |name: &str| match &table.route_for(name).expect("route").kind {
            RouteKind::Forward(pool) => pool.iter().map(|u| u.addr.to_string()).collect(),
            RouteKind::LocalOnly => vec!["local".to_owned()],
        };
        assert_eq!(
            servers("a.svc.cluster.local"),
            ["10.0.0.1:10053", "10.0.0.2:10053"]
        );
        assert_eq!(servers("x.corp"), ["8.8.8.8:53"]);
        assert_eq!(servers("ads.blocked"), ["local"]);
        assert_eq!(servers("example.com"), ["8.8.8.8:53"]);
    }

    #[test]
    fn upstreams_are_kept_across_rebuilds_unless_their_weight_changed() {
        let first = build_routes(
            &config(&["--no-resolv", "--server=10.0.0.1"]),
            &HashMap::new(),
        )
        .expect("routes");
        let kept = build_routes(
            &config(&["--no-resolv", "--server=10.0.0.1"]),
            &first.upstreams,
        )
        .expect("routes");
        let addr: SocketAddr = "10.0.0.1:53".parse().expect("addr");
        assert!(Arc::ptr_eq(&first.upstreams[&addr], &kept.upstreams[&addr]));
        let reweighted = build_routes(
            &config(&[
                "--no-resolv",
                "--server=10.0.0.1",
                "--upstream-weight=10.0.0.1=5",
            ]),
            &first.upstreams,
        )
        .expect("routes");
        assert!(!Arc::ptr_eq(
            &first.upstreams[&addr],
            &reweighted.upstreams[&addr]
        ));
    }

    #[test]
    fn a_bad_servers_file_is_an_error_naming_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("dns-cache-routes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("servers");
        std::fs::write(&path, "server=/a/1.1.1.1\nserver=/b/not-an-ip\n").expect("write");
        let arg = format!("--servers-file={}", path.display());
        let error =
            build_routes(&config(&["--no-resolv", &arg]), &HashMap::new()).expect_err("bad file");
        let text = error.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("line 2"),
            "{text}"
        );
        std::fs::remove_file(&path).expect("absent file");
        let table = build_routes(&config(&["--no-resolv", &arg]), &HashMap::new())
            .expect("a missing servers file is empty");
        assert!(table.routes.is_empty());
    }
}
