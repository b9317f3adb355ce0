//! What /proc says about a process: CPU time, resident memory, threads;
//! and the bench's own limit on open files.

use std::fs;
use std::io;
use std::time::{Duration, Instant};

/// File descriptors the bench needs besides one per client: std streams,
/// the pollers, /proc reads, with room to spare.
const SPARE_FDS: u64 = 64;

/// /proc entries to sample, added up: the server's (or servers'), or the
/// bench's own.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `/proc/PID` or `/proc/self`, one or more.
    dirs: Vec<String>,
    /// Clock ticks per second, the unit of utime and stime.
    ticks: u64,
}

/// One reading of a process's CPU time, memory and threads.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// utime + stime.
    pub cpu: Duration,
    /// Resident set size.
    pub rss_kib: u64,
    /// Threads alive.
    pub threads: u64,
}

/// Server and bench readings at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Samples {
    /// When they were taken.
    pub at: Instant,
    /// The server's, with `--server-pid`.
    pub server: Option<ProcSample>,
    /// The bench's own.
    pub me: Option<ProcSample>,
}

impl Samples {
    /// Reads both now; a failed read leaves a field empty.
    pub fn take(server: Option<&Probe>, me: &Probe) -> Samples {
        Samples {
            at: Instant::now(),
            server: server.and_then(|probe| probe.sample().ok()),
            me: me.sample().ok(),
        }
    }
}

impl Probe {
    /// A probe of the processes `pids`: their numbers added up.
    pub fn of(pids: &[u32]) -> Probe {
        Probe::new(pids.iter().map(|pid| format!("/proc/{pid}")).collect())
    }

    /// A probe of this process.
    pub fn me() -> Probe {
        Probe::new(vec!["/proc/self".to_string()])
    }

    /// A probe of the /proc directories `dirs`.
    fn new(dirs: Vec<String>) -> Probe {
        Probe {
            dirs,
            ticks: rustix::param::clock_ticks_per_second().max(1),
        }
    }

    /// Reads the processes' numbers now, added up.
    pub fn sample(&self) -> io::Result<ProcSample> {
        let mut total = ProcSample {
            cpu: Duration::ZERO,
            rss_kib: 0,
            threads: 0,
        };
        for dir in &self.dirs {
            let stat = fs::read_to_string(format!("{dir}/stat"))?;
            let status = fs::read_to_string(format!("{dir}/status"))?;
            let one = parse(&stat, &status, self.ticks)?;
            total.cpu += one.cpu;
            total.rss_kib += one.rss_kib;
            total.threads += one.threads;
        }
        Ok(total)
    }
}

/// Reads CPU time from `/proc/PID/stat` and memory and threads from
/// `/proc/PID/status`.
fn parse(stat: &str, status: &str, ticks_per_s: u64) -> io::Result<ProcSample> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    // The command name (field 2) may hold spaces and parentheses: the
    // fields worth reading start after its last ')'. utime and stime are
    // fields 14 and 15, so the 12th and 13th after the name.
    let rest = &stat[stat.rfind(')').ok_or_else(|| invalid("no ')' in stat"))? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let mut tick_field = || -> io::Result<u64> {
        fields
            .next()
            .and_then(|field| field.parse().ok())
            .ok_or_else(|| invalid("short stat"))
    };
    let ticks = tick_field()? + tick_field()?;
    let field = |name: &str| -> io::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| invalid(name))
    };
    Ok(ProcSample {
        cpu: Duration::from_micros(ticks * 1_000_000 / ticks_per_s),
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:")?,
    })
}

/// Raises this process's soft limit on open files to its hard limit, then
/// fails, with the fix, if that is still too few for `connections`.
///
/// Processes started from here (the suite's servers and measurements)
/// inherit the raised limit.
pub fn ensure_fd_limit(connections: u64) -> Result<u64, String> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|err| format!("cannot read the limit on open files: {err}"))?;
    let needed = connections + SPARE_FDS;
    if limit < needed {
        return Err(format!(
            "{connections} connections need about {needed} file descriptors, but the hard \
             limit (`ulimit -Hn`) is {limit}: raise it (as root, `ulimit -Hn 65536` in the \
             shell that starts the bench and the server, or LimitNOFILE= in a unit) or use \
             fewer clients"
        ));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_memory_and_threads() {
        // A command name with a space and a parenthesis, as /proc allows.
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0";
        let status = "Name:\tx\nVmRSS:\t  1234 kB\nThreads:\t7\n";
        let sample = parse(stat, status, 100).unwrap();
        assert_eq!(sample.cpu, Duration::from_secs(3));
        assert_eq!((sample.rss_kib, sample.threads), (1234, 7));
        assert!(parse("no paren", status, 100).is_err());
    }

    #[test]
    fn this_process_can_be_read() {
        let sample = Probe::me().sample().unwrap();
        assert!(sample.threads >= 1 && sample.rss_kib > 0);
    }
}
