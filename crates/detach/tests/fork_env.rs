//! `CALICO_DETACH_FORK`: the helper is a forked copy (what valgrind can follow), running the
//! same entry point on its own copy of the argument and of memory. Its own test binary: the
//! variable is set for the whole process.
#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Written by the helper: a forked copy's write stays in the copy.
static TOUCHED: AtomicU32 = AtomicU32::new(0);

#[test]
fn with_the_variable_the_helper_is_a_forked_copy() {
    extern "C" fn job(arg: *mut libc::c_void) -> libc::c_int {
        unsafe {
            let fd = *arg.cast::<i32>();
            TOUCHED.store(1, Ordering::Relaxed);
            let pid = detach::raw::syscall(libc::SYS_getpid, [0; 6]) as i32;
            let msg = pid.to_ne_bytes();
            detach::raw::syscall(libc::SYS_write, [fd as usize, msg.as_ptr() as usize, 4, 0, 0, 0]);
        }
        0
    }
    std::env::set_var(detach::FORK_ENV, "1");
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (mut r, w) = unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
    unsafe { detach::spawn_shared(job, w.as_raw_fd()) }.unwrap();
    drop(w);
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    let pid = i32::from_ne_bytes(got.try_into().expect("the helper wrote its pid"));
    assert_ne!(pid, std::process::id() as i32, "a process of its own");
    assert_eq!(TOUCHED.load(Ordering::Relaxed), 0, "its memory is a copy, not ours");
    // It is reaped like a shared-memory helper.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while detach::reap() > 0 {
        assert!(std::time::Instant::now() < deadline, "the helper was not reaped");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
