//! The one resolv.conf reader: the `nameserver` lines kube-dns and dns-cache fall back to.

use std::net::{IpAddr, SocketAddr};

/// The port a resolv.conf nameserver listens on.
const DNS_PORT: u16 = 53;

/// The `nameserver` addresses of a resolv.conf text, in order, on port 53. An IPv6 zone index
/// (`fe80::1%eth0`) is dropped (std cannot parse it); an `ip:port` form is kept as written;
/// anything else is skipped.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|word| {
            let ip = word.split('%').next().unwrap_or(word);
            match ip.parse::<IpAddr>() {
                Ok(ip) => Some(SocketAddr::new(ip, DNS_PORT)),
                Err(_) => ip.parse::<SocketAddr>().ok().filter(|a| a.port() != 0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines_in_order() {
        let text = "# c\nsearch a b\nnameserver 10.0.0.10\nnameserver fe80::1%eth0\n\
                    options ndots:5\nnameserver\nnameserver not-an-ip\nnameserver 10.0.0.11:5353\n";
        let servers = nameservers(text);
        assert_eq!(
            servers,
            [
                "10.0.0.10:53".parse().expect("addr"),
                "[fe80::1]:53".parse().expect("addr"),
                "10.0.0.11:5353".parse().expect("addr"),
            ]
        );
        assert!(nameservers("").is_empty());
    }
}
