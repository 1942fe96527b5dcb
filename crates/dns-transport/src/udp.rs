//! UDP serving: one OS thread per SO_REUSEPORT socket, blocking or with its own event loop.
//!
//! Each thread supervises its worker: a worker that panics (a bug reached by some packet) or
//! ends while the server is running is logged, counted in [`UdpStats`] and started again on a
//! copy of the same socket, so a server never keeps answering readiness with fewer threads.
//! If the socket cannot be copied the process exits (the kubelet restarts the container).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// The process exit status when a UDP worker cannot be restarted (EX_SOFTWARE).
const EXIT_WORKER_LOST: i32 = 70;
/// How long a worker that failed waits before it starts again (a panicking packet repeated
/// cannot spin the thread).
const RESTART_PAUSE: Duration = Duration::from_millis(10);

/// What the UDP workers' supervisors saw, for the metrics.
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Workers started again after a panic or an unexpected end.
    pub restarts: AtomicU64,
}

impl UdpStats {
    /// Appends `{prefix}_udp_worker_restarts_total`.
    pub fn render(&self, prefix: &str, out: &mut String) {
        daemon_support::prom::counter(
            out,
            &format!("{prefix}_udp_worker_restarts_total"),
            "UDP worker threads started again after a panic or an unexpected end.",
            self.restarts.load(Ordering::Relaxed),
        );
    }
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
        stats: Arc<UdpStats>,
        name: &str,
    ) -> io::Result<Self> {
        Self::start_with(
            sockets,
            handler,
            runtime,
            budget,
            stats,
            name,
            UdpMode::Blocking,
        )
    }

    /// Starts one thread per socket in `mode`; every slow query is charged to `budget`.
    pub fn start_with<H: PacketHandler>(
        sockets: Vec<UdpSocket>,
        handler: Arc<H>,
        runtime: tokio::runtime::Handle,
        budget: Arc<Budget>,
        stats: Arc<UdpStats>,
        name: &str,
        mode: UdpMode,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let mut threads = Vec::with_capacity(sockets.len());
        for (index, socket) in sockets.into_iter().enumerate() {
            let (handler, runtime, stop, cancel, budget, stats) = (
                handler.clone(),
                runtime.clone(),
                stop.clone(),
                cancel.clone(),
                budget.clone(),
                stats.clone(),
            );
            let thread_name = format!("{name}-udp-{index}");
            threads.push(
                std::thread::Builder::new()
                    .name(thread_name.clone())
                    .spawn(move || {
                        let running = || !stop.load(Ordering::Relaxed) && !cancel.is_cancelled();
                        supervise(
                            &thread_name,
                            &socket,
                            &stats,
                            running,
                            |socket| match mode {
                                UdpMode::Blocking => serve_udp_blocking(
                                    socket,
                                    handler.clone(),
                                    runtime.clone(),
                                    stop.clone(),
                                    budget.clone(),
                                ),
                                UdpMode::EventLoop => serve_udp_event_loop(
                                    socket,
                                    handler.clone(),
                                    cancel.clone(),
                                    budget.clone(),
                                ),
                            },
                        )
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

/// Runs `serve` on a copy of `socket` until it returns while `running` says the server is
/// stopping; a panic or an early return is logged, counted and followed by a fresh start.
fn supervise(
    thread: &str,
    socket: &UdpSocket,
    stats: &UdpStats,
    running: impl Fn() -> bool,
    serve: impl Fn(UdpSocket),
) {
    loop {
        let copy = match socket.try_clone() {
            Ok(copy) => copy,
            Err(error) => {
                tracing::error!(thread, %error, "cannot copy the UDP socket for a worker; exiting");
                std::process::exit(EXIT_WORKER_LOST);
            }
        };
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(copy)));
        if !running() {
            return;
        }
        let restarts = stats.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        match ended {
            Err(_) => tracing::error!(thread, restarts, "UDP worker panicked; starting it again"),
            Ok(()) => tracing::error!(thread, restarts, "UDP worker ended; starting it again"),
        }
        std::thread::sleep(RESTART_PAUSE);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::BudgetLimits;

    /// Echoes each datagram, and panics on `panic`.
    struct Echo;

    impl PacketHandler for Echo {
        fn fast(&self, packet: &[u8], _: Transport, _: SocketAddr, out: &mut Vec<u8>) -> Fast {
            assert!(packet != b"panic", "a poisoned packet");
            out.clear();
            out.extend_from_slice(packet);
            Fast::Reply
        }

        async fn slow(self: Arc<Self>, _: Vec<u8>, _: Transport, _: SocketAddr) -> Option<Vec<u8>> {
            None
        }

        fn overloaded(&self, _: &[u8], _: &mut Vec<u8>) -> bool {
            false
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_that_panics_is_started_again_on_the_same_socket() {
        for mode in [UdpMode::Blocking, UdpMode::EventLoop] {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let addr = socket.local_addr().expect("addr");
            let stats = Arc::new(UdpStats::default());
            let budget = Budget::new(BudgetLimits::entries(8), Arc::default(), "test");
            let workers = UdpWorkers::start_with(
                vec![socket],
                Arc::new(Echo),
                tokio::runtime::Handle::current(),
                budget,
                stats.clone(),
                "test",
                mode,
            )
            .expect("start");
            let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("client");
            client.connect(addr).await.expect("connect");
            let mut buf = [0u8; 64];
            for round in 0..3 {
                client.send(b"panic").await.expect("send");
                client.send(b"hello").await.expect("send");
                let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("{mode:?}: no answer after panic {round}"))
                    .expect("recv");
                assert_eq!(&buf[..n], b"hello", "{mode:?}");
            }
            assert_eq!(stats.restarts.load(Ordering::Relaxed), 3, "{mode:?}");
            let mut text = String::new();
            stats.render("test", &mut text);
            assert!(text.contains("test_udp_worker_restarts_total 3"), "{text}");
            workers.stop().await;
            assert_eq!(
                stats.restarts.load(Ordering::Relaxed),
                3,
                "a stop is not a restart"
            );
        }
    }
}
