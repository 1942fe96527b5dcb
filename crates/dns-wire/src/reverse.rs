//! Reverse names: `in-addr.arpa` and `ip6.arpa` owners of addresses, and back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 helper for tests and callers: the dotted `in-addr.arpa` owner of an address.
pub fn reverse_name_v4(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

/// The 32-nibble `ip6.arpa` owner of an address.
pub fn reverse_name_v6(ip: Ipv6Addr) -> String {
    let mut s = String::with_capacity(72);
    for byte in ip.octets().iter().rev() {
        for nibble in [byte & 0xF, byte >> 4] {
            s.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
            s.push('.');
        }
    }
    s.push_str("ip6.arpa");
    s
}

/// Parses a complete reverse-lookup name.
pub fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(head) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut count = 0;
        for label in head.rsplit('.') {
            if count == 4 || label.is_empty() || (label.len() > 1 && label.starts_with('0')) {
                return None;
            }
            octets[count] = label.parse().ok()?;
            count += 1;
        }
        return (count == 4).then(|| IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let head = name.strip_suffix(".ip6.arpa")?;
    let mut value: u128 = 0;
    let mut count = 0;
    for label in head.rsplit('.') {
        if label.len() != 1 || count == 32 {
            return None;
        }
        let nibble = label.chars().next()?.to_digit(16)?;
        value = (value << 4) | u128::from(nibble);
        count += 1;
    }
    (count == 32).then(|| IpAddr::V6(Ipv6Addr::from(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name_v4(Ipv4Addr::new(10, 0, 0, 1)),
            "1.0.0.10.in-addr.arpa"
        );
        let v6 = reverse_name_v6("2001:db8::1".parse().expect("ip"));
        assert!(v6.starts_with("1.0.0.0.0.0.0.0"));
        assert!(v6.ends_with("8.b.d.0.1.0.0.2.ip6.arpa"));
    }
}
