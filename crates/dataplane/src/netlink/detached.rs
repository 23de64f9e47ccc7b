//! Deleting a link without waiting for the kernel's RCU barrier.
//!
//! An RTM_DELLINK request is processed in the sender's own `sendmsg()`. The
//! kernel first unregisters the device: it is taken out of its namespace, its
//! name is free again, its addresses and routes are flushed (for a veth, the
//! peer goes in the same batch), and the RTM_DELLINK notification is
//! multicast. Only then, in `netdev_run_todo()`, does it wait in
//! `rcu_barrier()` for a full RCU grace period before freeing the device.
//! That wait is most of a deletion: 18–22 ms of a 20 ms `ip link del` on the
//! development machine, asleep in state D, no CPU. Nothing anyone can observe
//! changes during it.
//!
//! [`crate::Namespace::delete_link_detached`] leaves that wait to a detached process:
//! it subscribes to link notifications, starts a helper process that sends the
//! request (all its other file descriptors closed, so a runtime reading our
//! stdout still sees EOF when we exit), and returns as soon as the kernel's
//! own notification for that ifindex arrives. The helper sits out the
//! barrier, then exits: a short-lived plugin has usually exited by then and
//! init reaps it; a long-lived process reaps it (and unmaps its stack) at its
//! next detached call, or with [`detach::reap`]. If
//! the notification is lost (a full socket buffer), the helper's result,
//! sent through a pipe, still answers; only the speed-up is lost.

use std::io;
use std::num::NonZeroI32;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rtnetlink::packet_core::{ErrorMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::{absent_as_none, validate_ifname, Netlink};
use crate::error::{Error, Result};

impl Netlink {
    /// Deletes the link called `name` like [`Netlink::delete_link`], but
    /// returns once the kernel has unregistered it, without waiting for the
    /// RCU barrier that follows (see the module docs). Returns `false` if
    /// there was no such link.
    ///
    /// Only for a client of the calling thread's namespace
    /// ([`Netlink::current`]): the notification socket is opened here. Use
    /// [`crate::Namespace::delete_link_detached`], which checks that.
    pub(crate) fn delete_link_detached(&self, name: &str) -> Result<bool> {
        validate_ifname(name)?;
        let Some(link) = self.link_by_name(name)? else {
            return Ok(false);
        };
        let op = || format!("delete link {name}");
        let io_err = |e: io::Error| Error::Socket(e);

        // Subscribe before the request exists, so its notification cannot be missed.
        let mut events = Socket::new(NETLINK_ROUTE).map_err(io_err)?;
        events.bind(&SocketAddr::new(0, 0)).map_err(io_err)?;
        events.add_membership(libc::RTNLGRP_LINK).map_err(io_err)?;
        let mut requester = Socket::new(NETLINK_ROUTE).map_err(io_err)?;
        requester.bind_auto().map_err(io_err)?;
        let request = del_link_request(link.index);
        let (status_read, status_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err(e.into()))?;
        // Allocated before the fork: pages first touched after it would be copy-on-write.
        let mut buf = vec![0u8; 16 * 1024];

        if let Err(error) = spawn_detached(requester.as_raw_fd(), status_write.as_raw_fd(), &request) {
            // No process to spare (a pids limit, say), or no helper on this target: delete
            // here, and wait.
            tracing::debug!(%error, name, "could not detach the link deletion");
            return self.delete_link(name);
        }
        drop(status_write);
        drop(requester);
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout { op: op(), timeout: self.timeout });
            }
            let (events_ready, status_ready) = wait_readable(&events, &status_read, left)?;
            if events_ready {
                match events.recv(&mut &mut buf[..], 0) {
                    Ok(len) if notifies_deletion(&buf[..len], link.index) => return Ok(true),
                    Ok(_) => {}
                    // ENOBUFS: notifications were dropped, ours perhaps; the pipe answers.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
            if status_ready {
                return match read_status(&status_read) {
                    Some(0) => Ok(true),
                    // The same errors, with the same errno, as a deletion made in place.
                    Some(errno) => {
                        let mut nack = ErrorMessage::default();
                        nack.code = NonZeroI32::new(-errno);
                        absent_as_none(Err(Error::netlink(op(), rtnetlink::Error::NetlinkError(nack))))
                            .map(|deleted: Option<()>| deleted.is_some())
                    }
                    None => Err(Error::netlink(op(), rtnetlink::Error::RequestFailed)),
                };
            }
        }
    }
}

/// RTM_DELLINK for `index`, with an ACK, serialized.
fn del_link_request(index: u32) -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.header.index = index;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)));
    message.finalize();
    let mut bytes = vec![0u8; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// True when `datagram` holds the kernel's RTM_DELLINK for link `index`
/// (a bridge's per-port RTM_DELLINK, family AF_BRIDGE, does not count).
///
/// Reads only the headers: the message type, then the `ifinfomsg` that starts every link
/// message (family at byte 0, index at bytes 4..8). Parsing whole messages with their
/// attributes (statistics, per-family settings...) cost a DEL about 50,000 instructions,
/// measured with callgrind.
fn notifies_deletion(datagram: &[u8], index: u32) -> bool {
    const NLMSG_HDRLEN: usize = 16;
    const IFINFOMSG_LEN: usize = 16;
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return false;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if kind == libc::RTM_DELLINK && len >= NLMSG_HDRLEN + IFINFOMSG_LEN {
            let info = &rest[NLMSG_HDRLEN..];
            let family = info[0];
            let link = u32::from_ne_bytes([info[4], info[5], info[6], info[7]]);
            if link == index && i32::from(family) != libc::AF_BRIDGE {
                return true;
            }
        }
        // Messages are 4-byte aligned within a datagram.
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    false
}

fn wait_readable(events: &Socket, status: &OwnedFd, left: Duration) -> Result<(bool, bool)> {
    use std::os::fd::AsFd;
    // SAFETY: the socket outlives this call.
    let events_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(events.as_raw_fd()) };
    let mut fds = [PollFd::new(events_fd, PollFlags::POLLIN), PollFd::new(status.as_fd(), PollFlags::POLLIN)];
    let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(millis)) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(Error::Socket(e.into())),
    }
    let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
    Ok((ready(&fds[0]), ready(&fds[1])))
}

/// The errno the helper wrote (0 for success), `None` if it wrote nothing.
fn read_status(pipe: &OwnedFd) -> Option<i32> {
    let mut bytes = [0u8; 4];
    match nix::unistd::read(pipe, &mut bytes) {
        Ok(4) => Some(i32::from_ne_bytes(bytes)),
        _ => None,
    }
}

/// What the helper process needs, copied next to its stack ([`detach::spawn_shared`]).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[derive(Clone, Copy)]
#[repr(C)]
struct DeleteJob {
    socket: RawFd,
    status: RawFd,
    len: usize,
    request: [u8; 64],
    ack: [u8; 512],
}

/// Sends `request` on `socket` from a detached process that shares this one's memory
/// ([`detach::spawn_shared`]); it reads the ACK and writes its errno (0 on success) to
/// `status`. Elsewhere than x86_64 and aarch64, `Unsupported`: the caller deletes in place.
fn spawn_detached(socket: RawFd, status: RawFd, request: &[u8]) -> Result<()> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let mut job = DeleteJob { socket, status, len: request.len(), request: [0; 64], ack: [0; 512] };
        job.request
            .get_mut(..request.len())
            .ok_or_else(|| Error::Socket(io::Error::other("netlink request longer than 64 bytes")))?
            .copy_from_slice(request);
        // SAFETY: `delete_job` only makes raw system calls on its own copy of the job.
        unsafe { detach::spawn_shared(delete_job, job) }.map_err(Error::Socket)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (socket, status, request);
        Err(Error::Socket(io::ErrorKind::Unsupported.into()))
    }
}

/// The helper's whole life: close what it does not need (the runtime's pipes above all),
/// send, read the ACK, report. Raw system calls only (see [`detach::spawn_shared`]).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
extern "C" fn delete_job(arg: *mut libc::c_void) -> libc::c_int {
    use detach::raw::{close_all_but, syscall};
    // SAFETY: `arg` is this process's own copy of the job, written before it started.
    unsafe {
        let job = &mut *arg.cast::<DeleteJob>();
        close_all_but(job.socket, job.status);
        let fd = job.socket as usize;
        let sent = syscall(libc::SYS_sendto, [fd, job.request.as_ptr() as usize, job.len, 0, 0, 0]);
        let errno = if sent < 0 {
            (sent as i32).wrapping_neg()
        } else {
            let got = syscall(libc::SYS_recvfrom, [fd, job.ack.as_mut_ptr() as usize, job.ack.len(), 0, 0, 0]);
            if got < 0 {
                (got as i32).wrapping_neg()
            } else {
                ack_errno(&job.ack, got as usize)
            }
        };
        let errno_ptr = &errno as *const i32 as usize;
        syscall(libc::SYS_write, [job.status as usize, errno_ptr, 4, 0, 0, 0]);
    }
    0
}

/// The errno of a netlink ACK of `len` bytes in `ack` (0 for success): an nlmsghdr
/// (16 bytes) of type NLMSG_ERROR, then the negative errno. Cannot panic.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn ack_errno(ack: &[u8; 512], len: usize) -> i32 {
    let kind = u16::from_ne_bytes([ack[4], ack[5]]);
    if len < 20 || kind != libc::NLMSG_ERROR as u16 {
        return libc::EPROTO;
    }
    i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]).wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_dellink_for_the_index() {
        let bytes = del_link_request(42);
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(message.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                assert_eq!(link.header.index, 42)
            }
            other => panic!("unexpected {other:?}"),
        }
        // The same bytes read as a notification for 42, not for 41.
        assert!(notifies_deletion(&bytes, 42));
        assert!(!notifies_deletion(&bytes, 41));
        assert!(!notifies_deletion(&bytes[..10], 42));
    }

    fn serialized(message: RouteNetlinkMessage) -> Vec<u8> {
        let mut message = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(message));
        message.finalize();
        let mut bytes = vec![0u8; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    /// What the kernel multicasts: a bridge port's RTM_DELLINK (AF_BRIDGE) and other links'
    /// messages do not count; ours does, wherever it is in the datagram.
    #[test]
    fn only_our_link_s_deletion_counts() {
        use netlink_packet_route::link::LinkAttribute;
        use netlink_packet_route::AddressFamily;
        let link = |index, family| {
            let mut link = LinkMessage::default();
            link.header.index = index;
            link.header.interface_family = family;
            link.attributes.push(LinkAttribute::IfName("cali0123456789a".into()));
            link
        };
        let bridge_port = serialized(RouteNetlinkMessage::DelLink(link(42, AddressFamily::Bridge)));
        assert!(!notifies_deletion(&bridge_port, 42));
        let new_link = serialized(RouteNetlinkMessage::NewLink(link(42, AddressFamily::Unspec)));
        assert!(!notifies_deletion(&new_link, 42));
        let ours = serialized(RouteNetlinkMessage::DelLink(link(42, AddressFamily::Unspec)));
        let datagram = [bridge_port, new_link, ours].concat();
        assert!(notifies_deletion(&datagram, 42));
        assert!(!notifies_deletion(&datagram, 7));
    }
}
