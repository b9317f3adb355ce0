//! Taking a lock, or waiting on a condition variable, when another thread
//! panicked while holding it. Only that: what each lock guards, and why it
//! stays whole, is said where the lock is.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Locks `mutex`, and takes it even if a thread panicked while holding it.
///
/// A poisoned lock is taken anyway because every state the crate guards
/// with a mutex is changed in steps that each leave it whole (one insert
/// or remove, one count, one swap of a value): a panic between two steps
/// leaves a state that is still consistent, only older. The one exception,
/// a rustls connection (`duplex`), refuses its next call on its own if a
/// panic left it broken, as after any I/O error. Refusing the lock would
/// turn one thread's panic into every other thread's. A caller whose state
/// could be left half changed, silently, must not use this.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits on `condvar`, giving up `guard` meanwhile, and takes the lock back
/// even if poisoned, for the reason [`lock`] gives.
pub fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar
        .wait(guard)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Like [`wait`], but for at most `timeout`; whether the time ran out is
/// left to the caller, who checks its own deadline and state.
pub fn wait_timeout<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    condvar
        .wait_timeout(guard, timeout)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn a_poisoned_lock_is_taken_with_its_last_value() {
        let shared = Arc::new(Mutex::new(1));
        let panicking = Arc::clone(&shared);
        let ended = thread::spawn(move || {
            let mut value = panicking.lock().unwrap();
            *value = 2;
            panic!("a holder that panics");
        })
        .join();
        assert!(ended.is_err());
        assert!(shared.is_poisoned());
        assert_eq!(*lock(&shared), 2);
    }

    #[test]
    fn a_wait_on_a_poisoned_lock_gives_it_back() {
        let shared = Arc::new(Mutex::new(1));
        let panicking = Arc::clone(&shared);
        let ended = thread::spawn(move || {
            let _held = panicking.lock().unwrap();
            panic!("a holder that panics");
        })
        .join();
        assert!(ended.is_err());
        let condvar = Condvar::new();
        // Nobody notifies: the wait ends by its timeout (or spuriously),
        // and either way hands back the poisoned lock instead of panicking.
        let guard = wait_timeout(&condvar, lock(&shared), Duration::from_millis(1));
        assert_eq!(*guard, 1);
    }
}
