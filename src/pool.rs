//! Threads kept for the next job instead of ending after each one.
//!
//! Starting and ending a thread costs the kernel tens of microseconds (its
//! stack is mapped, guarded, advised and unmapped; other cores are told),
//! as much as a third of a TLS handshake. A server where clients come and
//! go would pay that twice per connection, so the server's threads wait a
//! few seconds after their job for another, and only then end. This is not
//! a fixed-size pool: when every thread is busy, a new one starts, so a
//! slow job (a client that trickles its handshake) never holds up others.
//!
//! Next: [`queue`](crate::queue).

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::sync;

/// What a thread of the pool runs.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// What a waiting thread finds when it wakes.
enum Handed {
    /// Nothing yet.
    Nothing,
    /// Its next job.
    Job(Job),
    /// The pool is closed: end.
    Closed,
}

/// Where a waiting thread's next job is put. A mutex and a condition
/// variable rather than a channel: channels spin and yield before they
/// sleep, and these threads mostly sleep.
struct Handoff {
    handed: Mutex<Handed>,
    ready: Condvar,
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, Handed> {
        // What is handed is swapped whole: never half written.
        sync::lock(&self.handed)
    }

    fn hand(&self, what: Handed) {
        *self.lock() = what;
        self.ready.notify_one();
    }
}

/// A thread waiting for a job.
struct Idle {
    /// Tells this thread from the others, so that it can take itself off
    /// the list when its wait ends.
    id: u64,
    handoff: Arc<Handoff>,
}

/// What the pool and its threads share: how threads are made and kept,
/// and the list of those waiting for a job.
struct Threads {
    /// The threads' name.
    name: &'static str,
    stack: usize,
    /// How long a thread waits for its next job before it ends.
    keep: Duration,
    /// The most threads waiting at once; more end at once.
    max_idle: usize,
    /// The threads waiting for a job, most recently idle last; `None` once
    /// the pool is closed, so that threads end after their job.
    idle: Mutex<Option<Vec<Idle>>>,
    next_id: Mutex<u64>,
}

impl Threads {
    fn idle(&self) -> MutexGuard<'_, Option<Vec<Idle>>> {
        // Pushes and removals only: a panic cannot leave the list half done.
        sync::lock(&self.idle)
    }
}

/// Threads of one kind (their name and stack size), reused between jobs.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Threads>,
}

impl Pool {
    /// A pool of threads named `name` with `stack` bytes of stack, each
    /// waiting up to `keep` after a job for another; at most `max_idle`
    /// wait at once.
    pub fn new(name: &'static str, stack: usize, keep: Duration, max_idle: usize) -> Pool {
        Pool {
            shared: Arc::new(Threads {
                name,
                stack,
                keep,
                max_idle,
                idle: Mutex::new(Some(Vec::new())),
                next_id: Mutex::new(0),
            }),
        }
    }

    /// Runs `job` on a waiting thread, or on a new one if none waits.
    /// Fails only if a new thread was needed and the system refused it;
    /// then `job` is dropped without running.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let job: Job = Box::new(job);
        // A thread on the list waits until it is handed something, and
        // takes itself off the list before it gives up waiting.
        let waiting = self.shared.idle().as_mut().and_then(Vec::pop);
        match waiting {
            Some(idle) => {
                idle.handoff.hand(Handed::Job(job));
                Ok(())
            }
            None => self.start(job),
        }
    }

    /// Threads waiting for a job right now.
    pub fn idle_threads(&self) -> usize {
        self.shared.idle().as_ref().map_or(0, Vec::len)
    }

    /// Ends every waiting thread now, and every busy one after its job;
    /// jobs run from now on get threads of their own.
    pub fn close(&self) {
        let waiting = self.shared.idle().take();
        for idle in waiting.into_iter().flatten() {
            idle.handoff.hand(Handed::Closed);
        }
    }

    fn start(&self, first: Job) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let id = {
            let mut next = sync::lock(&shared.next_id);
            *next += 1;
            *next
        };
        thread::Builder::new()
            .name(shared.name.to_string())
            .stack_size(shared.stack)
            .spawn(move || work(&shared, id, first))
            .map(drop)
    }
}

/// A pool thread's life: a job, then a wait for the next, until a wait
/// ends with none.
fn work(shared: &Threads, id: u64, first: Job) {
    let mut job = first;
    loop {
        job();
        let Some(next) = wait_for_job(shared, id) else {
            return;
        };
        job = next;
    }
}

fn wait_for_job(shared: &Threads, id: u64) -> Option<Job> {
    let handoff = Arc::new(Handoff {
        handed: Mutex::new(Handed::Nothing),
        ready: Condvar::new(),
    });
    {
        let mut idle = shared.idle();
        let idle = idle.as_mut()?;
        if idle.len() >= shared.max_idle {
            return None;
        }
        idle.push(Idle {
            id,
            handoff: Arc::clone(&handoff),
        });
    }
    let deadline = Instant::now() + shared.keep;
    let mut handed = handoff.lock();
    loop {
        match std::mem::replace(&mut *handed, Handed::Nothing) {
            Handed::Job(job) => return Some(job),
            Handed::Closed => return None,
            Handed::Nothing => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        handed = sync::wait_timeout(&handoff.ready, handed, left);
    }
    drop(handed);
    let mut idle = shared.idle();
    if let Some(list) = idle.as_mut() {
        if let Some(place) = list.iter().position(|waiting| waiting.id == id) {
            list.swap_remove(place);
            return None;
        }
    }
    drop(idle);
    // Taken off the list just as the wait ended, by a job or by closing:
    // what was handed comes at once.
    let mut handed = handoff.lock();
    loop {
        match std::mem::replace(&mut *handed, Handed::Nothing) {
            Handed::Job(job) => return Some(job),
            Handed::Closed => return None,
            Handed::Nothing => {
                handed = sync::wait(&handoff.ready, handed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn thread_name(pool: &Pool) -> crossbeam_channel::Receiver<(Option<String>, thread::ThreadId)> {
        let (done, names) = crossbeam_channel::bounded(1);
        pool.run(move || {
            let current = thread::current();
            let _ = done.send((current.name().map(str::to_string), current.id()));
        })
        .unwrap();
        names
    }

    /// Waits until `pool` has `count` threads waiting.
    fn until_idle(pool: &Pool, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.idle_threads() != count {
            assert!(Instant::now() < deadline, "{} idle", pool.idle_threads());
            thread::yield_now();
        }
    }

    #[test]
    fn a_thread_that_finished_runs_the_next_job() {
        let pool = Pool::new("worker", 64 * 1024, Duration::from_secs(10), 4);
        let (name, first) = thread_name(&pool).recv().unwrap();
        assert_eq!(name.as_deref(), Some("worker"));
        until_idle(&pool, 1);
        let (_, second) = thread_name(&pool).recv().unwrap();
        assert_eq!(first, second);
        pool.close();
    }

    #[test]
    fn a_busy_pool_starts_another_thread() {
        let pool = Pool::new("worker", 64 * 1024, Duration::from_secs(10), 4);
        let (release, wait) = crossbeam_channel::bounded::<()>(0);
        let (started, busy) = crossbeam_channel::bounded(1);
        pool.run(move || {
            let _ = started.send(thread::current().id());
            let _ = wait.recv();
        })
        .unwrap();
        let blocked = busy.recv().unwrap();
        let (_, other) = thread_name(&pool).recv().unwrap();
        assert_ne!(blocked, other);
        drop(release);
        until_idle(&pool, 2);
        pool.close();
        assert_eq!(pool.idle_threads(), 0);
    }

    #[test]
    fn idle_threads_end_after_their_wait_and_past_the_cap() {
        let pool = Pool::new("worker", 64 * 1024, Duration::from_millis(50), 1);
        let (release, wait) = crossbeam_channel::bounded::<()>(0);
        for _ in 0..2 {
            let wait = wait.clone();
            pool.run(move || {
                let _ = wait.recv();
            })
            .unwrap();
        }
        drop(release);
        // At most one of the two waits, and it ends once its wait is over.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen_waiting = false;
        loop {
            let idle = pool.idle_threads();
            assert!(idle <= 1, "{idle} threads wait, past the cap of 1");
            seen_waiting |= idle == 1;
            if seen_waiting && idle == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "never waited, or never ended");
            thread::yield_now();
        }
    }
}
