//! Binding listeners before anything runs (so tests bind port 0 and read the port back).

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds one UDP socket with SO_REUSEPORT.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    // Room for bursts while a worker is busy; the kernel caps it at rmem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds `count` UDP sockets to one port (the first may ask for port 0; the rest join it).
pub fn bind_udp_group(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let mut addr = addr;
    let mut sockets = Vec::with_capacity(count.max(1));
    for _ in 0..count.max(1) {
        let socket = bind_udp(addr)?;
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// A DNS port: its UDP group and the TCP listener on the same port.
#[derive(Debug)]
pub struct DnsPort {
    pub udp: Vec<UdpSocket>,
    pub tcp: std::net::TcpListener,
}

/// Why a DNS port could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind DNS over {protocol} on {addr}: {source}")]
pub struct DnsPortError {
    pub protocol: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// How many fresh ports to try when port 0 was asked for and TCP finds the kernel's UDP choice
/// taken (the UDP and TCP port spaces are separate, so the kernel's pick is only free for UDP).
const PORT_ZERO_TRIES: usize = 16;

/// Binds `workers` UDP sockets and a TCP listener to one port. With port 0 the kernel picks the
/// UDP port; if that port is already taken for TCP, the group is dropped and a fresh port tried.
pub fn bind_dns_port(addr: SocketAddr, workers: usize) -> Result<DnsPort, DnsPortError> {
    bind_dns_port_with(addr, workers, bind_tcp)
}

fn bind_dns_port_with(
    addr: SocketAddr,
    workers: usize,
    mut bind_tcp: impl FnMut(SocketAddr) -> io::Result<std::net::TcpListener>,
) -> Result<DnsPort, DnsPortError> {
    let tries = if addr.port() == 0 { PORT_ZERO_TRIES } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = bind_udp_group(addr, workers).map_err(|source| DnsPortError {
            protocol: "UDP",
            addr,
            source,
        })?;
        let bound = udp
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(addr);
        match bind_tcp(bound) {
            Ok(tcp) => return Ok(DnsPort { udp, tcp }),
            Err(source) => {
                let retry = addr.port() == 0 && source.kind() == io::ErrorKind::AddrInUse;
                last = Some(DnsPortError {
                    protocol: "TCP",
                    addr: bound,
                    source,
                });
                if !retry {
                    break;
                }
            }
        }
    }
    Err(last.expect("at least one try"))
}

/// [`bind_dns_port`] for an instance that hands its port over to a successor
/// ([`crate::handover`]): the TCP listener also joins a reuseport group, so the next instance
/// can bind beside it.
pub fn bind_dns_port_shared(addr: SocketAddr, workers: usize) -> Result<DnsPort, DnsPortError> {
    bind_dns_port_with(addr, workers, bind_tcp_shared)
}

/// Binds a listening TCP socket (non-blocking, ready for tokio).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    bind_tcp_with(addr, false)
}

/// [`bind_tcp`] with SO_REUSEPORT, for a listener a successor instance will share.
pub fn bind_tcp_shared(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    bind_tcp_with(addr, true)
}

fn bind_tcp_with(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The number of UDP sockets to use when the operator says 0: one per CPU.
pub fn default_workers(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK_ANY: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

    #[test]
    fn port_zero_moves_on_when_tcp_has_the_udp_port() -> Result<(), Box<dyn std::error::Error>> {
        // The first three UDP picks are "taken" for TCP; the fourth port gets both.
        let mut refused = Vec::new();
        let port = bind_dns_port_with(LOOPBACK_ANY, 2, |addr| {
            if refused.len() < 3 {
                refused.push(addr);
                Err(io::Error::from(io::ErrorKind::AddrInUse))
            } else {
                bind_tcp(addr)
            }
        })?;
        assert_eq!(refused.len(), 3);
        let udp_port = port.udp[0].local_addr()?.port();
        assert_eq!(port.udp.len(), 2);
        for socket in &port.udp {
            assert_eq!(socket.local_addr()?.port(), udp_port);
        }
        assert_eq!(port.tcp.local_addr()?.port(), udp_port);
        Ok(())
    }

    #[test]
    fn port_zero_gives_up_after_its_tries_and_says_tcp() {
        let mut calls = 0;
        let Err(error) = bind_dns_port_with(LOOPBACK_ANY, 1, |_| {
            calls += 1;
            Err(io::Error::from(io::ErrorKind::AddrInUse))
        }) else {
            panic!("every TCP bind failed, yet the port was bound");
        };
        assert_eq!(calls, PORT_ZERO_TRIES);
        assert_eq!(error.protocol, "TCP");
        assert_ne!(error.addr.port(), 0);
    }

    #[test]
    fn a_fixed_port_taken_for_tcp_is_an_error_naming_tcp() -> io::Result<()> {
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = taken.local_addr()?;
        let Err(error) = bind_dns_port(addr, 1) else {
            panic!("{addr} is taken for TCP, yet it was bound");
        };
        assert_eq!(error.protocol, "TCP");
        assert_eq!(error.addr, addr);
        assert_eq!(error.source.kind(), io::ErrorKind::AddrInUse);
        assert!(error.to_string().contains("DNS over TCP"));
        Ok(())
    }
}
