//! The server's own long-lived threads (the hub, the shards): one that
//! panics stops the server, and each can be waited for with a time limit.

// The server's types, limits and helpers, which this part shares.
use super::*;

/// A thread that stops the whole server if it panics, and that can be
/// waited for with a time limit.
pub(super) struct Guarded {
    thread: JoinHandle<()>,
    /// Disconnects when the thread ends, however it ends.
    ended: Receiver<()>,
}

impl Guarded {
    pub(super) fn spawn(
        name: &str,
        stopper: Stopper,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<Guarded> {
        struct StopOnPanic {
            name: String,
            stopper: Stopper,
            _ended: Sender<()>,
        }
        impl Drop for StopOnPanic {
            fn drop(&mut self) {
                if thread::panicking() {
                    log::error!("the {} thread failed: stopping the server", self.name);
                    self.stopper.stop();
                }
            }
        }
        let (ended_tx, ended) = crossbeam_channel::bounded(0);
        let guard = StopOnPanic {
            name: name.to_string(),
            stopper,
            _ended: ended_tx,
        };
        let thread = thread::Builder::new().name(name.into()).spawn(move || {
            let _guard = guard;
            body();
        })?;
        Ok(Guarded { thread, ended })
    }

    /// Waits up to `limit` for the thread to end: `Some(Err(()))` if it
    /// panicked, `None` if it is still running.
    pub(super) fn wait(self, limit: Duration) -> Option<Result<(), ()>> {
        match self.ended.recv_timeout(limit) {
            Err(RecvTimeoutError::Disconnected) => Some(self.thread.join().map_err(|_| ())),
            Ok(()) | Err(RecvTimeoutError::Timeout) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopper() -> (Stopper, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stopper = Stopper {
            stop: Arc::default(),
            asked_at: Arc::default(),
            wake: listener.local_addr().unwrap(),
        };
        (stopper, listener)
    }

    #[test]
    fn a_guarded_thread_that_panics_stops_the_server_and_reports_it() {
        let (stopper, _listener) = stopper();
        let thread = Guarded::spawn("test-hub", stopper.clone(), || panic!("a bug")).unwrap();
        assert_eq!(thread.wait(Duration::from_secs(10)), Some(Err(())));
        assert!(
            stopper.stop.load(Ordering::SeqCst),
            "the server was not told"
        );
        assert!(stopper.asked_at.get().is_some());
    }

    #[test]
    fn a_guarded_thread_that_ends_well_is_joined_and_one_still_busy_is_not() {
        let (stopper, _listener) = stopper();
        let done = Guarded::spawn("test-ok", stopper.clone(), || {}).unwrap();
        assert_eq!(done.wait(Duration::from_secs(10)), Some(Ok(())));
        let (release, wait) = crossbeam_channel::bounded::<()>(0);
        let busy = Guarded::spawn("test-busy", stopper.clone(), move || {
            let _ = wait.recv();
        })
        .unwrap();
        assert_eq!(busy.wait(Duration::from_millis(50)), None);
        drop(release);
        assert!(!stopper.stop.load(Ordering::SeqCst));
    }
}
