//! Readings of this process from /proc: memory, descriptors, threads.
//! Linux only, as the server's own accounting is.

use std::fs;

/// The resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The number of file descriptors this process has open. The directory
/// handle used to list them counts too, the same in every call.
pub fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The number of threads in this process.
pub fn thread_count() -> usize {
    fs::read_dir("/proc/self/task").unwrap().count()
}

/// True if a thread of this process has the name `name` (names are cut
/// to 15 bytes by the kernel).
pub fn has_thread_named(name: &str) -> bool {
    fs::read_dir("/proc/self/task").unwrap().any(|task| {
        let comm = task.unwrap().path().join("comm");
        // A thread that ended since the listing has no name to read.
        fs::read_to_string(comm).is_ok_and(|comm| comm.trim_end() == name)
    })
}
