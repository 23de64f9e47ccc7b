//! An undo guard for multi-step setups.
//!
//! After each step succeeds, push how to undo it. If the guard is dropped
//! without [`Rollback::disarm`] (an early `?` return, or a panic), the undos
//! run in reverse order; an undo that fails is logged and the others still
//! run. This makes "leave nothing behind on failure" structural instead of a
//! cleanup call on every error path.
//!
//! A caller that must report what could not be undone (calico-cni puts it in
//! the CNI error's `details`) runs [`Rollback::rollback`] itself, which
//! returns each failed undo as an [`UndoFailure`].

use std::borrow::Cow;

/// The error of an undo, whatever its type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Undo<'a> = Box<dyn FnOnce() -> Result<(), BoxError> + 'a>;

/// Undo guard; see the module docs.
#[must_use = "a Rollback undoes everything as soon as it is dropped"]
#[derive(Default)]
pub struct Rollback<'a> {
    undos: Vec<(Cow<'static, str>, Undo<'a>)>,
}

impl std::fmt::Debug for Rollback<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.undos.iter().map(|(desc, _)| desc)).finish()
    }
}

impl<'a> Rollback<'a> {
    /// An empty guard.
    pub fn new() -> Rollback<'a> {
        Rollback::default()
    }

    /// Registers how to undo a step that just succeeded. `desc` names the
    /// undo in the log if it fails.
    pub fn push<E>(&mut self, desc: impl Into<Cow<'static, str>>, undo: impl FnOnce() -> Result<(), E> + 'a)
    where
        E: Into<BoxError>,
    {
        self.undos.push((desc.into(), Box::new(move || undo().map_err(Into::into))));
    }

    /// Number of registered undos.
    pub fn len(&self) -> usize {
        self.undos.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.undos.is_empty()
    }

    /// Keeps everything: the undos are dropped without running.
    pub fn disarm(mut self) {
        self.undos.clear();
    }

    /// Runs the undos now, in reverse order; returns the ones that failed, in
    /// the order they ran (each is logged too).
    pub fn rollback(mut self) -> Vec<UndoFailure> {
        self.run()
    }

    fn run(&mut self) -> Vec<UndoFailure> {
        let mut failures = Vec::new();
        while let Some((undo, run)) = self.undos.pop() {
            if let Err(error) = run() {
                tracing::warn!(%undo, error = %ErrorChain(&*error), "rollback step failed");
                failures.push(UndoFailure { undo, error });
            }
        }
        failures
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        self.run();
    }
}

/// An undo that failed: what it was to undo, and why it could not. Its
/// `Display` is `<undo>: <error>: <causes>`.
#[derive(Debug)]
pub struct UndoFailure {
    /// The description the undo was pushed with.
    pub undo: Cow<'static, str>,
    /// Why it failed.
    pub error: BoxError,
}

impl std::fmt::Display for UndoFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.undo, ErrorChain(&*self.error))
    }
}

/// Displays an error with all its causes, `a: b: c`.
pub(crate) struct ErrorChain<'e>(pub(crate) &'e (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn drop_runs_undos_in_reverse_and_survives_failures() {
        let log = RefCell::new(Vec::new());
        {
            let mut rollback = Rollback::new();
            rollback.push("one", || {
                log.borrow_mut().push(1);
                Ok::<_, std::io::Error>(())
            });
            rollback.push("two", || {
                log.borrow_mut().push(2);
                Err("boom")
            });
            rollback.push("three", || {
                log.borrow_mut().push(3);
                Ok::<_, String>(())
            });
            assert_eq!(rollback.len(), 3);
        }
        assert_eq!(*log.borrow(), vec![3, 2, 1]);
    }

    #[test]
    fn disarm_keeps_everything() {
        let log = RefCell::new(Vec::new());
        let mut rollback = Rollback::new();
        rollback.push("one", || {
            log.borrow_mut().push(1);
            Ok::<_, String>(())
        });
        rollback.disarm();
        assert!(log.borrow().is_empty());
    }

    #[test]
    fn explicit_rollback_returns_the_failures() {
        let mut rollback = Rollback::new();
        rollback.push("first", || Err(std::io::Error::other("gone")));
        rollback.push("ok", || Ok::<_, String>(()));
        rollback.push("bad", || Err("no"));
        let failures: Vec<String> = rollback.rollback().iter().map(ToString::to_string).collect();
        assert_eq!(failures, ["bad: no", "first: gone"]);
    }
}
