//! Running the tail of a plugin's work in a detached process, so that the runtime, which
//! waits for the plugin to exit and for EOF on its stdout, does not wait for it.
//!
//! Used for work whose outcome the plugin's answer no longer depends on: the kernel's RCU
//! barrier after a veth is unregistered (`dataplane`).
//!
//! Two ways: [`spawn_shared`] (x86_64, aarch64) starts a process that shares this one's
//! memory and runs raw system calls ([`raw`]); [`spawn`] forks, for the other targets.
//! Measured on a calico-cni DEL: 1.85 ms of CPU and 134 page faults with the first, 2.3–2.9
//! ms and 192 faults with the second (page tables copied, then copy-on-write faults).
//!
//! Neither child execs, so they suit raw system calls, not libraries with process-wide
//! state: a SQLite checkpoint tried in a forked child found SQLite's per-file state
//! (inherited from the parent) pointing at descriptors the child had closed, and SQLite
//! cannot be told apart from its parent's locks. The embedded store checkpoints in place.

use std::io;
use std::os::fd::RawFd;

/// Runs `work` in a forked grandchild process with every file descriptor closed except `keep`,
/// and returns once the intermediate child has exited, so nothing is left for anyone to
/// reap: the grandchild is adopted by init or the nearest subreaper.
///
/// The grandchild is a fork of a process that may have other threads: keep `work` to
/// async-signal-safe system calls on memory prepared before the call (no allocation, no
/// locks). It ends with `_exit`, never returning or unwinding into the caller's code.
pub fn spawn(keep: &[RawFd], work: impl FnOnce()) -> io::Result<()> {
    // SAFETY: see the contract above; the children run only `work`, `close_range`, `fork`
    // and `_exit`.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => unsafe {
            if libc::fork() != 0 {
                libc::_exit(0);
            }
            close_all_but(keep);
            // A panic must not unwind into the parent's frames, copied into this process.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            libc::_exit(0)
        },
        child => {
            let mut status = 0;
            // SAFETY: waits for our own child.
            while unsafe { libc::waitpid(child, &mut status, 0) } == -1 {
                if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// A process that shares this one's memory (`CLONE_VM`, like a thread, but its own process
/// with its own descriptor table) running `entry(arg)`, with `arg` copied next to the new
/// process's stack in a mapping made for it. Unlike [`spawn`] this copies no page tables,
/// and this process's later writes cause no copy-on-write faults: about 10% of calico-cni's
/// kernel time in a DEL went to those.
///
/// # Safety
/// `entry` runs concurrently with this process, on the same memory and with this thread's
/// thread-local storage: it must only make system calls through [`raw`] (libc's wrappers
/// write `errno`, a thread-local of this thread) and read its `arg`; it must not allocate,
/// lock, panic or touch anything else. Its return ends the process. The mapping is left in
/// place, since the process may outlive this call: one per call, for short-lived callers.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub unsafe fn spawn_shared<T: Copy>(
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: T,
) -> io::Result<()> {
    const STACK: usize = 64 * 1024;
    let size = STACK + std::mem::size_of::<T>().next_multiple_of(64);
    let region = libc::mmap(
        std::ptr::null_mut(),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
        -1,
        0,
    );
    if region == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // The argument at the bottom, the stack growing down from the (16-byte aligned) top.
    let arg_ptr = region.cast::<T>();
    arg_ptr.write(arg);
    let top = (region as usize + size) & !15;
    let pid = libc::clone(entry, top as *mut libc::c_void, libc::CLONE_VM | libc::SIGCHLD, arg_ptr.cast());
    if pid == -1 {
        let err = io::Error::last_os_error();
        libc::munmap(region, size);
        return Err(err);
    }
    Ok(())
}

/// System calls without libc, for [`spawn_shared`]'s entry points: no `errno`, no
/// thread-local storage. Returns the kernel's answer: a negative errno on failure.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub mod raw {
    /// System call `n` with up to six arguments.
    ///
    /// # Safety
    /// As for the system call itself: the arguments must be what the kernel expects.
    #[inline(always)]
    pub unsafe fn syscall(n: libc::c_long, a: [usize; 6]) -> isize {
        let ret: isize;
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
            options(nostack),
        );
        ret
    }

    /// Closes every descriptor except `a` and `b`.
    ///
    /// # Safety
    /// Closes descriptors of the calling process: only for a process of its own.
    pub unsafe fn close_all_but(a: i32, b: i32) {
        let (low, high) = (a.min(b).max(0) as usize, a.max(b).max(0) as usize);
        let close_range = |first: usize, last: usize| {
            if first <= last {
                syscall(libc::SYS_close_range, [first, last, 0, 0, 0, 0]);
            }
        };
        if low > 0 {
            close_range(0, low - 1);
        }
        if high > low + 1 {
            close_range(low + 1, high - 1);
        }
        close_range(high + 1, u32::MAX as usize);
    }
}

/// Closes every descriptor except those in `keep`. Async-signal-safe: no allocation.
fn close_all_but(keep: &[RawFd]) {
    let mut next: u32 = 0;
    loop {
        // The lowest kept descriptor at or above `next`.
        let stop = keep.iter().filter(|&&fd| fd >= 0 && fd as u32 >= next).map(|&fd| fd as u32).min();
        let last = match stop {
            Some(fd) if fd == next => {
                next = fd + 1;
                continue;
            }
            Some(fd) => fd - 1,
            None => u32::MAX,
        };
        // SAFETY: close_range only closes descriptors.
        unsafe { libc::syscall(libc::SYS_close_range, next, last, 0) };
        match stop {
            Some(fd) => next = fd + 1,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn pipe() -> (std::fs::File, OwnedFd) {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        unsafe { (std::fs::File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// The grandchild writes to a kept descriptor; a descriptor not kept is closed in it, so
    /// the reader of that pipe sees EOF as soon as this process closes its own end.
    #[test]
    fn work_runs_detached_with_only_the_kept_descriptors() {
        let (mut kept_r, kept_w) = pipe();
        let (mut other_r, other_w) = pipe();
        let (kw, ow) = (kept_w.as_raw_fd(), other_w.as_raw_fd());
        spawn(&[kw], move || unsafe {
            let open = libc::fcntl(ow, libc::F_GETFD) != -1;
            let msg: &[u8] = if open { b"other open" } else { b"ok" };
            libc::write(kw, msg.as_ptr().cast(), msg.len());
        })
        .unwrap();
        drop(kept_w);
        drop(other_w);
        let mut got = String::new();
        kept_r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "ok");
        let mut rest = Vec::new();
        assert_eq!(other_r.read_to_end(&mut rest).unwrap(), 0, "EOF: no copy of the write end left");
    }

    #[test]
    fn close_ranges_skip_kept_descriptors() {
        // Runs in a fork: closing descriptors of the test process would break the harness.
        let (mut r, w) = pipe();
        let wfd = w.as_raw_fd();
        spawn(&[0, wfd, wfd + 5], move || unsafe {
            let ok = libc::fcntl(0, libc::F_GETFD) != -1 && libc::fcntl(1, libc::F_GETFD) == -1;
            libc::write(wfd, if ok { b"y".as_ptr() } else { b"n".as_ptr() }.cast(), 1);
        })
        .unwrap();
        drop(w);
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "y");
    }

    /// The shared-memory helper runs on its own copy of its argument, closes what it does
    /// not keep (in its own descriptor table: ours stay open), and reports through a pipe.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn shared_helper_runs_raw_system_calls_on_its_own_descriptors() {
        #[derive(Clone, Copy)]
        #[repr(C)]
        struct Job {
            out: i32,
            other: i32,
        }
        extern "C" fn job(arg: *mut libc::c_void) -> libc::c_int {
            unsafe {
                let job = &*arg.cast::<Job>();
                raw::close_all_but(job.out, job.out);
                // fcntl(other, F_GETFD) must now fail with EBADF.
                let probe = raw::syscall(libc::SYS_fcntl, [job.other as usize, libc::F_GETFD as usize, 0, 0, 0, 0]);
                let msg: &[u8; 2] = if probe == -(libc::EBADF as isize) { b"ok" } else { b"no" };
                raw::syscall(libc::SYS_write, [job.out as usize, msg.as_ptr() as usize, 2, 0, 0, 0]);
            }
            0
        }
        let (mut r, w) = pipe();
        let (_other_r, other_w) = pipe();
        unsafe { spawn_shared(job, Job { out: w.as_raw_fd(), other: other_w.as_raw_fd() }) }.unwrap();
        drop(w);
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "ok");
        assert_ne!(unsafe { libc::fcntl(other_w.as_raw_fd(), libc::F_GETFD) }, -1, "ours is still open");
    }
}
