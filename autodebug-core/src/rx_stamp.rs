//! Kernel receive stamps on TCP sockets (`SO_TIMESTAMPNS`), for timing reads by when bytes came in
//! off the wire rather than when a busy task got around to reading them.
//!
//! Both ends of a benchmark use them: autodebug-bench's HTTP/1.1 client times each token's arrival
//! with them, and the simulator stamps each request's arrival, so the two clocks being compared
//! measure the same moments. Elsewhere than Linux reads carry no stamp.
//!
//! ```
//! # async fn demo() -> std::io::Result<()> {
//! use autodebug_core::rx_stamp::{enable_rx_stamps, recv_stamped};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let stream = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
//! let stamping = enable_rx_stamps(&stream);
//! stream.readable().await?;
//! let mut buf = [0u8; 1024];
//! // Inside try_io, so WouldBlock clears readiness.
//! let (read, stamp) = stream.try_io(tokio::io::Interest::READABLE, || recv_stamped(&stream, &mut buf))?;
//! assert!(stamping || stamp.is_none());
//! # let _ = read;
//! # Ok(())
//! # }
//! ```

use std::io;

use tokio::net::TcpStream;

/// Asks the kernel to stamp every packet `socket` receives (`SO_TIMESTAMPNS`); false where it
/// cannot (then reads carry no stamp).
#[cfg(target_os = "linux")]
pub fn enable_rx_stamps(socket: &impl std::os::fd::AsRawFd) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int we own, on a descriptor the stream keeps open.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    result == 0
}

/// Asks the kernel to stamp every packet `socket` receives: not on this platform.
#[cfg(not(target_os = "linux"))]
pub fn enable_rx_stamps<T>(_socket: &T) -> bool {
    false
}

/// One non-blocking `recvmsg` into `buf`: the bytes read and the kernel's receive stamp (Unix ns)
/// of the last packet read, if any. Call it inside `TcpStream::try_io` so a `WouldBlock` clears
/// the socket's readiness.
#[cfg(target_os = "linux")]
pub fn recv_stamped(stream: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    use std::os::fd::AsRawFd;
    // Room for one SCM_TIMESTAMPNS (a timespec) with its header, aligned for cmsghdr.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; every pointer in it refers to a buffer that outlives the call.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg writes at most iov_len bytes into buf and msg_controllen into control.
    let read = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut message, libc::MSG_DONTWAIT) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within msg_control/msg_controllen as the kernel filled them.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_TIMESTAMPNS {
                let time: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast());
                stamp = u64::try_from(time.tv_sec)
                    .ok()
                    .and_then(|s| s.checked_mul(1_000_000_000))
                    .and_then(|ns| ns.checked_add(u64::try_from(time.tv_nsec).ok()?))
                    // A packet that came in before stamping was on carries 0.
                    .filter(|&ns| ns > 0);
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
    }
    Ok((read as usize, stamp))
}

/// One non-blocking read into `buf`; no stamps on this platform.
#[cfg(not(target_os = "linux"))]
pub fn recv_stamped(stream: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    stream.try_read(buf).map(|read| (read, None))
}
