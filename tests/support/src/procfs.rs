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

/// The names of this process's threads (cut to 15 bytes by the kernel).
pub fn thread_names() -> Vec<String> {
    fs::read_dir("/proc/self/task")
        .unwrap()
        // A thread that ended since the listing has no name to read.
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

/// True if a thread of this process has the name `name` (names are cut
/// to 15 bytes by the kernel).
pub fn has_thread_named(name: &str) -> bool {
    thread_names().iter().any(|thread| thread == name)
}
