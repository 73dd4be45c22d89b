//! The receive low-water mark (`SO_RCVLOWAT`) of a TCP socket: the one socket option the
//! replication read loop needs that `socket2` does not offer.
//!
//! With a mark of N bytes, Linux reports the socket readable (and wakes an epoll waiter) only
//! once N bytes are waiting, the peer has closed, or the mark is lowered; lowering it wakes a
//! waiter at once if data is there. A busy stream of small messages then costs one wake-up
//! per N bytes instead of one per TCP segment.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Sets `SO_RCVLOWAT` on `fd` (the kernel caps it at half the receive buffer).
#[allow(
    unsafe_code,
    reason = "setsockopt has no safe wrapper in socket2 or std for SO_RCVLOWAT; the call is \
              sound as argued below"
)]
pub(crate) fn set_rcvlowat(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| io::Error::other("socklen_t overflow"))?;
    // SAFETY: `fd` is an open socket for the lifetime of the borrow; the option value points
    // to a live `c_int` and `len` is its size, as setsockopt(2) requires for SO_RCVLOWAT. The
    // kernel only reads `len` bytes from it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
