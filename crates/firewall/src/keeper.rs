//! The socket keeper: one process per network namespace that holds the netfilter sockets
//! calico-cni processes are done with, and lets them all go once nobody has handed it one
//! for [`QUIET_MS`].
//!
//! Why: releasing a netfilter netlink socket makes the kernel flush nf_tables' destroy work
//! (`nft_rcv_nl_event`) while holding the commit mutex, and every commit (every ADD's and
//! DEL's batch) queues that work behind an RCU grace period. A socket released while
//! plugins are committing therefore stalls the next commit by up to a grace period (10-15
//! ms here), whoever releases it. Held until the host is quiet, the sockets are released
//! when the destroy work is long done, and nobody waits.
//!
//! How: a plugin connects to the abstract unix socket [`NAME`] (per netns, as abstract
//! names are), checks that the keeper runs as its own user (`SO_PEERCRED`), and passes its
//! socket (`SCM_RIGHTS`): a few microseconds. When no keeper answers, the plugin binds the
//! name itself and starts one with [`detach::spawn_shared`]; the keeper exits once quiet.
//! Past [`CAP`] held sockets it releases them all at once (one flush for the lot).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The keeper's abstract address (after the leading NUL).
const NAME: &[u8] = b"calico-nft-keeper";
/// How long without a new socket before the keeper releases everything and exits: several
/// grace periods of a loaded host, so the destroy work of the last commit is done.
const QUIET_MS: i32 = 250;
/// Sockets held at most (under the default descriptor limit of 1024).
const CAP: usize = 512;

fn address() -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path[1..].iter_mut().zip(NAME) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + NAME.len();
    (addr, len as libc::socklen_t)
}

fn unix_socket() -> io::Result<OwnedFd> {
    // SAFETY: a new descriptor, owned from here on.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Hands `sock` to this netns's keeper. `false` when there is none (or it is not ours): the
/// caller then still holds the only reference.
pub fn hand_over(sock: RawFd) -> bool {
    let Ok(conn) = unix_socket() else { return false };
    let (addr, len) = address();
    // SAFETY: connect with the address just built; the socket is non-blocking, so a full
    // backlog is EAGAIN, not a wait.
    if unsafe { libc::connect(conn.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) } != 0 {
        return false;
    }
    // Only a keeper of our own user gets a netfilter socket.
    // SAFETY: an all-zero ucred is valid; getsockopt fills it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut cred_len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut cred_len,
        )
    };
    if rc != 0 || cred.uid != unsafe { libc::geteuid() } {
        return false;
    }
    send_fd(conn.as_raw_fd(), sock)
}

/// One byte with `fd` attached.
fn send_fd(conn: RawFd, fd: RawFd) -> bool {
    let mut byte = 1u8;
    let mut iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
    let mut control = [0u64; 4]; // CMSG_SPACE(sizeof(int)) is 24 bytes, 8-aligned
                                 // SAFETY: an all-zero msghdr is valid; it points at the iovec and control above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_* only compute on the buffer given.
    unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(conn, &msg, libc::MSG_NOSIGNAL) == 1
    }
}

/// Binds [`NAME`] for a new keeper: `None` when another process holds it.
pub fn listen() -> Option<OwnedFd> {
    let fd = unix_socket().ok()?;
    let (addr, len) = address();
    // SAFETY: bind and listen on our own descriptor.
    unsafe {
        if libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
            return None;
        }
        if libc::listen(fd.as_raw_fd(), 128) != 0 {
            return None;
        }
    }
    Some(fd)
}

/// What a new keeper starts with: its first socket and the bound listener.
#[derive(Clone, Copy)]
pub struct Start {
    pub sock: RawFd,
    pub listener: RawFd,
}

/// The keeper's body, in a process of [`detach::spawn_shared`]: raw system calls only.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub extern "C" fn keep(arg: *mut libc::c_void) -> libc::c_int {
    use detach::raw::syscall;
    // SAFETY: the argument is the `Start` spawn_shared copied for us; only raw system calls
    // on our own descriptors follow, and memory on this stack.
    unsafe {
        let start = *(arg as *const Start);
        detach::raw::close_all_but(start.sock, start.listener);
        let mut held = [0 as RawFd; CAP];
        held[0] = start.sock;
        let mut n = 1;
        let release = |held: &[RawFd]| {
            for fd in held {
                syscall(libc::SYS_close, [*fd as usize, 0, 0, 0, 0, 0]);
            }
        };
        loop {
            let mut pfd = libc::pollfd { fd: start.listener, events: libc::POLLIN, revents: 0 };
            let r = syscall(libc::SYS_poll, [&mut pfd as *mut libc::pollfd as usize, 1, QUIET_MS as usize, 0, 0, 0]);
            if r == -(libc::EINTR as isize) {
                continue;
            }
            if r <= 0 {
                break; // quiet (or the listener failed): let go
            }
            let conn = syscall(libc::SYS_accept4, [start.listener as usize, 0, 0, libc::SOCK_CLOEXEC as usize, 0, 0]);
            if conn < 0 {
                continue;
            }
            // The sender writes right after connecting; never wait on one that does not.
            let mut cfd = libc::pollfd { fd: conn as RawFd, events: libc::POLLIN, revents: 0 };
            if syscall(libc::SYS_poll, [&mut cfd as *mut libc::pollfd as usize, 1, 100, 0, 0, 0]) == 1 {
                if let Some(fd) = recv_fd(conn as RawFd) {
                    if n == CAP {
                        release(&held[..n]);
                        n = 0;
                    }
                    held[n] = fd;
                    n += 1;
                }
            }
            syscall(libc::SYS_close, [conn as usize, 0, 0, 0, 0, 0]);
        }
        // The name first, so that a plugin from now on starts a keeper of its own.
        syscall(libc::SYS_close, [start.listener as usize, 0, 0, 0, 0, 0]);
        release(&held[..n]);
    }
    0
}

/// The descriptor attached to one message (raw system calls only).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn recv_fd(conn: RawFd) -> Option<RawFd> {
    let mut byte = 0u8;
    let mut iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
    let mut control = [0u64; 4];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let r = detach::raw::syscall(
        libc::SYS_recvmsg,
        [conn as usize, &mut msg as *mut libc::msghdr as usize, libc::MSG_CMSG_CLOEXEC as usize, 0, 0, 0],
    );
    if r != 1 || (msg.msg_controllen as usize) < std::mem::size_of::<libc::cmsghdr>() {
        return None;
    }
    // The header by hand (CMSG_FIRSTHDR is a libc function here): at the buffer's start.
    let cmsg = control.as_ptr().cast::<libc::cmsghdr>();
    if (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
        return None;
    }
    let data = (cmsg as *const u8).add(std::mem::size_of::<libc::cmsghdr>());
    Some(std::ptr::read_unaligned(data.cast::<RawFd>()))
}
