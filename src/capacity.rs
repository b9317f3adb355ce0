//! How many connections this machine lets the server hold.
//!
//! Each connection costs one thread, one file descriptor, and the memory
//! maps of a thread's stack. The kernel limits all three; past any of them
//! a new thread or socket fails, and some of those failures abort the whole
//! process. So the server reads the limits once at start, says in one log
//! line what they allow and how to raise them, and never goes past them.
//!
//! Next: [`pool`](crate::pool).

use std::fmt;
use std::fs;

/// Memory maps one std thread takes: its stack and guard page, and the
/// alternate signal stack and its guard page, which std sets up to report
/// stack overflows.
pub const MAPS_PER_THREAD: u64 = 4;

/// Memory maps kept free for everything else: the heap's arenas, large
/// allocations, libraries loaded later.
pub const SPARE_MAPS: u64 = 2048;

/// File descriptors kept free for everything else: the listener, standard
/// streams, files read on reload.
pub const SPARE_FILES: u64 = 32;

/// File descriptors each writer thread holds: its epoll instance and the
/// event descriptor that wakes it.
pub const FILES_PER_WRITER: u64 = 2;

/// Threads kept free, system-wide, for the rest of the machine.
pub const SPARE_THREADS: u64 = 512;

/// The kernel's limits, as read at start; `None` where unreadable or
/// unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemLimits {
    /// `vm.max_map_count`: memory maps per process.
    pub max_map_count: Option<u64>,
    /// Memory maps this process has already.
    pub maps_in_use: u64,
    /// The soft limit on open files (`ulimit -n`).
    pub open_files: Option<u64>,
    /// File descriptors this process has open already.
    pub files_in_use: u64,
    /// `kernel.threads-max`: threads on the whole machine.
    pub threads_max: Option<u64>,
    /// `kernel.pid_max`: every thread takes a process id, so this bounds
    /// threads too, and is often the lower of the two.
    pub pid_max: Option<u64>,
    /// The control group's `pids.max`, if the server runs in one with a
    /// limit (a systemd unit's `TasksMax=`, a container).
    pub cgroup_pids_max: Option<u64>,
    /// Threads in the control group now.
    pub cgroup_pids_in_use: u64,
    /// Threads on the machine now.
    pub threads_in_use: u64,
}

impl SystemLimits {
    /// Reads the limits of this process and machine from /proc and /sys.
    pub fn read() -> SystemLimits {
        let number = |path: &str| {
            fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
        };
        let count_lines =
            |path: &str| fs::read_to_string(path).map_or(0, |text| text.lines().count() as u64);
        let open_files = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _hard)| soft)
            .filter(|&soft| soft != rlimit::INFINITY);
        // /proc/loadavg's fourth field is "running/total" scheduling
        // entities, threads included.
        let threads_in_use = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| {
                let field = text.split_whitespace().nth(3)?;
                field.split_once('/')?.1.parse().ok()
            })
            .unwrap_or(0);
        SystemLimits {
            max_map_count: number("/proc/sys/vm/max_map_count"),
            maps_in_use: count_lines("/proc/self/maps"),
            open_files,
            files_in_use: fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64),
            threads_max: number("/proc/sys/kernel/threads-max"),
            pid_max: number("/proc/sys/kernel/pid_max"),
            // "max" (no limit) does not parse, which is what it means.
            cgroup_pids_max: number("/sys/fs/cgroup/pids.max"),
            cgroup_pids_in_use: number("/sys/fs/cgroup/pids.current").unwrap_or(0),
            threads_in_use,
        }
    }
}

/// One of the limits, and the connections it leaves room for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    /// What the limit is, as the user would set it.
    pub name: &'static str,
    /// Its value now.
    pub value: u64,
    /// Connections it allows, after what is in use and kept spare.
    pub connections: u64,
    /// How to raise it.
    pub raise: &'static str,
}

/// The connections the limits allow together: the lowest of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// Every limit that could be read, lowest allowance first.
    pub allowances: Vec<Allowance>,
}

impl Capacity {
    /// What `limits` allow a server with `writers` writer threads, with
    /// room kept spare for everything else.
    pub fn of(limits: &SystemLimits, writers: usize) -> Capacity {
        let writers = writers as u64;
        let mut allowances = Vec::new();
        let mut add = |name, value: Option<u64>, used: u64, spare: u64, per: u64, raise| {
            if let Some(value) = value {
                let connections = value.saturating_sub(used + spare) / per;
                allowances.push(Allowance {
                    name,
                    value,
                    connections,
                    raise,
                });
            }
        };
        add(
            "vm.max_map_count",
            limits.max_map_count,
            limits.maps_in_use,
            SPARE_MAPS + MAPS_PER_THREAD * writers,
            MAPS_PER_THREAD,
            "sysctl -w vm.max_map_count=262144",
        );
        add(
            "open files",
            limits.open_files,
            limits.files_in_use,
            SPARE_FILES + FILES_PER_WRITER * writers,
            1,
            "ulimit -n, or LimitNOFILE= in a systemd unit",
        );
        add(
            "kernel.threads-max",
            limits.threads_max,
            limits.threads_in_use,
            SPARE_THREADS,
            1,
            "sysctl -w kernel.threads-max=N",
        );
        add(
            "kernel.pid_max",
            limits.pid_max,
            limits.threads_in_use,
            SPARE_THREADS,
            1,
            "sysctl -w kernel.pid_max=4194304",
        );
        add(
            "the control group's pids.max",
            limits.cgroup_pids_max,
            limits.cgroup_pids_in_use,
            SPARE_THREADS,
            1,
            "TasksMax= in a systemd unit",
        );
        allowances.sort_by_key(|a| a.connections);
        Capacity { allowances }
    }

    /// Reads the limits and says what they allow a server with `writers`
    /// writer threads.
    pub fn of_this_machine(writers: usize) -> Capacity {
        Capacity::of(&SystemLimits::read(), writers)
    }

    /// The most connections, open at once, the limits allow; `None` if no
    /// limit could be read.
    pub fn connections(&self) -> Option<usize> {
        self.allowances
            .first()
            .map(|a| usize::try_from(a.connections).unwrap_or(usize::MAX))
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(lowest) = self.allowances.first() else {
            return write!(f, "the system's limits could not be read");
        };
        write!(
            f,
            "room for {} connections (each takes a thread, a file and {MAPS_PER_THREAD} \
             memory maps): {} {} allows {}; raise it with {}",
            lowest.connections, lowest.name, lowest.value, lowest.connections, lowest.raise
        )?;
        for other in &self.allowances[1..] {
            write!(
                f,
                "; {} {} allows {}",
                other.name, other.value, other.connections
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's limits, as `sysctl` and `ulimit` showed them.
    fn this_kind_of_machine() -> SystemLimits {
        SystemLimits {
            max_map_count: Some(65530),
            maps_in_use: 330,
            open_files: Some(20000),
            files_in_use: 8,
            threads_max: Some(192726),
            pid_max: Some(32768),
            cgroup_pids_max: None,
            cgroup_pids_in_use: 0,
            threads_in_use: 200,
        }
    }

    #[test]
    fn memory_maps_are_the_lowest_limit_here() {
        let capacity = Capacity::of(&this_kind_of_machine(), 2);
        // (65530 - 330 - 2048 - 2 writers' 4 maps) / 4
        assert_eq!(capacity.connections(), Some(15786));
        assert_eq!(capacity.allowances[0].name, "vm.max_map_count");
        assert_eq!(capacity.allowances[1].name, "open files");
        assert_eq!(capacity.allowances[1].connections, 20000 - 8 - 32 - 4);
        assert_eq!(capacity.allowances[2].name, "kernel.pid_max");
        assert_eq!(capacity.allowances[2].connections, 32768 - 200 - 512);
    }

    #[test]
    fn the_log_line_names_the_limit_and_how_to_raise_it() {
        let text = Capacity::of(&this_kind_of_machine(), 2).to_string();
        assert!(
            text.starts_with(
                "room for 15786 connections (each takes a thread, a file and 4 memory maps): \
                 vm.max_map_count 65530 allows 15786; raise it with sysctl -w \
                 vm.max_map_count=262144; open files 20000 allows 19956"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_low_open_files_limit_wins() {
        let limits = SystemLimits {
            open_files: Some(1024),
            ..this_kind_of_machine()
        };
        let capacity = Capacity::of(&limits, 2);
        assert_eq!(capacity.connections(), Some(1024 - 8 - 32 - 4));
        assert!(capacity.to_string().contains("raise it with ulimit -n"));
    }

    #[test]
    fn a_control_group_limit_counts_and_nothing_readable_means_no_limit() {
        let limits = SystemLimits {
            cgroup_pids_max: Some(1000),
            cgroup_pids_in_use: 40,
            ..this_kind_of_machine()
        };
        assert_eq!(
            Capacity::of(&limits, 2).connections(),
            Some(1000 - 40 - 512)
        );
        let nothing = Capacity::of(&SystemLimits::default(), 2);
        assert_eq!(nothing.connections(), None);
        assert_eq!(nothing.to_string(), "the system's limits could not be read");
    }

    #[test]
    fn limits_already_used_up_allow_nothing() {
        let limits = SystemLimits {
            max_map_count: Some(1000),
            maps_in_use: 5000,
            ..this_kind_of_machine()
        };
        assert_eq!(Capacity::of(&limits, 2).connections(), Some(0));
    }
}
