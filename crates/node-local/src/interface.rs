//! The interface that carries the cache's addresses: created as a dummy link when missing (as
//! NodeLocal DNSCache does), or an existing link the operator names, or left alone.

use std::io;
use std::net::IpAddr;

use crate::netlink::{Link, MAX_IFNAME, Netlink};

/// What to do about the interface (`--interface-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InterfaceKind {
    /// A `dummy` link, created when missing and deleted on teardown.
    #[default]
    Dummy,
    /// A link that must exist already (a veth end, a bridge); only the addresses are added,
    /// and removed on teardown.
    Existing,
    /// Nothing: the addresses are managed elsewhere.
    None,
}

impl std::str::FromStr for InterfaceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dummy" => Ok(InterfaceKind::Dummy),
            "existing" => Ok(InterfaceKind::Existing),
            "none" => Ok(InterfaceKind::None),
            other => Err(format!("{other:?} is not dummy, existing or none")),
        }
    }
}

/// The interface and the addresses it must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    pub name: String,
    pub kind: InterfaceKind,
}

/// The default interface name, NodeLocal DNSCache's.
pub const DEFAULT_INTERFACE: &str = "nodelocaldns";

/// Checks an interface name the kernel would take.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFNAME {
        return Err(format!("{name:?} is not 1 to {MAX_IFNAME} bytes"));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

/// Why the interface could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("cannot open a netlink socket: {0}")]
    Netlink(#[source] io::Error),
    #[error("interface {0} does not exist (--interface-kind=existing)")]
    Missing(String),
    #[error(
        "cannot create dummy interface {name}: {source} (a kernel without the dummy module: create the interface yourself and use --interface-kind=existing)"
    )]
    Create {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "interface {name} is a {kind} link, not a dummy one: refusing to take it over (--interface-kind=existing uses an existing link)"
    )]
    NotDummy { name: String, kind: String },
    #[error("interface {name}: {what}: {source}")]
    Io {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

fn io_err(name: &str, what: &'static str) -> impl FnOnce(io::Error) -> InterfaceError {
    let name = name.to_owned();
    move |source| InterfaceError::Io { name, what, source }
}

/// A link `--interface-kind=dummy` may use: a dummy one.
fn check_dummy(name: &str, link: &Link) -> Result<(), InterfaceError> {
    match link.kind.as_deref() {
        Some("dummy") => Ok(()),
        other => Err(InterfaceError::NotDummy {
            name: name.to_owned(),
            kind: other.unwrap_or("physical").to_owned(),
        }),
    }
}

/// What [`ensure`] had to change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub created: bool,
    pub brought_up: bool,
    pub addresses_added: usize,
    /// Addresses a dummy link held that are no longer ours (a changed `--local-ip`).
    pub addresses_removed: usize,
}

impl Changes {
    pub fn any(&self) -> bool {
        self.created || self.brought_up || self.addresses_added > 0 || self.addresses_removed > 0
    }
}

/// Makes sure the interface exists, is up and holds every address of `ips`; with `prune`, a
/// dummy link (ours alone) is left holding only those.
pub fn ensure(
    spec: &InterfaceSpec,
    ips: &[IpAddr],
    prune: bool,
) -> Result<Changes, InterfaceError> {
    let mut changes = Changes::default();
    if spec.kind == InterfaceKind::None {
        return Ok(changes);
    }
    let err = |what| io_err(&spec.name, what);
    let mut nl = Netlink::open().map_err(InterfaceError::Netlink)?;
    let link = match nl.link(&spec.name).map_err(err("look up"))? {
        Some(link) => link,
        None if spec.kind == InterfaceKind::Existing => {
            return Err(InterfaceError::Missing(spec.name.clone()));
        }
        None => {
            match nl.create_link(&spec.name, "dummy") {
                Ok(()) => changes.created = true,
                // Another instance made it in between.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => {
                    return Err(InterfaceError::Create {
                        name: spec.name.clone(),
                        source,
                    });
                }
            }
            nl.link(&spec.name)
                .map_err(err("look up"))?
                .ok_or_else(|| InterfaceError::Missing(spec.name.clone()))?
        }
    };
    if spec.kind == InterfaceKind::Dummy {
        check_dummy(&spec.name, &link)?;
    }
    let Link { index, up, .. } = link;
    if !up {
        nl.set_up(index).map_err(err("bring up"))?;
        changes.brought_up = true;
    }
    let present = nl.addresses(index).map_err(err("list addresses"))?;
    for ip in ips {
        if !present.iter().any(|(p, _)| p == ip) {
            nl.add_address(index, *ip).map_err(err("add an address"))?;
            changes.addresses_added += 1;
        }
    }
    if prune && spec.kind == InterfaceKind::Dummy {
        for (ip, prefix) in present.iter().filter(|(ip, _)| !ips.contains(ip)) {
            // IPv6 link-local addresses come with the link.
            if let IpAddr::V6(v6) = ip
                && v6.is_unicast_link_local()
            {
                continue;
            }
            nl.delete_address(index, *ip, *prefix)
                .map_err(err("delete an address"))?;
            changes.addresses_removed += 1;
        }
    }
    Ok(changes)
}

/// Removes what [`ensure`] made: the dummy link, or the addresses from an existing one.
pub fn teardown(spec: &InterfaceSpec, ips: &[IpAddr]) -> Result<(), InterfaceError> {
    if spec.kind == InterfaceKind::None {
        return Ok(());
    }
    let err = |what| io_err(&spec.name, what);
    let mut nl = Netlink::open().map_err(InterfaceError::Netlink)?;
    let Some(link) = nl.link(&spec.name).map_err(err("look up"))? else {
        return Ok(());
    };
    match spec.kind {
        InterfaceKind::Dummy => {
            // Never delete a link that is not a dummy one, whatever its name.
            check_dummy(&spec.name, &link)?;
            nl.delete_link(link.index).map_err(err("delete"))
        }
        _ => {
            let present = nl.addresses(link.index).map_err(err("list addresses"))?;
            for (ip, prefix) in present.iter().filter(|(ip, _)| ips.contains(ip)) {
                nl.delete_address(link.index, *ip, *prefix)
                    .map_err(err("delete an address"))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_names_are_checked() {
        assert_eq!("dummy".parse(), Ok(InterfaceKind::Dummy));
        assert_eq!("existing".parse(), Ok(InterfaceKind::Existing));
        assert_eq!("none".parse(), Ok(InterfaceKind::None));
        assert!("veth".parse::<InterfaceKind>().is_err());
        assert!(valid_name(DEFAULT_INTERFACE).is_ok());
        assert!(valid_name("").is_err());
        assert!(valid_name("a-name-too-long-x").is_err());
        assert!(valid_name("a/b").is_err());
        assert!(valid_name("a b").is_err());
    }
}
