//! DNS over TCP (RFC 7766): one task per connection, length-prefixed messages answered in order.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::handler::{Fast, PacketHandler, Transport};

/// How long an idle TCP connection stays open (RFC 7766 §6.2.3).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a TCP query's buffer starts at; it grows only as the client's bytes arrive.
const INITIAL_QUERY_CAPACITY: usize = 512;

/// Accepts TCP connections until `shutdown` is cancelled.
pub async fn serve_tcp<H: PacketHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let handler = handler.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        result = serve_tcp_connection(stream, peer, handler) => {
                            if let Err(error) = result {
                                tracing::debug!(%peer, %error, "TCP connection ended");
                            }
                        }
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads length-prefixed queries and answers each in order until the peer closes or idles.
async fn serve_tcp_connection<H: PacketHandler>(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => {
                result?;
            }
        }
        // The buffer grows as bytes arrive: a length prefix alone reserves nothing.
        let want = usize::from(u16::from_be_bytes(len));
        let mut packet = Vec::with_capacity(want.min(INITIAL_QUERY_CAPACITY));
        let mut body = (&mut stream).take(want as u64);
        tokio::time::timeout(TCP_IDLE_TIMEOUT, body.read_to_end(&mut packet))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "query body timed out"))??;
        if packet.len() < want {
            return Ok(());
        }
        match handler.fast(&packet, Transport::Tcp, peer, &mut out) {
            Fast::Reply => {}
            Fast::Drop => return Ok(()),
            Fast::Slow => {
                let Some(packet) = crate::handler::slow_copy(&packet) else {
                    return Ok(());
                };
                match handler.clone().slow(packet, Transport::Tcp, peer).await {
                    Some(reply) => out = reply,
                    None => return Ok(()),
                }
            }
        }
        let frame_len = u16::try_from(out.len()).unwrap_or(u16::MAX);
        let mut frame = Vec::with_capacity(out.len() + 2);
        frame.extend_from_slice(&frame_len.to_be_bytes());
        frame.extend_from_slice(&out[..usize::from(frame_len)]);
        stream.write_all(&frame).await?;
    }
}
