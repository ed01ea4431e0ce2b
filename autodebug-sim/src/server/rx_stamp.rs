//! Kernel receive timestamps for request arrival (`sim_arrival_ns`).
//!
//! A handler's own clock reads the arrival late by however long the request waited in this
//! server's runtime (behind a burst of token writes at high concurrency, or a wake-up of an idle
//! process), and a client comparing its TTFT with the server's would see that wait as its own
//! error. With `SO_TIMESTAMPNS` the kernel stamps each received packet when it comes in off the
//! (loopback) wire, and [`StampedListener`] reads those stamps with `recvmsg`: the arrival is then
//! the moment the request's first bytes reached this host, whatever the server did meanwhile.
//! Elsewhere than Linux, or when the kernel gives no stamp, the handler's clock is used.
//!
//! The socket calls themselves are `autodebug_core::rx_stamp`'s, which autodebug-bench's HTTP
//! client also uses from the other end of the same kind of socket.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use autodebug_core::rx_stamp::{enable_rx_stamps, recv_stamped};
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections with TCP_NODELAY and kernel receive stamps on.
pub struct StampedListener {
    inner: TcpListener,
}

impl StampedListener {
    pub fn new(inner: TcpListener) -> Self {
        // On the listener too: the kernel turns receive stamping on a moment after the first
        // socket asks (a deferred static key), so asking at start-up stamps even the first
        // request; accepted sockets inherit the flag.
        enable_rx_stamps(&inner);
        StampedListener { inner }
    }
}

impl Listener for StampedListener {
    type Io = StampedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, address)) => {
                    // Tokens are written one small chunk at a time; Nagle would batch them and
                    // skew timings.
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "could not set TCP_NODELAY");
                    }
                    let stamps = enable_rx_stamps(&stream);
                    return (StampedStream { inner: stream, stamps, first_rx_ns: Arc::default() }, address);
                }
                // Out of descriptors or a connection reset before accept: as axum's own
                // listener does, wait a little instead of spinning.
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection whose reads record the kernel's receive stamp of a request's first bytes.
pub struct StampedStream {
    inner: TcpStream,
    stamps: bool,
    /// Unix ns of the first read since the handler last took it; 0 when none.
    first_rx_ns: Arc<AtomicU64>,
}

/// The connection's arrival stamp, as connect info for the handlers.
#[derive(Clone, Debug, Default)]
pub struct RxStamp(Arc<AtomicU64>);

impl RxStamp {
    /// The kernel's receive time (Unix ns) of the current request's first bytes, once: the next
    /// request on this connection starts afresh.
    pub fn take(&self) -> Option<u64> {
        Some(self.0.swap(0, Ordering::AcqRel)).filter(|&ns| ns > 0)
    }
}

impl Connected<IncomingStream<'_, StampedListener>> for RxStamp {
    fn connect_info(stream: IncomingStream<'_, StampedListener>) -> Self {
        RxStamp(stream.io().first_rx_ns.clone())
    }
}

impl AsyncRead for StampedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.stamps {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        loop {
            std::task::ready!(this.inner.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match this.inner.try_io(tokio::io::Interest::READABLE, || recv_stamped(&this.inner, unfilled)) {
                Ok((read, stamp)) => {
                    if let Some(ns) = stamp {
                        let _ = this.first_rx_ns.compare_exchange(0, ns, Ordering::AcqRel, Ordering::Acquire);
                    }
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for StampedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn unix_now_ns() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    }

    /// Real loopback sockets: the stamp is the kernel's, taken between the client's write and
    /// the server's read, once per request, and the bytes pass through unchanged.
    #[tokio::test]
    async fn reads_carry_the_kernels_receive_stamp_once_per_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let address = listener.local_addr().expect("address");
        let mut listener = StampedListener::new(listener);
        // The kernel enables stamping shortly after it is first asked for (see `new`).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut client = TcpStream::connect(address).await.expect("connect");
        let (mut server, _) = listener.accept().await;
        assert!(server.stamps, "SO_TIMESTAMPNS is available on Linux");
        let stamp = RxStamp(server.first_rx_ns.clone());
        assert_eq!(stamp.take(), None, "nothing received yet");

        let before = unix_now_ns();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
        // The server reads late on purpose: the stamp must still be the packet's arrival.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let mut buf = [0u8; 64];
        let read = server.read(&mut buf).await.expect("read");
        let after_read = unix_now_ns();
        assert_eq!(&buf[..read], b"GET / HTTP/1.1\r\n\r\n");
        let received = stamp.take().expect("a stamp for the first read");
        assert!(received >= before.saturating_sub(1_000_000), "stamp {received} before the write at {before}");
        assert!(
            after_read - received >= 25_000_000,
            "stamp {received} is the read time ({after_read}), not the packet's arrival"
        );
        assert_eq!(stamp.take(), None, "taken once");

        server.write_all(b"ok").await.expect("server writes");
        let read = client.read(&mut buf).await.expect("client reads");
        assert_eq!(&buf[..read], b"ok");
    }
}
