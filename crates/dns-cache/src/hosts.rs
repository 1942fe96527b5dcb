//! `/etc/hosts` and `--addn-hosts` files, answered locally (A, AAAA and PTR).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use crate::config::CacheConfig;

/// The system hosts file.
pub const ETC_HOSTS: &str = "/etc/hosts";

/// Names and addresses from hosts files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Hosts {
    by_name: HashMap<String, Vec<IpAddr>>,
    by_addr: HashMap<IpAddr, String>,
}

impl Hosts {
    /// Parses hosts-file text (`address name [aliases...]`, `#` comments).
    pub fn add_text(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(Ok(ip)) = words
                .next()
                .map(|w| w.split('%').next().unwrap_or(w).parse::<IpAddr>())
            else {
                continue;
            };
            for (index, name) in words.enumerate() {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let ips = self.by_name.entry(name.clone()).or_default();
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
                if index == 0 {
                    self.by_addr.entry(ip).or_insert(name);
                }
            }
        }
    }

    /// Reads files; a missing file is skipped with a warning (dnsmasq does the same).
    pub fn load(paths: &[&Path]) -> Self {
        let mut hosts = Hosts::default();
        for path in paths {
            match std::fs::read_to_string(path) {
                Ok(text) => hosts.add_text(&text),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot read hosts file")
                }
            }
        }
        hosts
    }

    /// The system hosts file (unless `--no-hosts`) and every `--addn-hosts` file.
    pub fn for_config(config: &CacheConfig) -> Self {
        let mut paths: Vec<&Path> = Vec::new();
        if !config.no_hosts {
            paths.push(Path::new(ETC_HOSTS));
        }
        paths.extend(config.addn_hosts.iter().map(|p| p.as_path()));
        Hosts::load(&paths)
    }

    /// Addresses for a lower-case name.
    pub fn addresses(&self, name: &str) -> Option<&[IpAddr]> {
        self.by_name.get(name).map(Vec::as_slice)
    }

    /// The first name for an address.
    pub fn name_of(&self, ip: &IpAddr) -> Option<&str> {
        self.by_addr.get(ip).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_aliases_and_comments() {
        let mut hosts = Hosts::default();
        hosts.add_text("127.0.0.1 localhost\n::1 localhost ip6-localhost # loopback\n10.1.2.3 Pod-A.ns pod-a\n# 1.1.1.1 x\nbad line\n");
        assert_eq!(hosts.addresses("localhost").map(<[IpAddr]>::len), Some(2));
        assert_eq!(
            hosts.addresses("pod-a.ns"),
            Some(&["10.1.2.3".parse().expect("ip")][..])
        );
        assert_eq!(
            hosts.name_of(&"10.1.2.3".parse().expect("ip")),
            Some("pod-a.ns")
        );
        assert!(hosts.addresses("x").is_none());
    }
}
