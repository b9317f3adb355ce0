//! Pinning: the server under test on some cores and chat-bench on the
//! others, so that a run measures the server rather than the two fighting
//! over cores. Owns the split and the affinity calls; the suite and `--pin`
//! decide when to use them.

use std::fs;

use rustix::process::Pid;
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// How many passes over a process's threads [`pin_process`] makes at most
/// before giving up on threads that keep appearing unpinned.
const MAX_PASSES: usize = 10;

/// Which cores the server gets and which the bench gets; disjoint, neither
/// empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The server's CPUs.
    pub server: Vec<usize>,
    /// chat-bench's CPUs.
    pub bench: Vec<usize>,
}

impl Split {
    /// Splits the CPUs this process may run on (see [`Split::of`]), or
    /// says why it cannot.
    pub fn of_allowed() -> Result<Split, String> {
        let allowed = sched_getaffinity(None)
            .map_err(|err| format!("cannot read this process's CPU affinity: {err}"))?;
        let cpus: Vec<(usize, (u32, u32))> = (0..CpuSet::MAX_CPU)
            .filter(|&cpu| allowed.is_set(cpu))
            .map(|cpu| (cpu, core_of(cpu)))
            .collect();
        Split::of(&cpus).ok_or_else(|| {
            format!(
                "pinning needs at least two CPUs; this process may run on {} only",
                cpu_list(&cpus.iter().map(|&(cpu, _)| cpu).collect::<Vec<_>>())
            )
        })
    }

    /// Splits `cpus`, each with the (package, core) it belongs to, by whole
    /// physical cores: the first half of the cores (at least one) to the
    /// server, the rest to the bench, so that hyperthread siblings never
    /// land on both sides. With one physical core of several threads, the
    /// threads are split instead. `None` for fewer than two CPUs.
    pub fn of(cpus: &[(usize, (u32, u32))]) -> Option<Split> {
        let mut cores: Vec<Vec<usize>> = Vec::new();
        let mut keys: Vec<(u32, u32)> = Vec::new();
        for &(cpu, key) in cpus {
            match keys.iter().position(|&k| k == key) {
                Some(i) => cores[i].push(cpu),
                None => {
                    keys.push(key);
                    cores.push(vec![cpu]);
                }
            }
        }
        if cores.len() < 2 {
            cores = cpus.iter().map(|&(cpu, _)| vec![cpu]).collect();
        }
        if cores.len() < 2 {
            return None;
        }
        let half = cores.len() / 2;
        let mut server: Vec<usize> = cores[..half].concat();
        let mut bench: Vec<usize> = cores[half..].concat();
        server.sort_unstable();
        bench.sort_unstable();
        Some(Split { server, bench })
    }

    /// The split in words, e.g. `the server on CPU 0, chat-bench on CPU 1`.
    pub fn describe(&self) -> String {
        format!(
            "the server on CPU {}, chat-bench on CPU {}",
            cpu_list(&self.server),
            cpu_list(&self.bench)
        )
    }
}

/// The (package, core) that `cpu` belongs to, from sysfs; a core of its own
/// if sysfs does not say.
fn core_of(cpu: usize) -> (u32, u32) {
    let read = |what: &str| -> Option<u32> {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/{what}");
        fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    match (read("physical_package_id"), read("core_id")) {
        (Some(package), Some(core)) => (package, core),
        _ => (u32::MAX, cpu as u32),
    }
}

/// CPUs as taskset writes them: `0`, `0-3`, `0,2,4-5`.
pub fn cpu_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        parts.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// The set holding `cpus`.
fn set_of(cpus: &[usize]) -> CpuSet {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    set
}

/// Pins the calling thread to `cpus`. Threads and processes it starts
/// afterwards inherit the mask.
pub fn pin_this_thread(cpus: &[usize]) -> Result<(), String> {
    sched_setaffinity(None, &set_of(cpus))
        .map_err(|err| format!("cannot pin this thread to CPU {}: {err}", cpu_list(cpus)))
}

/// Pins every thread of process `pid` to `cpus` (Linux sets affinity per
/// thread), passing over /proc/PID/task until a pass finds every thread
/// pinned already: a thread started during a pass by one not yet pinned is
/// caught by the next, and threads started later inherit the mask of a
/// pinned one. Returns how many threads it moved.
pub fn pin_process(pid: u32, cpus: &[usize]) -> Result<usize, String> {
    let want = set_of(cpus);
    let mut moved = 0;
    for _ in 0..MAX_PASSES {
        let tasks = fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|err| format!("cannot list the threads of process {pid}: {err}"))?;
        let mut moved_now = 0;
        for task in tasks.flatten() {
            let tid = task
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
                .and_then(Pid::from_raw);
            let Some(tid) = tid else { continue };
            // A thread that exits between the listing and the call is gone,
            // which is as good as pinned.
            match sched_getaffinity(Some(tid)) {
                Ok(mask) if mask == want => continue,
                Ok(_) => {}
                Err(_) => continue,
            }
            match sched_setaffinity(Some(tid), &want) {
                Ok(()) => moved_now += 1,
                Err(rustix::io::Errno::SRCH) => {}
                Err(err) => {
                    return Err(format!(
                        "cannot pin thread {} of process {pid} to CPU {}: {err}",
                        tid.as_raw_nonzero(),
                        cpu_list(cpus)
                    ))
                }
            }
        }
        moved += moved_now;
        if moved_now == 0 {
            return Ok(moved);
        }
    }
    Err(format!(
        "process {pid} kept starting threads faster than they could be pinned"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::thread;

    #[test]
    fn splits_by_physical_core() {
        // Two cores of two threads each, numbered the way Linux often does:
        // siblings are n and n + 2.
        let cpus = [(0, (0, 0)), (1, (0, 1)), (2, (0, 0)), (3, (0, 1))];
        let split = Split::of(&cpus).unwrap();
        assert_eq!(split.server, vec![0, 2]);
        assert_eq!(split.bench, vec![1, 3]);
        // One core with two threads: the threads are split.
        let split = Split::of(&[(0, (0, 0)), (1, (0, 0))]).unwrap();
        assert_eq!((split.server, split.bench), (vec![0], vec![1]));
        // Three cores: the server gets one, the bench two.
        let split = Split::of(&[(4, (0, 4)), (5, (0, 5)), (6, (1, 0))]).unwrap();
        assert_eq!((split.server, split.bench), (vec![4], vec![5, 6]));
        assert!(Split::of(&[(0, (0, 0))]).is_none());
        assert!(Split::of(&[]).is_none());
    }

    #[test]
    fn cpu_lists_read_like_taskset() {
        assert_eq!(cpu_list(&[0]), "0");
        assert_eq!(cpu_list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(cpu_list(&[0, 2, 4, 5]), "0,2,4-5");
        let split = Split {
            server: vec![0],
            bench: vec![1, 2, 3],
        };
        assert_eq!(
            split.describe(),
            "the server on CPU 0, chat-bench on CPU 1-3"
        );
    }

    /// The first CPU this process may run on.
    fn first_allowed() -> usize {
        let allowed = sched_getaffinity(None).unwrap();
        (0..CpuSet::MAX_CPU).find(|&c| allowed.is_set(c)).unwrap()
    }

    #[test]
    fn a_thread_pinned_stays_on_its_cpu() {
        let cpu = first_allowed();
        let mask = thread::spawn(move || {
            pin_this_thread(&[cpu]).unwrap();
            sched_getaffinity(None).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(mask, set_of(&[cpu]));
    }

    #[test]
    fn every_thread_of_another_process_is_pinned() {
        let cpu = first_allowed();
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep(1) runs");
        let pid = child.id();
        let pinned = pin_process(pid, &[cpu]);
        let mask = Pid::from_raw(pid as i32).map(|p| sched_getaffinity(Some(p)));
        // Stopped before any assertion can fail, and checked stopped.
        child.kill().unwrap();
        assert!(!child.wait().unwrap().success());
        pinned.unwrap();
        assert_eq!(mask.unwrap().unwrap(), set_of(&[cpu]));
        assert!(pin_process(pid, &[cpu]).is_err(), "the process is gone");
    }
}
