//! A small route-netlink client: links (look up, create, bring up, delete) and their addresses
//! (list, add, delete). Messages are built by pure functions ([`new_link_message`] and friends)
//! so their bytes are tested without a kernel; [`Netlink`] sends them and reads the kernel's
//! acknowledgements, turning a negative errno into an [`io::Error`].

use std::io::{self, Read};
use std::net::IpAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

// The kernel's ABI (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h).
const NETLINK_ROUTE: i32 = 0;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const IFF_UP: u32 = 0x1;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const RT_SCOPE_UNIVERSE: u8 = 0;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
/// Interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub up: bool,
    /// The link type (`dummy`, `veth`...), None for a physical device.
    pub kind: Option<String>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A message under construction: the header's length is filled in by [`Message::finish`].
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        Message(buf)
    }

    fn ifinfomsg(mut self, index: u32, flags: u32, change: u32) -> Self {
        self.0.push(AF_UNSPEC);
        self.0.push(0);
        self.0.extend_from_slice(&0u16.to_ne_bytes());
        self.0.extend_from_slice(&index.to_ne_bytes());
        self.0.extend_from_slice(&flags.to_ne_bytes());
        self.0.extend_from_slice(&change.to_ne_bytes());
        self
    }

    fn ifaddrmsg(mut self, family: u8, prefix: u8, flags: u8, index: u32) -> Self {
        self.0
            .extend_from_slice(&[family, prefix, flags, RT_SCOPE_UNIVERSE]);
        self.0.extend_from_slice(&index.to_ne_bytes());
        self
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        self.push_attr(kind, data);
        self
    }

    fn push_attr(&mut self, kind: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(align4(self.0.len()), 0);
    }

    /// An attribute holding attributes.
    fn nested(mut self, kind: u16, inner: &[(u16, &[u8])]) -> Self {
        let start = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&kind.to_ne_bytes());
        for (k, d) in inner {
            self.push_attr(*k, d);
        }
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn name_bytes(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// RTM_NEWLINK creating link `name` of `kind` ("dummy"); fails with EEXIST if it exists.
pub fn new_link_message(seq: u32, name: &str, kind: &str) -> Vec<u8> {
    Message::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
    )
    .ifinfomsg(0, 0, 0)
    .attr(IFLA_IFNAME, &name_bytes(name))
    .nested(IFLA_LINKINFO, &[(IFLA_INFO_KIND, kind.as_bytes())])
    .finish()
}

/// RTM_GETLINK for the link named `name`.
pub fn get_link_message(seq: u32, name: &str) -> Vec<u8> {
    Message::new(RTM_GETLINK, NLM_F_REQUEST, seq)
        .ifinfomsg(0, 0, 0)
        .attr(IFLA_IFNAME, &name_bytes(name))
        .finish()
}

/// RTM_NEWLINK setting IFF_UP on link `index`.
pub fn set_up_message(seq: u32, index: u32) -> Vec<u8> {
    Message::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq)
        .ifinfomsg(index, IFF_UP, IFF_UP)
        .finish()
}

/// RTM_DELLINK of link `index`.
pub fn delete_link_message(seq: u32, index: u32) -> Vec<u8> {
    Message::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq)
        .ifinfomsg(index, 0, 0)
        .finish()
}

fn ip_parts(ip: IpAddr) -> (u8, u8, Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => (AF_INET, 32, v4.octets().to_vec()),
        IpAddr::V6(v6) => (AF_INET6, 128, v6.octets().to_vec()),
    }
}

/// RTM_NEWADDR of `ip` as a host address (/32 or /128) on link `index`, without duplicate
/// address detection (so an IPv6 address can be bound at once).
pub fn new_address_message(seq: u32, index: u32, ip: IpAddr) -> Vec<u8> {
    let (family, prefix, bytes) = ip_parts(ip);
    Message::new(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
    )
    .ifaddrmsg(family, prefix, IFA_F_NODAD, index)
    .attr(IFA_LOCAL, &bytes)
    .attr(IFA_ADDRESS, &bytes)
    .finish()
}

/// RTM_DELADDR of `ip`/`prefix` from link `index` (the prefix as the link holds it).
pub fn delete_address_message(seq: u32, index: u32, ip: IpAddr, prefix: u8) -> Vec<u8> {
    let (family, _, bytes) = ip_parts(ip);
    Message::new(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, seq)
        .ifaddrmsg(family, prefix, 0, index)
        .attr(IFA_LOCAL, &bytes)
        .attr(IFA_ADDRESS, &bytes)
        .finish()
}

/// RTM_GETADDR dump of every address.
pub fn dump_addresses_message(seq: u32) -> Vec<u8> {
    Message::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq)
        .ifaddrmsg(AF_UNSPEC, 0, 0, 0)
        .finish()
}

/// One message read back: its type, flags and payload (after the header).
struct Reply<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message")
}

/// Splits one datagram into its messages.
fn messages(mut buf: &[u8]) -> io::Result<Vec<Reply<'_>>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_at(buf, 0).ok_or_else(malformed)? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(malformed());
        }
        out.push(Reply {
            kind: u16_at(buf, 4).ok_or_else(malformed)?,
            flags: u16_at(buf, 6).ok_or_else(malformed)?,
            seq: u32_at(buf, 8).ok_or_else(malformed)?,
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// The attributes of a payload after its fixed part.
fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let (Some(len), Some(kind)) = (u16_at(buf, 0), u16_at(buf, 2)) else {
            break;
        };
        let len = usize::from(len);
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// The error code of an NLMSG_ERROR payload (0 is an acknowledgement).
fn error_code(payload: &[u8]) -> io::Result<i32> {
    Ok(i32::from_ne_bytes(
        payload
            .get(..4)
            .ok_or_else(malformed)?
            .try_into()
            .map_err(|_| malformed())?,
    ))
}

/// A link message's index, flags and kind (`IFLA_LINKINFO`/`IFLA_INFO_KIND`).
fn parse_link(payload: &[u8]) -> io::Result<Link> {
    let index = u32_at(payload, 4).ok_or_else(malformed)?;
    let flags = u32_at(payload, 8).ok_or_else(malformed)?;
    let kind = payload
        .get(IFINFOMSG_LEN..)
        .map(attributes)
        .unwrap_or_default()
        .into_iter()
        .find(|(kind, _)| *kind == IFLA_LINKINFO)
        .and_then(|(_, info)| {
            attributes(info)
                .into_iter()
                .find(|(kind, _)| *kind == IFLA_INFO_KIND)
        })
        .map(|(_, name)| {
            String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_owned()
        });
    Ok(Link {
        index,
        up: flags & IFF_UP != 0,
        kind,
    })
}

/// The addresses (with the prefix length) of an RTM_NEWADDR payload about link `index`.
fn address_of(payload: &[u8], index: u32) -> Vec<(IpAddr, u8)> {
    if payload.len() < IFADDRMSG_LEN || u32_at(payload, 4) != Some(index) {
        return Vec::new();
    }
    let (family, prefix) = (payload[0], payload[1]);
    attributes(&payload[IFADDRMSG_LEN..])
        .into_iter()
        .filter(|(kind, _)| *kind == IFA_LOCAL || *kind == IFA_ADDRESS)
        .filter_map(|(_, data)| match family {
            AF_INET => <[u8; 4]>::try_from(data).ok().map(IpAddr::from),
            AF_INET6 => <[u8; 16]>::try_from(data).ok().map(IpAddr::from),
            _ => None,
        })
        .map(|ip| (ip, prefix))
        .collect()
}

/// A route-netlink socket.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket to the kernel (replies within 5 s, or an error).
    pub fn open() -> io::Result<Self> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW.cloexec(),
            Some(Protocol::from(NETLINK_ROUTE)),
        )?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; 64 << 10],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn recv(&mut self) -> io::Result<usize> {
        (&self.socket).read(&mut self.buf)
    }

    /// Sends the request `build(seq)` and feeds every reply of that sequence number to
    /// `handle` until it returns a result (`Some`).
    fn request<T>(
        &mut self,
        build: impl FnOnce(u32) -> Vec<u8>,
        mut handle: impl FnMut(&Reply<'_>) -> Option<io::Result<T>>,
    ) -> io::Result<T> {
        let seq = self.next_seq();
        self.socket.send(&build(seq))?;
        loop {
            let n = self.recv()?;
            for reply in messages(&self.buf[..n])? {
                if reply.seq != seq {
                    continue;
                }
                if let Some(result) = handle(&reply) {
                    return result;
                }
            }
        }
    }

    /// Sends a request with NLM_F_ACK and waits for its acknowledgement.
    fn acked(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> io::Result<()> {
        self.request(build, |reply| {
            (reply.kind == NLMSG_ERROR).then(|| match error_code(reply.payload)? {
                0 => Ok(()),
                code => Err(io::Error::from_raw_os_error(-code)),
            })
        })
    }

    /// The link named `name`, or None when there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        self.request(
            |seq| get_link_message(seq, name),
            |reply| match reply.kind {
                NLMSG_ERROR => Some(match error_code(reply.payload) {
                    Ok(code) if code == -libc::ENODEV => Ok(None),
                    Ok(0) => Err(malformed()),
                    Ok(code) => Err(io::Error::from_raw_os_error(-code)),
                    Err(e) => Err(e),
                }),
                RTM_NEWLINK => Some(parse_link(reply.payload).map(Some)),
                _ => None,
            },
        )
    }

    /// Creates link `name` of `kind`.
    pub fn create_link(&mut self, name: &str, kind: &str) -> io::Result<()> {
        self.acked(|seq| new_link_message(seq, name, kind))
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.acked(|seq| set_up_message(seq, index))
    }

    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        self.acked(|seq| delete_link_message(seq, index))
    }

    /// Adds `ip` to link `index` (present already is fine).
    pub fn add_address(&mut self, index: u32, ip: IpAddr) -> io::Result<()> {
        self.acked(|seq| new_address_message(seq, index, ip))
    }

    pub fn delete_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        self.acked(|seq| delete_address_message(seq, index, ip, prefix))
    }

    /// The addresses on link `index`, with their prefix lengths.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        let mut found = Vec::new();
        self.request(dump_addresses_message, |reply| match reply.kind {
            NLMSG_DONE => Some(Ok(())),
            NLMSG_ERROR => Some(match error_code(reply.payload) {
                Ok(code) => Err(io::Error::from_raw_os_error(-code)),
                Err(e) => Err(e),
            }),
            RTM_NEWADDR => {
                for ip in address_of(reply.payload, index) {
                    if !found.contains(&ip) {
                        found.push(ip);
                    }
                }
                None
            }
            _ if reply.flags & NLM_F_MULTI == 0 => Some(Ok(())),
            _ => None,
        })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dummy_link_request_has_the_kernels_layout() {
        let msg = new_link_message(7, "nodelocaldns", "dummy");
        // Header: length, RTM_NEWLINK, request|ack|create|excl, seq 7, port 0.
        assert_eq!(u32_at(&msg, 0), Some(msg.len() as u32));
        assert_eq!(u16_at(&msg, 4), Some(RTM_NEWLINK));
        assert_eq!(u16_at(&msg, 6), Some(0x1 | 0x4 | 0x400 | 0x200));
        assert_eq!(u32_at(&msg, 8), Some(7));
        assert_eq!(u32_at(&msg, 12), Some(0));
        // ifinfomsg: all zero (any family, no index, no flags).
        assert_eq!(&msg[16..32], &[0u8; 16]);
        let attrs = attributes(&msg[32..]);
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0], (IFLA_IFNAME, &b"nodelocaldns\0"[..]));
        assert_eq!(attrs[1].0, IFLA_LINKINFO);
        assert_eq!(
            attributes(attrs[1].1),
            vec![(IFLA_INFO_KIND, &b"dummy"[..])]
        );
        // Every attribute is padded to four bytes, and so is the message.
        assert_eq!(msg.len() % 4, 0);
        assert_eq!(msg.len(), 16 + 16 + align4(4 + 13) + 4 + align4(4 + 5));
    }

    #[test]
    fn address_requests_carry_a_host_prefix_and_no_dad() {
        let msg = new_address_message(1, 9, "169.254.20.10".parse().expect("ip"));
        assert_eq!(u16_at(&msg, 4), Some(RTM_NEWADDR));
        assert_eq!(&msg[16..20], &[AF_INET, 32, IFA_F_NODAD, RT_SCOPE_UNIVERSE]);
        assert_eq!(u32_at(&msg, 20), Some(9));
        let attrs = attributes(&msg[24..]);
        assert_eq!(attrs[0], (IFA_LOCAL, &[169u8, 254, 20, 10][..]));
        assert_eq!(attrs[1], (IFA_ADDRESS, &[169u8, 254, 20, 10][..]));
        let v6 = new_address_message(2, 9, "fd00::53".parse().expect("ip"));
        assert_eq!(&v6[16..18], &[AF_INET6, 128]);
        assert_eq!(attributes(&v6[24..])[0].1.len(), 16);
    }

    #[test]
    fn up_and_delete_requests_name_the_index() {
        let up = set_up_message(3, 42);
        assert_eq!(u32_at(&up, 20), Some(42));
        assert_eq!(u32_at(&up, 24), Some(IFF_UP));
        assert_eq!(u32_at(&up, 28), Some(IFF_UP));
        let del = delete_link_message(4, 42);
        assert_eq!(u16_at(&del, 4), Some(RTM_DELLINK));
        assert_eq!(u32_at(&del, 20), Some(42));
    }

    #[test]
    fn a_link_reply_gives_index_state_and_kind() {
        // What the kernel sends back for a dummy link is laid out like our request.
        let mut reply = new_link_message(1, "nodelocaldns", "dummy");
        reply[20..24].copy_from_slice(&7u32.to_ne_bytes());
        reply[24..28].copy_from_slice(&IFF_UP.to_ne_bytes());
        let link = parse_link(&reply[16..]).expect("parses");
        assert_eq!(
            link,
            Link {
                index: 7,
                up: true,
                kind: Some("dummy".into())
            }
        );
        let plain = get_link_message(1, "eth0");
        assert_eq!(parse_link(&plain[16..]).expect("parses").kind, None);
        let addr = new_address_message(1, 7, "169.254.20.10".parse().expect("ip"));
        assert_eq!(
            address_of(&addr[16..], 7),
            vec![("169.254.20.10".parse::<IpAddr>().expect("ip"), 32); 2]
        );
        assert!(address_of(&addr[16..], 8).is_empty());
    }

    #[test]
    fn broken_replies_are_errors_not_panics() {
        assert!(messages(&[40, 0, 0, 0, 2, 0]).is_ok());
        let mut short = vec![0u8; 16];
        short[0] = 200;
        assert!(messages(&short).is_err());
        short[0] = 3;
        assert!(messages(&short).is_err());
        assert!(attributes(&[9, 0, 1, 0]).is_empty());
    }
}
