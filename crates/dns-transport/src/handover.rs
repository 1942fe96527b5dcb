//! Handing a port over to a successor without losing a query.
//!
//! Two instances bound to one address with SO_REUSEPORT form one reuseport group: the kernel
//! spreads new packets (and new TCP connections) over every socket of the group, by hash. When
//! the old instance closes its sockets, whatever waits in their queues is lost. So the old
//! instance, on SIGTERM, first attaches a classic BPF program to the group
//! (SO_ATTACH_REUSEPORT_CBPF) that sends every new packet to a socket past its own: the group's
//! sockets are numbered in the order they joined, and the old instance's `own` sockets come
//! first, so indices `own..` are the successor's. Its own queues then only drain, and it can
//! close them empty after the lameduck.
//!
//! Closing the old sockets one by one reshuffles the group (the kernel moves the last socket
//! into each freed place), so an index past the old ones can point at nothing while some old
//! sockets are still open, and the kernel's hash could then pick one of them. Just before
//! closing, the old instance therefore pins the group to index `own` alone ([`pin_to_successor`]):
//! while any old socket is open that place holds one of the successor's sockets (given a
//! successor with at least as many; the manifest runs both with `--workers=2`).
//!
//! Without a successor the program's index is past the end of the group, and the kernel falls
//! back to its hash: the old instance keeps answering alone. The program stays with the group
//! after the old instance leaves, so the successor takes it off ([`reset_steering`]) once it is
//! alone in the group, and any instance does at start.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

// linux/filter.h: classic BPF opcodes and the ancillary "random number" load.
/// BPF_LD | BPF_W | BPF_ABS
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_ALU | BPF_MOD | BPF_K
const BPF_ALU_MOD_K: u16 = 0x94;
/// BPF_ALU | BPF_ADD | BPF_K
const BPF_ALU_ADD_K: u16 = 0x04;
/// BPF_RET | BPF_A
const BPF_RET_A: u16 = 0x16;
const SKF_AD_OFF: i32 = -0x1000;
const SKF_AD_RANDOM: i32 = 56;

/// BPF_RET | BPF_K
const BPF_RET_K: u16 = 0x06;

fn insn(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The program: a random index in `first..first+count`.
pub fn range_program(first: u32, count: u32) -> Vec<libc::sock_filter> {
    vec![
        insn(BPF_LD_W_ABS, (SKF_AD_OFF + SKF_AD_RANDOM) as u32),
        insn(BPF_ALU_MOD_K, count.max(1)),
        insn(BPF_ALU_ADD_K, first),
        insn(BPF_RET_A, 0),
    ]
}

/// The program for the closing: index `index` alone.
pub fn index_program(index: u32) -> Vec<libc::sock_filter> {
    vec![insn(BPF_RET_K, index)]
}

/// Steers the reuseport group of `socket` (UDP socket or TCP listener) to the `theirs` sockets
/// that joined after our `own` ones, spread over them.
pub fn steer_to_successor(socket: &impl AsFd, own: u32, theirs: u32) -> io::Result<()> {
    attach(socket, range_program(own.max(1), theirs))
}

/// Steers the group to the `theirs` sockets that joined before ours (an older instance that
/// stays while this newer one stops: a rollback), spread over them. They come first in the
/// group, and our closing sockets, the last ones, never move them.
pub fn steer_to_predecessor(socket: &impl AsFd, theirs: u32) -> io::Result<()> {
    attach(socket, range_program(0, theirs))
}

/// Pins the group to the predecessor's first socket (index 0), before ours close.
pub fn pin_to_predecessor(socket: &impl AsFd) -> io::Result<()> {
    attach(socket, index_program(0))
}

/// Takes any program off the group (one a predecessor left): back to the kernel's hash.
pub fn reset_steering(socket: &impl AsFd) -> io::Result<()> {
    match setsockopt(socket, libc::SO_DETACH_REUSEPORT_BPF, &0 as &libc::c_int) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// How many sockets are in the reuseport group of `addr`: UDP sockets bound to it
/// (unconnected), or TCP listeners on it, counted in `/proc/net` (every process's, in this
/// network namespace).
pub fn group_size(addr: SocketAddr, tcp: bool) -> io::Result<usize> {
    let file = match (tcp, addr.is_ipv6()) {
        (false, false) => "/proc/net/udp",
        (false, true) => "/proc/net/udp6",
        (true, false) => "/proc/net/tcp",
        (true, true) => "/proc/net/tcp6",
    };
    Ok(count_bound(&std::fs::read_to_string(file)?, addr, tcp))
}

/// The kernel's text for a local address in `/proc/net/{udp,tcp}{,6}`: each 32-bit word of
/// the address as the host reads it, in hex, then the port.
fn proc_net_address(addr: SocketAddr) -> String {
    let words: Vec<String> = match addr.ip() {
        IpAddr::V4(v4) => vec![format!("{:08X}", u32::from_ne_bytes(v4.octets()))],
        IpAddr::V6(v6) => v6
            .octets()
            .chunks_exact(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{}:{:04X}", words.concat(), addr.port())
}

fn count_bound(table: &str, addr: SocketAddr, tcp: bool) -> usize {
    let local = proc_net_address(addr);
    // TCP: listening (0A); UDP: unconnected (07, TCP_CLOSE).
    let state = if tcp { "0A" } else { "07" };
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace().skip(1);
            fields.next() == Some(local.as_str()) && fields.nth(1) == Some(state)
        })
        .count()
}

/// Sends the group's packets to the successor's first socket only: safe while our sockets
/// close one by one.
pub fn pin_to_successor(socket: &impl AsFd, own: u32) -> io::Result<()> {
    attach(socket, index_program(own.max(1)))
}

fn attach(socket: &impl AsFd, mut program: Vec<libc::sock_filter>) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // The kernel copies the program during the call; `program` outlives it.
    setsockopt(socket, libc::SO_ATTACH_REUSEPORT_CBPF, &fprog)
}

/// SOL_SOCKET option `option` set to `value`.
#[allow(unsafe_code)]
fn setsockopt<T>(socket: &impl AsFd, option: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` of `size_of::<T>()` bytes for the duration of the call (for
    // SO_ATTACH_REUSEPORT_CBPF a sock_fprog whose filter pointer the caller keeps alive), and
    // the socket is borrowed from the caller.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;

    fn group(addr: SocketAddr, n: usize) -> io::Result<Vec<UdpSocket>> {
        crate::bind::bind_udp_group(addr, n)
    }

    fn received(sockets: &[UdpSocket]) -> Vec<usize> {
        sockets
            .iter()
            .map(|s| {
                let mut buf = [0u8; 16];
                let mut n = 0;
                while s.recv(&mut buf).is_ok() {
                    n += 1;
                }
                n
            })
            .collect()
    }

    #[test]
    fn after_steering_every_packet_goes_to_the_successor() -> io::Result<()> {
        let old = group(SocketAddr::from(([127, 0, 0, 1], 0)), 2)?;
        let addr = old[0].local_addr()?;
        let new = group(addr, 2)?;
        for s in old.iter().chain(&new) {
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
        }
        assert_eq!(group_size(addr, false)?, 4);
        steer_to_successor(&old[0], 2, 2)?;
        // Each packet from its own source port, so the hash alone would spread them.
        for _ in 0..64 {
            UdpSocket::bind("127.0.0.1:0")?.send_to(b"q", addr)?;
        }
        let old_got = received(&old);
        let new_got = received(&new);
        assert_eq!(old_got, vec![0, 0], "the old instance's sockets only drain");
        assert_eq!(new_got.iter().sum::<usize>(), 64);
        assert!(
            new_got.iter().all(|&n| n > 0),
            "spread over the successor's sockets: {new_got:?}"
        );
        Ok(())
    }

    #[test]
    fn pinned_the_successor_gets_every_packet_while_the_old_sockets_close() -> io::Result<()> {
        let mut old = group(SocketAddr::from(([127, 0, 0, 1], 0)), 3)?;
        let addr = old[0].local_addr()?;
        let new = group(addr, 3)?;
        for s in old.iter().chain(&new) {
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
        }
        pin_to_successor(&old[0], 3)?;
        // Close the old sockets one at a time, sending between the closes.
        let mut sent = 0;
        while !old.is_empty() {
            for _ in 0..16 {
                UdpSocket::bind("127.0.0.1:0")?.send_to(b"q", addr)?;
                sent += 1;
            }
            assert_eq!(
                received(&old).iter().sum::<usize>(),
                0,
                "an old socket got a packet"
            );
            old.remove(0);
        }
        assert_eq!(received(&new).iter().sum::<usize>(), sent);
        Ok(())
    }

    #[test]
    fn a_successor_with_fewer_sockets_gets_everything_and_a_reset_gives_the_hash_back()
    -> io::Result<()> {
        let old = group(SocketAddr::from(([127, 0, 0, 1], 0)), 3)?;
        let addr = old[0].local_addr()?;
        let new = group(addr, 1)?;
        for s in old.iter().chain(&new) {
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
        }
        steer_to_successor(&old[0], 3, 1)?;
        for _ in 0..32 {
            UdpSocket::bind("127.0.0.1:0")?.send_to(b"q", addr)?;
        }
        assert_eq!(received(&old), vec![0, 0, 0]);
        assert_eq!(received(&new), vec![32]);
        // A later instance takes a left-over program off at start.
        reset_steering(&new[0])?;
        reset_steering(&new[0])?;
        for _ in 0..64 {
            UdpSocket::bind("127.0.0.1:0")?.send_to(b"q", addr)?;
        }
        assert!(received(&old).iter().sum::<usize>() > 0, "the hash is back");
        Ok(())
    }

    #[test]
    fn the_group_is_counted_from_proc_net() -> io::Result<()> {
        let v4 = group(SocketAddr::from(([127, 0, 0, 1], 0)), 3)?;
        assert_eq!(group_size(v4[0].local_addr()?, false)?, 3);
        let listener = crate::bind::bind_tcp_shared(v4[0].local_addr()?)?;
        let second = crate::bind::bind_tcp_shared(v4[0].local_addr()?)?;
        assert_eq!(group_size(listener.local_addr()?, true)?, 2);
        drop(second);
        assert_eq!(group_size(listener.local_addr()?, true)?, 1);
        let v6 = group(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)), 2)?;
        assert_eq!(group_size(v6[0].local_addr()?, false)?, 2);
        assert_eq!(
            proc_net_address("10.96.0.10:53".parse().expect("addr")),
            format!("{:08X}:0035", u32::from_ne_bytes([10, 96, 0, 10]))
        );
        Ok(())
    }

    #[test]
    fn a_newer_instance_stopping_first_hands_back_to_the_older_one() -> io::Result<()> {
        let old = group(SocketAddr::from(([127, 0, 0, 1], 0)), 2)?;
        let addr = old[0].local_addr()?;
        let mut new = group(addr, 2)?;
        for s in old.iter().chain(&new) {
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
        }
        steer_to_predecessor(&new[0], 2)?;
        for _ in 0..32 {
            UdpSocket::bind("127.0.0.1:0")?.send_to(b"q", addr)?;
        }
        assert_eq!(received(&new), vec![0, 0]);
        assert_eq!(received(&old).iter().sum::<usize>(), 32);
        pin_to_predecessor(&new[0])?;
        let mut sent = 0;
        while !new.is_empty() {
            for _ in 0..16 {
                UdpSocket::bind("127.0.0.1:0")?.send_to(b"q", addr)?;
                sent += 1;
            }
            assert_eq!(
                received(&new).iter().sum::<usize>(),
                0,
                "a closing socket got one"
            );
            new.remove(0);
        }
        assert_eq!(received(&old).iter().sum::<usize>(), sent);
        Ok(())
    }

    #[test]
    fn without_a_successor_the_old_instance_keeps_answering() -> io::Result<()> {
        let old = group(SocketAddr::from(([127, 0, 0, 1], 0)), 1)?;
        let addr = old[0].local_addr()?;
        old[0].set_read_timeout(Some(Duration::from_millis(50)))?;
        steer_to_successor(&old[0], 1, 0)?;
        for _ in 0..8 {
            UdpSocket::bind("127.0.0.1:0")?.send_to(b"q", addr)?;
        }
        assert_eq!(received(&old), vec![8]);
        Ok(())
    }
}
