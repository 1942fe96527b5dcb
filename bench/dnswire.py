"""Minimal DNS wire format over raw UDP sockets (standard library only), for the benchmark's
programming-latency poller and its answer comparison."""

import socket
import struct

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33, "OPT": 41}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def encode_name(name):
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)


def build_query(qid, name, qtype, rd=True, edns=None):
    """A query; `edns` is an EDNS0 UDP payload size to advertise (None: no OPT record)."""
    flags = 0x0100 if rd else 0
    header = struct.pack("!HHHHHH", qid & 0xFFFF, flags, 1, 0, 0, 1 if edns else 0)
    qtype = TYPES.get(qtype, qtype) if isinstance(qtype, str) else qtype
    msg = header + encode_name(name) + struct.pack("!HH", qtype, 1)
    if edns:
        msg += b"\x00" + struct.pack("!HHIH", 41, edns, 0, 0)
    return msg


def read_name(msg, offset):
    labels = []
    jumped = False
    end = offset
    hops = 0
    while True:
        if offset >= len(msg):
            raise ValueError("name runs past the message")
        length = msg[offset]
        if length & 0xC0 == 0xC0:
            pointer = struct.unpack_from("!H", msg, offset)[0] & 0x3FFF
            if not jumped:
                end = offset + 2
            jumped = True
            offset = pointer
            hops += 1
            if hops > 64:
                raise ValueError("compression loop")
            continue
        if length == 0:
            if not jumped:
                end = offset + 1
            break
        labels.append(msg[offset + 1 : offset + 1 + length].decode("ascii", "replace").lower())
        offset += 1 + length
    return ".".join(labels) + ".", end


def rdata_text(msg, rtype, start, length):
    if rtype == 1 and length == 4:
        return socket.inet_ntop(socket.AF_INET, msg[start : start + 4])
    if rtype == 28 and length == 16:
        return socket.inet_ntop(socket.AF_INET6, msg[start : start + 16])
    if rtype in (2, 5, 12):
        return read_name(msg, start)[0]
    if rtype == 33:
        prio, weight, port = struct.unpack_from("!HHH", msg, start)
        return f"{prio} {weight} {port} {read_name(msg, start + 6)[0]}"
    if rtype == 6:
        mname, off = read_name(msg, start)
        rname, off = read_name(msg, off)
        serial, refresh, retry, expire, minimum = struct.unpack_from("!IIIII", msg, off)
        # The serial differs by design (kube-dns uses the clock): leave it out.
        return f"{mname} {rname} {refresh} {retry} {expire} {minimum}"
    return msg[start : start + length].hex()


def parse_response(msg):
    """Returns a dict: id, rcode (name), flags, and sections as lists of
    (owner, type name, ttl, rdata text)."""
    qid, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg, 0)
    offset = 12
    for _ in range(qd):
        _, offset = read_name(msg, offset)
        offset += 4
    sections = []
    for count in (an, ns, ar):
        records = []
        for _ in range(count):
            owner, offset = read_name(msg, offset)
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", msg, offset)
            offset += 10
            if rtype != 41:
                records.append((owner, TYPE_NAMES.get(rtype, str(rtype)), ttl, rdata_text(msg, rtype, offset, rdlen)))
            offset += rdlen
        sections.append(records)
    return {
        "id": qid,
        "rcode": RCODES.get(flags & 0xF, str(flags & 0xF)),
        "aa": bool(flags & 0x0400),
        "tc": bool(flags & 0x0200),
        "answer": sections[0],
        "authority": sections[1],
        "additional": sections[2],
    }


class Client:
    """A connected UDP socket to one server."""

    def __init__(self, host, port, timeout=1.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect((host, port))
        self.sock.settimeout(timeout)
        self.next_id = 1

    def query(self, name, qtype, edns=None):
        qid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFF
        self.sock.send(build_query(qid, name, qtype, edns=edns))
        while True:
            data = self.sock.recv(65535)
            if len(data) >= 12 and struct.unpack_from("!H", data, 0)[0] == qid:
                return parse_response(data)

    def close(self):
        self.sock.close()
