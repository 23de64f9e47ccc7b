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
//!
//! Under a profiler: valgrind does not support a `clone(CLONE_VM)` that is not a thread, and
//! kills the process there. With [`FORK_ENV`] (`CALICO_DETACH_FORK`) set to anything but
//! empty, the helper is a forked copy instead, which valgrind follows: the caller's code path
//! stays the one the plugin runs in production, so a profile of it (scripts/link/profile-hot.sh
//! sets the variable) still holds that path's functions.
#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

use std::io;
use std::sync::Mutex;

/// The helper's stack. Its lowest page is a guard page (no access), so an overflow faults
/// instead of writing over whatever is mapped below.
const STACK: usize = 64 * 1024;

/// A helper started by [`spawn_shared`] and not yet reaped: its pid and the mapping that
/// holds its stack and argument, unmapped once it has exited.
struct Helper {
    pid: libc::pid_t,
    region: usize,
    size: usize,
}

/// At most this many helpers run at once. A long-lived process deleting faster than the
/// kernel finishes its RCU barriers (a loaded host) would otherwise hold one stack mapping
/// and one process per deletion in flight; past the cap [`spawn_shared`] refuses with
/// `WouldBlock`, and the caller does the work in place, as when no process can be forked.
pub const MAX_RUNNING: usize = 32;

/// Helpers still to reap. A short-lived plugin exits before reaping anything (init reaps
/// them); a long-lived caller reaps on every call, so it keeps neither zombies nor mappings.
static HELPERS: Mutex<Vec<Helper>> = Mutex::new(Vec::new());

/// A process that shares this one's memory (`CLONE_VM`, like a thread, but its own process
/// with its own descriptor table) running `entry(arg)`, with `arg` copied above the new
/// process's stack in a mapping made for it. It copies no page tables, and this process's
/// later writes cause no copy-on-write faults.
///
/// Each call first [`reap`]s the helpers of earlier calls that have exited, so a long-lived
/// process holds at most the helpers still running (never more than [`MAX_RUNNING`]): no
/// zombies, no mappings left behind.
///
/// # Safety
/// `entry` runs concurrently with this process, on the same memory and with this thread's
/// thread-local storage: it must only make system calls through [`raw`] (libc's wrappers
/// write `errno`, a thread-local of this thread) and read its `arg`; it must not allocate,
/// lock, panic or touch anything else. Its return ends the process.
pub unsafe fn spawn_shared<T: Copy>(entry: extern "C" fn(*mut libc::c_void) -> libc::c_int, arg: T) -> io::Result<()> {
    if reap() >= MAX_RUNNING {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let page = page_size();
    // [guard page][stack, growing down][arg]
    let size = page + STACK + std::mem::size_of::<T>().next_multiple_of(64);
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
    if libc::mprotect(region, page, libc::PROT_NONE) != 0 {
        let err = io::Error::last_os_error();
        libc::munmap(region, size);
        return Err(err);
    }
    // The argument above the stack's top (page-aligned, hence 16-byte aligned).
    let top = region as usize + page + STACK;
    let arg_ptr = top as *mut T;
    arg_ptr.write(arg);
    let pid = if fork_instead() {
        match libc::fork() {
            // The copy runs `entry` on its copy of the argument, on the stack it inherited.
            0 => libc::_exit(entry(arg_ptr.cast())),
            pid => pid,
        }
    } else {
        libc::clone(entry, top as *mut libc::c_void, libc::CLONE_VM | libc::SIGCHLD, arg_ptr.cast())
    };
    if pid == -1 {
        let err = io::Error::last_os_error();
        libc::munmap(region, size);
        return Err(err);
    }
    helpers().push(Helper { pid, region: region as usize, size });
    Ok(())
}

/// Reaps the helpers that have exited and unmaps their stacks; returns how many are still
/// running. [`spawn_shared`] calls it; a long-lived process may also call it when idle.
pub fn reap() -> usize {
    let mut helpers = helpers();
    helpers.retain(|h| {
        let mut status = 0;
        // SAFETY: waitpid on our own child; WNOHANG never blocks.
        let done = unsafe { libc::waitpid(h.pid, &mut status, libc::WNOHANG | libc::__WALL) };
        // ECHILD: already reaped elsewhere (SIGCHLD ignored, or a waitpid(-1)): it has exited.
        let exited = done == h.pid || (done == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD));
        if exited {
            // SAFETY: the process that used this mapping has exited; nothing else refers to it.
            unsafe { libc::munmap(h.region as *mut libc::c_void, h.size) };
        }
        !exited
    });
    helpers.len()
}

/// The environment variable that makes the helper a forked copy (see the crate docs).
pub const FORK_ENV: &str = "CALICO_DETACH_FORK";

fn fork_instead() -> bool {
    std::env::var_os(FORK_ENV).is_some_and(|v| !v.is_empty())
}

fn helpers() -> std::sync::MutexGuard<'static, Vec<Helper>> {
    // A panic while holding the lock leaves a valid Vec behind.
    HELPERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|p| p.is_power_of_two()).unwrap_or(4096)
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

    /// Closes every descriptor except `a` and `b`: with `close_range`, or, where the kernel
    /// has none (before 5.9) or refuses it, one `close` per descriptor up to the
    /// descriptor limit.
    ///
    /// # Safety
    /// Closes descriptors of the calling process: only for a process of its own.
    pub unsafe fn close_all_but(a: i32, b: i32) {
        close_all_but_with(a, b, close_range);
    }

    /// [`close_all_but`] with the range closer given, so the fallback can be tested.
    ///
    /// # Safety
    /// As [`close_all_but`].
    #[doc(hidden)]
    pub unsafe fn close_all_but_with(a: i32, b: i32, range: unsafe fn(usize, usize) -> isize) {
        let (low, high) = (a.min(b).max(0) as usize, a.max(b).max(0) as usize);
        let close = |first: usize, last: usize| {
            if first <= last && range(first, last) < 0 {
                close_each(first, last);
            }
        };
        if low > 0 {
            close(0, low - 1);
        }
        if high > low + 1 {
            close(low + 1, high - 1);
        }
        close(high + 1, u32::MAX as usize);
    }

    /// `close_range(first, last, 0)`.
    ///
    /// # Safety
    /// Closes descriptors of the calling process.
    pub unsafe fn close_range(first: usize, last: usize) -> isize {
        syscall(libc::SYS_close_range, [first, last, 0, 0, 0, 0])
    }

    /// Closes `first..=last` one by one, stopping at the soft descriptor limit (no
    /// descriptor can be open above it), and at 1 << 20 if the limit is unlimited.
    unsafe fn close_each(first: usize, last: usize) {
        let mut limit = [0u64; 2];
        let got = syscall(libc::SYS_prlimit64, [0, libc::RLIMIT_NOFILE as usize, 0, limit.as_mut_ptr() as usize, 0, 0]);
        let max = if got == 0 { (limit[0] as usize).min(1 << 20) } else { 1 << 20 };
        let mut fd = first;
        while fd <= last && fd < max {
            syscall(libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
            fd += 1;
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
                let probe = |fd: i32| raw::syscall(libc::SYS_fcntl, [fd as usize, libc::F_GETFD as usize, 0, 0, 0, 0]);
                // The kept descriptor is open, the other one closed (EBADF), stdin too.
                let ok = probe(job.kept) >= 0
                    && probe(job.other) == -(libc::EBADF as isize)
                    && probe(0) == -(libc::EBADF as isize);
                let msg: &[u8; 2] = if ok { b"ok" } else { b"no" };
                raw::syscall(libc::SYS_write, [job.out as usize, msg.as_ptr() as usize, 2, 0, 0, 0]);
            }
            0
        }
        let (mut r, w) = pipe();
        let (_other_r, other_w) = pipe();
        let (_kept_r, kept_w) = pipe();
        let job_arg = Job { out: w.as_raw_fd(), kept: kept_w.as_raw_fd(), other: other_w.as_raw_fd() };
        unsafe { spawn_shared(job, job_arg) }.unwrap();
        drop(w);
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "ok");
        assert_ne!(unsafe { libc::fcntl(other_w.as_raw_fd(), libc::F_GETFD) }, -1, "ours is still open");
    }

    /// Where `close_range` is missing (ENOSYS before Linux 5.9), every other descriptor is
    /// still closed, one by one.
    #[test]
    fn closing_falls_back_when_close_range_fails() {
        #[derive(Clone, Copy)]
        #[repr(C)]
        struct Job {
            out: i32,
            other: i32,
        }
        unsafe fn no_close_range(_: usize, _: usize) -> isize {
            -(libc::ENOSYS as isize)
        }
        extern "C" fn job(arg: *mut libc::c_void) -> libc::c_int {
            unsafe {
                let job = &*arg.cast::<Job>();
                raw::close_all_but_with(job.out, job.out, no_close_range);
                let probe = |fd: i32| raw::syscall(libc::SYS_fcntl, [fd as usize, libc::F_GETFD as usize, 0, 0, 0, 0]);
                let ok = probe(job.other) == -(libc::EBADF as isize) && probe(0) == -(libc::EBADF as isize);
                let msg: &[u8; 2] = if ok { b"ok" } else { b"no" };
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
    }

    /// The stack's lowest page is mapped without access, right below the stack.
    #[test]
    fn the_helper_stack_has_a_guard_page() {
        extern "C" fn wait(arg: *mut libc::c_void) -> libc::c_int {
            unsafe {
                let fd = *arg.cast::<i32>();
                let mut byte = 0u8;
                raw::syscall(libc::SYS_read, [fd as usize, &mut byte as *mut u8 as usize, 1, 0, 0, 0]);
            }
            0
        }
        let (r, w) = pipe();
        unsafe { spawn_shared(wait, r.as_raw_fd()) }.unwrap();
        let region = helpers().last().map(|h| h.region).expect("registered");
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let guard = maps
            .lines()
            .find(|l| l.split('-').next().and_then(|a| usize::from_str_radix(a, 16).ok()) == Some(region))
            .expect("the helper's mapping");
        assert!(guard.split_whitespace().nth(1) == Some("---p"), "{guard}");
        // The helper holds its own copy of `w`: wake it with a byte, not with EOF.
        assert_eq!(unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) }, 1);
        drop(r);
    }
}
