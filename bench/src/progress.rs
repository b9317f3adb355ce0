//! A one-line progress display on standard error, only when that is a
//! terminal: logs and pipes get the final lines alone.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// How often the line is redrawn: often enough to look alive, rarely
/// enough to cost nothing.
const REDRAW: Duration = Duration::from_millis(250);

/// A progress line that redraws itself until dropped.
pub struct Progress {
    /// Dropped to stop the drawing thread.
    stop: Option<Sender<()>>,
    /// The drawing thread.
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows `label: COUNT/total` while it lives, `count` read at each
    /// redraw; shows nothing if standard error is not a terminal.
    pub fn start(label: String, total: u64, count: Arc<AtomicU64>) -> Progress {
        let quiet = Progress {
            stop: None,
            thread: None,
        };
        if !io::stderr().is_terminal() {
            return quiet;
        }
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let spawned = thread::Builder::new()
            .name("progress".into())
            .spawn(move || draw(&label, total, &count, &stopped));
        match spawned {
            Ok(thread) => Progress {
                stop: Some(stop),
                thread: Some(thread),
            },
            // The display is a nicety; the run goes on without it.
            Err(_) => quiet,
        }
    }
}

/// Redraws until `stopped` disconnects, then clears the line.
fn draw(label: &str, total: u64, count: &AtomicU64, stopped: &Receiver<()>) {
    let mut err = io::stderr();
    loop {
        let done = count.load(Ordering::Relaxed);
        // A failed write to a terminal leaves nothing to do about it.
        let _ = write!(err, "\r{label}: {} / {}\x1b[K", human(done), human(total));
        let _ = err.flush();
        if let Err(RecvTimeoutError::Disconnected) = stopped.recv_timeout(REDRAW) {
            break;
        }
    }
    let _ = write!(err, "\r\x1b[K");
    let _ = err.flush();
}

/// A count in a few characters: 950, 12.3k, 4.56M.
fn human(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            // A panic in the display thread is not the run's business.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_short() {
        assert_eq!(human(950), "950");
        assert_eq!(human(12_345), "12.3k");
        assert_eq!(human(4_560_000), "4.56M");
    }
}
