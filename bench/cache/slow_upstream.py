#!/usr/bin/env python3
"""An internet-like upstream for the benchmark's `internet` phase (standard library only).

Answers every A query with 192.0.2.1 (TTL 300) after a delay chosen from the query name, so
every forwarder asked the same names sees the same delays, and every retry of a name waits as
long as the first try:

    70%  0-2 ms          20%  20-200 ms          9%  300-1500 ms          1%  never

The bucket and the delay come from a hash of the lower-cased name; `--mix` changes the shares.
Prints `listening <port>` once ready; SIGTERM stops it.
"""

import argparse
import asyncio
import hashlib
import signal
import struct
import sys

# (share in per cent, lowest ms, highest ms); None = never answer.
DEFAULT_MIX = [(70, 0, 2), (20, 20, 200), (9, 300, 1500), (1, None, None)]


def delay_for(name, mix):
    """Seconds to wait before answering `name`, or None to stay silent. Deterministic."""
    h = hashlib.blake2b(name.lower().encode(), digest_size=8).digest()
    bucket = int.from_bytes(h[:4], "big") % 10000  # 0.01% steps
    spot = int.from_bytes(h[4:], "big") / 2**32
    edge = 0
    for share, lo, hi in mix:
        edge += share * 100
        if bucket < edge:
            return None if lo is None else (lo + (hi - lo) * spot) / 1000.0
    return None


def question(msg):
    """(name, end offset of the question) of a query, or None."""
    if len(msg) < 12 or msg[2] & 0x80 or struct.unpack_from("!H", msg, 4)[0] != 1:
        return None
    at, labels = 12, []
    while at < len(msg):
        n = msg[at]
        if n == 0:
            return ".".join(labels), at + 5
        if n & 0xC0:
            return None
        labels.append(msg[at + 1 : at + 1 + n].decode("ascii", "replace"))
        at += 1 + n
    return None


def answer(msg, end):
    """NOERROR with one A record, echoing the question (and an OPT if the query had one)."""
    qid, flags = struct.unpack_from("!HH", msg, 0)
    has_opt = struct.unpack_from("!H", msg, 10)[0] > 0
    out = struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100), 1, 1, 0, 1 if has_opt else 0)
    out += msg[12:end]
    out += struct.pack("!HHHIH4s", 0xC00C, 1, 1, 300, 4, bytes([192, 0, 2, 1]))
    if has_opt:
        out += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    return out


class Upstream(asyncio.DatagramProtocol):
    def __init__(self, mix):
        self.mix = mix
        self.transport = None
        self.stats = {"queries": 0, "silent": 0}

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        q = question(data)
        if q is None:
            return
        self.stats["queries"] += 1
        delay = delay_for(q[0], self.mix)
        if delay is None:
            self.stats["silent"] += 1
            return
        reply = answer(data, q[1])
        loop = asyncio.get_running_loop()
        if delay <= 0:
            self.transport.sendto(reply, addr)
        else:
            loop.call_later(delay, self.transport.sendto, reply, addr)


async def serve(port, mix):
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: Upstream(mix), local_addr=("127.0.0.1", port))
    print(f"listening {transport.get_extra_info('sockname')[1]}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    print(f"queries {proto.stats['queries']} silent {proto.stats['silent']}", flush=True)
    transport.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mix", default=None, help="share:lo:hi,... in per cent and ms; 'never' for lo:hi")
    a = p.parse_args()
    mix = DEFAULT_MIX
    if a.mix:
        mix = []
        for part in a.mix.split(","):
            share, _, rest = part.partition(":")
            if rest == "never":
                mix.append((float(share), None, None))
            else:
                lo, hi = rest.split(":")
                mix.append((float(share), float(lo), float(hi)))
    asyncio.run(serve(a.port, mix))


if __name__ == "__main__":
    sys.exit(main())
