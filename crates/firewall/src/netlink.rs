//! The nf_tables netlink wire format, hand-encoded: a socket of protocol NETLINK_NETFILTER,
//! messages of nfnetlink's subsystem NFNL_SUBSYS_NFTABLES, attributes as TLVs. Only what the
//! table of [`crate::nft`] needs is here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;

pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_DELSETELEM: u16 = 14;

/// The `inet` family of our tables.
pub const NFPROTO_INET: u8 = 1;
/// NFTA_SET_FLAGS: the set maps keys to data.
pub const SET_MAP: u32 = 0x8;
/// NFT_REG32_00: the register rules load into; concatenations are built from here on.
pub const R: u32 = 8;
// nft's datatype numbers (a concatenation is each id shifted in by 6 bits), so that
// `nft list` prints our elements readably.
pub const T_IPV4: u32 = 7;
pub const T_IPV6: u32 = 8;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

/// Builds one or more netlink messages into a single buffer (one `send`).
#[derive(Default)]
pub struct Buf {
    pub bytes: Vec<u8>,
    /// Start of each open nest / message.
    stack: Vec<usize>,
    /// Sequence numbers of the messages that ask for an answer.
    pub seqs: Vec<u32>,
    next_seq: u32,
}

impl Buf {
    pub fn new(first_seq: u32) -> Buf {
        Buf { next_seq: first_seq, ..Default::default() }
    }

    /// Opens a message: nlmsghdr + nfgenmsg. Closed by [`Buf::end_msg`].
    pub fn msg(&mut self, ty: u16, flags: u16, family: u8, res_id: u16) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stack.push(self.bytes.len());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.extend_from_slice(&ty.to_ne_bytes());
        self.bytes.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.bytes.extend_from_slice(&seq.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.extend_from_slice(&[family, 0]);
        self.bytes.extend_from_slice(&res_id.to_be_bytes());
        seq
    }

    /// An nf_tables message that expects an answer (an ack, the element, or an error).
    pub fn nft(&mut self, ty: u16, flags: u16, family: u8) -> u32 {
        let seq = self.msg((NFNL_SUBSYS_NFTABLES << 8) | ty, flags, family, 0);
        self.seqs.push(seq);
        seq
    }

    pub fn end_msg(&mut self) {
        let start = self.stack.pop().expect("end_msg without msg");
        let len = (self.bytes.len() - start) as u32;
        self.bytes[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn attr(&mut self, ty: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.bytes.extend_from_slice(&(len as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&ty.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.pad();
    }

    pub fn str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    pub fn be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn nest(&mut self, ty: u16) {
        self.stack.push(self.bytes.len());
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    pub fn end_nest(&mut self) {
        let start = self.stack.pop().expect("end_nest without nest");
        let len = (self.bytes.len() - start) as u16;
        self.bytes[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

/// One answer read back: an error (0 is an ack) or a data message's attributes.
pub enum Reply {
    Ack { seq: u32, errno: i32 },
    Data { seq: u32, payload: Vec<u8> },
    Done { seq: u32 },
}

/// A NETLINK_NETFILTER socket in the netns of the thread that opened it.
pub struct Socket {
    fd: OwnedFd,
    pub round_trips: std::cell::Cell<u64>,
    /// The receive buffer asked for so far (0: the kernel's default).
    rcvbuf: std::cell::Cell<usize>,
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain syscalls on a descriptor we own from here on.
        let fd =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Never hang a CNI verb on a kernel that does not answer.
        let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd, round_trips: std::cell::Cell::new(0), rcvbuf: std::cell::Cell::new(0) })
    }

    /// Room for the answers to a request of `messages` messages (an ack each, as nft
    /// sizes its buffer): past the default's few hundred acks the kernel would drop them
    /// (ENOBUFS). As root the limit is lifted (SO_RCVBUFFORCE), else it is capped.
    pub fn reserve(&self, messages: usize) {
        let want = messages.saturating_mul(1024);
        if messages < 128 || want <= self.rcvbuf.get() {
            return;
        }
        let size = want as libc::c_int;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: setsockopt on our descriptor with an int of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                self.rcvbuf.set(want);
                return;
            }
        }
    }

    /// Closes the socket without waiting: while a transaction's objects (this process's or
    /// any other's) wait for their RCU grace period, the kernel's release of a netfilter
    /// socket waits with them, holding nf_tables' commit mutex (`nft_rcv_nl_event` flushes
    /// the destroy work: 10-15 ms here), which the runtime waiting on this plugin, or the
    /// next plugin's commit, would pay. The socket goes to this netns's keeper
    /// ([`crate::keeper`]), which lets go of its sockets once nobody has committed for a
    /// while; where no keeper can run, to a helper process sharing this one's memory that
    /// lets it go [`HOLD_NS`] later; where no helper can be started, it is closed here.
    pub fn close_detached(self) {
        // This netns's keeper holds it until the host is quiet ([`crate::keeper`]); without
        // one, this process starts one.
        if crate::keeper::hand_over(self.fd.as_raw_fd()) {
            return;
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if let Some(listener) = crate::keeper::listen() {
            let start = crate::keeper::Start { sock: self.fd.as_raw_fd(), listener: listener.as_raw_fd() };
            // SAFETY: `keep` makes raw system calls only and reads its argument.
            if unsafe { detach::spawn_shared(crate::keeper::keep, start) }.is_ok() {
                return;
            }
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        {
            let mut pipe = [0 as libc::c_int; 2];
            // SAFETY: pipe2 fills two descriptors we then own.
            if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return;
            }
            // SAFETY: both are ours from here on.
            let (wait, wake) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
            let hold = Hold { sock: self.fd.as_raw_fd(), wait: wait.as_raw_fd() };
            // SAFETY: `hold_socket` makes raw system calls only and reads its argument.
            if unsafe { detach::spawn_shared(hold_socket, hold) }.is_ok() {
                // Ours first (not the last reference now), then the helper is woken, and
                // its exit releases the socket.
                drop(self.fd);
                drop(wait);
                drop(wake);
            }
        }
    }

    pub fn send(&self, buf: &Buf) -> io::Result<()> {
        self.round_trips.set(self.round_trips.get() + 1);
        // A large batch (calico-node's whole policy table) goes in one datagram: room for
        // it, as nft makes (EMSGSIZE otherwise; root, which writing nftables needs anyway;
        // the acks' room is `reserve`'s).
        if buf.bytes.len() > 64 << 10 {
            let room = |opt, want: usize| {
                let v = want.min(i32::MAX as usize) as libc::c_int;
                // SAFETY: setsockopt on our descriptor with an int of the size given.
                unsafe {
                    libc::setsockopt(
                        self.fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        opt,
                        (&v as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                }
            };
            room(libc::SO_SNDBUFFORCE, buf.bytes.len() + (64 << 10));
        }
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.bytes.as_ptr().cast(),
                buf.bytes.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the next datagram's messages.
    pub fn recv(&self) -> io::Result<Vec<Reply>> {
        let mut data = vec![0u8; 1 << 17];
        let n = loop {
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), data.as_mut_ptr().cast(), data.len(), 0) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut out = Vec::new();
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            if len < 16 || at + len > n {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
            }
            let ty = u16::from_ne_bytes(data[at + 4..at + 6].try_into().unwrap());
            let seq = u32::from_ne_bytes(data[at + 8..at + 12].try_into().unwrap());
            let body = &data[at + 16..at + len];
            match ty {
                NLMSG_ERROR if body.len() >= 4 => {
                    let errno = -i32::from_ne_bytes(body[..4].try_into().unwrap());
                    out.push(Reply::Ack { seq, errno });
                }
                NLMSG_DONE => out.push(Reply::Done { seq }),
                // nfgenmsg (4 bytes), then attributes.
                _ if body.len() >= 4 => out.push(Reply::Data { seq, payload: body[4..].to_vec() }),
                _ => {}
            }
            at += (len + 3) & !3;
        }
        Ok(out)
    }
}

/// The attributes of one level: (type without flags, value).
pub fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        let next = (len + 3) & !3;
        b = if next >= b.len() { &[] } else { &b[next..] };
    }
    out
}

pub fn attr(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).into_iter().find(|(t, _)| *t == ty).map(|(_, v)| v)
}

/// What the helper of [`Socket::close_detached`] keeps: the socket, and the pipe whose
/// closing (by this process) tells it to go.
#[derive(Clone, Copy)]
struct Hold {
    sock: libc::c_int,
    wait: libc::c_int,
}

/// How long the helper keeps the socket after this process let go: several RCU grace
/// periods of a loaded host.
const HOLD_NS: libc::c_long = 250_000_000;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
extern "C" fn hold_socket(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: the argument is the `Hold` that spawn_shared copied for us; only raw system
    // calls follow.
    unsafe {
        let hold = *(arg as *const Hold);
        detach::raw::close_all_but(hold.sock, hold.wait);
        let mut byte = 0u8;
        // Until the other end is closed (EOF), retrying when interrupted.
        while detach::raw::syscall(libc::SYS_read, [hold.wait as usize, &mut byte as *mut u8 as usize, 1, 0, 0, 0])
            == -(libc::EINTR as isize)
        {}
        // Then past the grace period of what was just removed: a release while removals
        // are pending waits for them holding nf_tables' commit mutex, which would stall
        // the next ADD's batch instead. Once the kernel's destroy work has run on its own,
        // the release is instant.
        let pause = libc::timespec { tv_sec: 0, tv_nsec: HOLD_NS };
        detach::raw::syscall(libc::SYS_nanosleep, [&pause as *const libc::timespec as usize, 0, 0, 0, 0, 0]);
    }
    0
}
