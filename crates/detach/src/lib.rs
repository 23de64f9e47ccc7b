//! Running the tail of a plugin's work in a detached process, so that the runtime, which
//! waits for the plugin to exit and for EOF on its stdout, does not wait for it.
//!
//! Used for work whose outcome the plugin's answer no longer depends on: the kernel's RCU
//! barrier after a veth is unregistered (`dataplane`).
//!
//! [`spawn_shared`] starts a process that shares this one's memory and runs raw system calls
//! ([`raw`]); x86_64 and aarch64 only (elsewhere callers do the work in place). A fork was
//! tried first: measured on a calico-cni DEL, it cost 2.3–2.9 ms of CPU and 192 page faults
//! (page tables copied, then copy-on-write faults while the helper lived) against 1.85 ms
//! and 134 now. A forked child also cannot use libraries with process-wide state: a SQLite
//! checkpoint tried that way found SQLite's per-file state, inherited from the parent,
//! pointing at descriptors the child had closed.
#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

use std::io;

/// A process that shares this one's memory (`CLONE_VM`, like a thread, but its own process
/// with its own descriptor table) running `entry(arg)`, with `arg` copied next to the new
/// process's stack in a mapping made for it. It copies no page tables, and this process's
/// later writes cause no copy-on-write faults.
///
/// # Safety
/// `entry` runs concurrently with this process, on the same memory and with this thread's
/// thread-local storage: it must only make system calls through [`raw`] (libc's wrappers
/// write `errno`, a thread-local of this thread) and read its `arg`; it must not allocate,
/// lock, panic or touch anything else. Its return ends the process. The mapping is left in
/// place, since the process may outlive this call: one per call, for short-lived callers.
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
    let pid = libc::clone(
        entry,
        top as *mut libc::c_void,
        libc::CLONE_VM | libc::SIGCHLD,
        arg_ptr.cast(),
    );
    if pid == -1 {
        let err = io::Error::last_os_error();
        libc::munmap(region, size);
        return Err(err);
    }
    Ok(())
}

/// System calls without libc, for [`spawn_shared`]'s entry points: no `errno`, no
/// thread-local storage. Returns the kernel's answer: a negative errno on failure.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn pipe() -> (std::fs::File, OwnedFd) {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                OwnedFd::from_raw_fd(fds[1]),
            )
        }
    }

    /// The shared-memory helper runs on its own copy of its argument, closes what it does
    /// not keep (in its own descriptor table: ours stay open), and reports through a pipe.
    #[test]
    fn shared_helper_runs_raw_system_calls_on_its_own_descriptors() {
        #[derive(Clone, Copy)]
        #[repr(C)]
        struct Job {
            out: i32,
            kept: i32,
            other: i32,
        }
        extern "C" fn job(arg: *mut libc::c_void) -> libc::c_int {
            unsafe {
                let job = &*arg.cast::<Job>();
                raw::close_all_but(job.out, job.kept);
                let probe = |fd: i32| {
                    raw::syscall(
                        libc::SYS_fcntl,
                        [fd as usize, libc::F_GETFD as usize, 0, 0, 0, 0],
                    )
                };
                // The kept descriptor is open, the other one closed (EBADF), stdin too.
                let ok = probe(job.kept) >= 0
                    && probe(job.other) == -(libc::EBADF as isize)
                    && probe(0) == -(libc::EBADF as isize);
                let msg: &[u8; 2] = if ok { b"ok" } else { b"no" };
                raw::syscall(
                    libc::SYS_write,
                    [job.out as usize, msg.as_ptr() as usize, 2, 0, 0, 0],
                );
            }
            0
        }
        let (mut r, w) = pipe();
        let (_other_r, other_w) = pipe();
        let (_kept_r, kept_w) = pipe();
        let job_arg = Job {
            out: w.as_raw_fd(),
            kept: kept_w.as_raw_fd(),
            other: other_w.as_raw_fd(),
        };
        unsafe { spawn_shared(job, job_arg) }.unwrap();
        drop(w);
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "ok");
        assert_ne!(
            unsafe { libc::fcntl(other_w.as_raw_fd(), libc::F_GETFD) },
            -1,
            "ours is still open"
        );
    }
}
