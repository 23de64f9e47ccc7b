//! The one retry loop of every compare-and-swap writer (assign, release, pool removal): try,
//! and when a concurrent writer won, sleep a jittered time that grows with the attempt and
//! try again, a bounded number of times.

use std::time::Duration;

use crate::Error;

/// How many times a step is attempted when other writers keep winning the race.
pub const MAX_ATTEMPTS: u32 = 32;

/// Run `attempt` (given its number, from 0) until it gives `Some`. `None` means a concurrent
/// writer won and what the attempt read is stale: sleep ([`delay`]) and try again. An error
/// ends the retries at once. After [`MAX_ATTEMPTS`] attempts, [`Error::TooMuchContention`]
/// names `key()`, the key (or prefix) the writers kept changing.
pub fn with_backoff<T>(
    key: impl FnOnce() -> String,
    attempt: impl FnMut(u32) -> Result<Option<T>, Error>,
) -> Result<T, Error> {
    run(MAX_ATTEMPTS, &mut std::thread::sleep, key, attempt)
}

/// [`with_backoff`] with the number of attempts and the sleep passed in (tests record it).
fn run<T>(
    attempts: u32,
    sleep: &mut dyn FnMut(Duration),
    key: impl FnOnce() -> String,
    mut attempt: impl FnMut(u32) -> Result<Option<T>, Error>,
) -> Result<T, Error> {
    for n in 0..attempts {
        if n > 0 {
            sleep(delay(n));
        }
        if let Some(done) = attempt(n)? {
            return Ok(done);
        }
    }
    Err(Error::TooMuchContention { key: key(), attempts })
}

/// The sleep before attempt `n` (from 1): random below a cap that doubles from 1 ms up to
/// 32 ms, so racing writers spread out.
pub fn delay(n: u32) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let cap_us = cap(n).as_micros() as u64;
    Duration::from_micros(RandomState::new().hash_one(n) % cap_us)
}

fn cap(n: u32) -> Duration {
    Duration::from_micros(500u64 << n.min(6))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    /// Runs `attempt` with a sleep that only records, and returns the sleeps too.
    fn recorded<T>(
        attempts: u32,
        attempt: impl FnMut(u32) -> Result<Option<T>, Error>,
    ) -> (Result<T, Error>, Vec<Duration>) {
        let mut slept = Vec::new();
        let out = run(attempts, &mut |d| slept.push(d), || "/calico/k".into(), attempt);
        (out, slept)
    }

    #[test]
    fn a_first_success_returns_at_once() {
        let (out, slept) = recorded(MAX_ATTEMPTS, |n| Ok(Some(n)));
        assert_eq!(out.unwrap(), 0);
        assert!(slept.is_empty());
    }

    #[test]
    fn conflicts_retry_with_growing_bounded_sleeps() {
        let mut seen = Vec::new();
        let (out, slept) = recorded(MAX_ATTEMPTS, |n| {
            seen.push(n);
            Ok((n == 9).then_some("done"))
        });
        assert_eq!(out.unwrap(), "done");
        assert_eq!(seen, (0..10).collect::<Vec<_>>(), "each attempt is told its number");
        assert_eq!(slept.len(), 9, "a sleep between attempts, none before the first");
        for (i, d) in slept.iter().enumerate() {
            assert!(*d < cap(i as u32 + 1), "sleep {i}: {d:?}");
        }
    }

    #[test]
    fn an_error_is_not_retried() {
        let mut calls = 0;
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (out, slept) = recorded::<()>(MAX_ATTEMPTS, |_| {
            calls += 1;
            Err(Error::AddressInUse { ip })
        });
        assert!(matches!(out, Err(Error::AddressInUse { .. })));
        assert_eq!((calls, slept.len()), (1, 0));
    }

    #[test]
    fn gives_up_naming_the_key_and_the_attempts() {
        let mut calls = 0;
        let (out, slept) = recorded::<()>(MAX_ATTEMPTS, |_| {
            calls += 1;
            Ok(None)
        });
        match out {
            Err(Error::TooMuchContention { key, attempts }) => {
                assert_eq!((key.as_str(), attempts), ("/calico/k", MAX_ATTEMPTS));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((calls, slept.len() as u32), (MAX_ATTEMPTS, MAX_ATTEMPTS - 1));
    }

    #[test]
    fn delays_stay_under_a_cap_from_1_to_32_ms() {
        assert_eq!(cap(1), Duration::from_millis(1));
        assert_eq!(cap(6), Duration::from_millis(32));
        assert_eq!(cap(MAX_ATTEMPTS), Duration::from_millis(32));
        for n in 1..=MAX_ATTEMPTS {
            assert!(delay(n) < cap(n), "{n}");
        }
        // Jittered: not every writer sleeps the same.
        let many: std::collections::HashSet<Duration> = (0..32).map(|_| delay(6)).collect();
        assert!(many.len() > 1);
    }
}
