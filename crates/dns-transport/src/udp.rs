//! UDP serving: one OS thread per SO_REUSEPORT socket, blocking or with its own event loop.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::handler::{Fast, PacketHandler, SlowQuery, Transport};

/// How often blocking UDP threads look at the stop flag.
const UDP_POLL: Duration = Duration::from_millis(200);
/// The largest UDP datagram.
const MAX_DATAGRAM: usize = 65535;

/// How a UDP worker thread waits for packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpMode {
    /// Blocking `recv_from`; the slow path runs on the shared tokio runtime. The cheapest hit
    /// path, for servers whose slow path is rare (kube-dns).
    Blocking,
    /// Each thread runs its own single-threaded event loop: the slow path runs on the thread that
    /// received the query, so a forwarded query wakes one thread twice (query, upstream reply)
    /// instead of handing off to another (dns-cache's misses).
    EventLoop,
}

/// UDP worker threads; stopping sets the flag and joins them.
#[derive(Debug)]
pub struct UdpWorkers {
    stop: Arc<AtomicBool>,
    /// Wakes the event-loop threads, which sleep in epoll rather than a timed receive.
    cancel: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl UdpWorkers {
    /// Starts one blocking thread per socket ([`UdpMode::Blocking`]).
    pub fn start<H: PacketHandler>(
        sockets: Vec<UdpSocket>,
        handler: Arc<H>,
        runtime: tokio::runtime::Handle,
        budget: Arc<Budget>,
        name: &str,
    ) -> io::Result<Self> {
        Self::start_with(sockets, handler, runtime, budget, name, UdpMode::Blocking)
    }

    /// Starts one thread per socket in `mode`; every slow query is charged to `budget`.
    pub fn start_with<H: PacketHandler>(
        sockets: Vec<UdpSocket>,
        handler: Arc<H>,
        runtime: tokio::runtime::Handle,
        budget: Arc<Budget>,
        name: &str,
        mode: UdpMode,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let mut threads = Vec::with_capacity(sockets.len());
        for (index, socket) in sockets.into_iter().enumerate() {
            let (handler, runtime, stop, cancel, budget) = (
                handler.clone(),
                runtime.clone(),
                stop.clone(),
                cancel.clone(),
                budget.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-udp-{index}"))
                    .spawn(move || match mode {
                        UdpMode::Blocking => {
                            serve_udp_blocking(socket, handler, runtime, stop, budget)
                        }
                        UdpMode::EventLoop => serve_udp_event_loop(socket, handler, cancel, budget),
                    })?,
            );
        }
        Ok(UdpWorkers {
            stop,
            cancel,
            threads,
        })
    }

    /// Stops the threads (within one poll interval) and waits for them.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cancel.cancel();
        for thread in self.threads {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn serve_udp_blocking<H: PacketHandler>(
    socket: UdpSocket,
    handler: Arc<H>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    budget: Arc<Budget>,
) {
    if let Err(error) = socket.set_read_timeout(Some(UDP_POLL)) {
        tracing::error!(%error, "cannot set a read timeout on the UDP socket");
    }
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "UDP receive failed");
                continue;
            }
        };
        let packet = &buf[..len];
        match handler.fast(packet, Transport::Udp, peer, &mut out) {
            Fast::Reply => send_udp(&socket, &out, peer),
            Fast::Drop => {}
            Fast::Slow => {
                let Some(query) = admit_slow(&budget, &*handler, packet, peer, &mut out) else {
                    if !out.is_empty() {
                        send_udp(&socket, &out, peer);
                    }
                    continue;
                };
                let (socket, handler) = (socket.clone(), handler.clone());
                runtime.spawn(async move {
                    let SlowQuery { packet, charge } = query;
                    if let Some(reply) = handler.slow(packet, Transport::Udp, peer).await {
                        send_udp(&socket, &reply, peer);
                    }
                    drop(charge);
                });
            }
        }
    }
}

fn serve_udp_event_loop<H: PacketHandler>(
    socket: UdpSocket,
    handler: Arc<H>,
    cancel: CancellationToken,
    budget: Arc<Budget>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start a UDP event loop");
            return;
        }
    };
    // Registered for reading only: replies are sent straight on the non-blocking socket (a full
    // send buffer drops the datagram, as UDP may), so sends never wake the loop with EPOLLOUT.
    let socket = match socket
        .set_read_timeout(None)
        .and_then(|()| socket.set_nonblocking(true))
        .and_then(|()| {
            let _guard = runtime.enter();
            register_readable(socket)
        }) {
        Ok(socket) => std::rc::Rc::new(socket),
        Err(error) => {
            tracing::error!(%error, "cannot register the UDP socket");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {}
            _ = timer_anchor() => {}
            _ = receive_loop(socket, handler, budget) => {}
        }
    });
}

/// Registers a UDP socket with the current tokio runtime for reading (and socket errors, such
/// as ICMP port unreachable on a connected socket) only. tokio's own `UdpSocket` always asks for
/// writability too, which wakes the loop with EPOLLOUT after every send; our sends go straight
/// to the non-blocking socket.
#[allow(unsafe_code)]
pub(crate) fn register_readable(socket: UdpSocket) -> io::Result<AsyncFd<UdpSocket>> {
    // SAFETY: the AsyncFd takes ownership of the socket, so the file descriptor stays open while
    // it is registered; it is closed only by AsyncFd's drop, after the deregistration.
    Ok(unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE | Interest::ERROR) }?)
}

/// How often [`timer_anchor`] ticks: under the shortest per-try timeout.
const TIMER_ANCHOR: Duration = Duration::from_millis(100);

/// Keeps a timer due within [`TIMER_ANCHOR`] at all times. Registering a timer that becomes the
/// earliest one makes tokio's time driver wake the event loop (an eventfd write and an extra
/// epoll_wait), which each forwarded query's retry timer did; with this one always earlier, only
/// the anchor's own ticks (10 a second) pay that.
async fn timer_anchor() {
    let mut ticks = tokio::time::interval(TIMER_ANCHOR);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
    }
}

/// Waits for packets and answers them; misses run as local tasks on this thread.
async fn receive_loop<H: PacketHandler>(
    socket: std::rc::Rc<AsyncFd<UdpSocket>>,
    handler: Arc<H>,
    budget: Arc<Budget>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut ready = match socket.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(ready) => ready,
            Err(error) => {
                tracing::warn!(%error, "UDP socket not readable");
                continue;
            }
        };
        // Drain what is queued before waiting again.
        loop {
            let (len, peer) = match ready.try_io(|fd| fd.get_ref().recv_from(&mut buf)) {
                Ok(Ok(received)) => received,
                // Would block: readiness is cleared, wait again.
                Err(_) => break,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "UDP receive failed");
                    break;
                }
            };
            let packet = &buf[..len];
            match handler.fast(packet, Transport::Udp, peer, &mut out) {
                Fast::Reply => send_udp(socket.get_ref(), &out, peer),
                Fast::Drop => {}
                Fast::Slow => {
                    let Some(query) = admit_slow(&budget, &*handler, packet, peer, &mut out) else {
                        if !out.is_empty() {
                            send_udp(socket.get_ref(), &out, peer);
                        }
                        continue;
                    };
                    let (socket, handler) = (socket.clone(), handler.clone());
                    tokio::task::spawn_local(async move {
                        let SlowQuery { packet, charge } = query;
                        if let Some(reply) = handler.slow(packet, Transport::Udp, peer).await {
                            send_udp(socket.get_ref(), &reply, peer);
                        }
                        drop(charge);
                    });
                }
            }
        }
    }
}

/// A slow query admitted to the budget, or `None` with `out` holding the overload reply (empty
/// to send nothing).
fn admit_slow<H: PacketHandler>(
    budget: &Arc<Budget>,
    handler: &H,
    packet: &[u8],
    peer: SocketAddr,
    out: &mut Vec<u8>,
) -> Option<SlowQuery> {
    out.clear();
    match crate::handler::admit_slow(budget, packet, peer) {
        Ok(admitted) => admitted,
        Err(_refusal) => {
            if !handler.overloaded(packet, out) {
                out.clear();
            }
            None
        }
    }
}

fn send_udp(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(reply, peer) {
        tracing::debug!(%error, %peer, "UDP send failed");
    }
}
