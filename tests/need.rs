//! `scripts/need.sh`, which `make test` runs first: on a fresh machine it
//! installs what the tests need as root, and otherwise stops at once with
//! the command to run. Run here on a PATH of stand-ins, so that nothing is
//! installed and `id` and `apt-get` say what each case needs.

use secure_chat_test_support as support;

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{run, TempDir};

/// The script, from the repository's root.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/need.sh")
}

/// Each `PROGRAM:PACKAGE` pair the script wants for `target`.
fn wants(target: &str) -> Vec<(String, String)> {
    let output = run(Command::new(script()).args(["--list", target]), "");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (program, package) = line.split_once(':').unwrap();
            (program.to_string(), package.to_string())
        })
        .collect()
}

/// Writes an executable shell script.
fn write_script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The absolute path of a program on this process's PATH.
fn real(program: &str) -> PathBuf {
    env::split_paths(&env::var_os("PATH").unwrap())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// A machine as the script sees it: a PATH of stand-ins for every program
/// of `make test` but `missing`, an `id` that says `uid`, and an `apt-get`
/// that logs its arguments and, on `install`, brings the missing programs
/// when `apt_brings` is true.
struct Machine {
    dir: TempDir,
}

impl Machine {
    fn new(missing: &[&str], uid: u32, apt_brings: bool) -> Machine {
        let dir = TempDir::new();
        let bin = dir.path().join("bin");
        let pending = dir.path().join("pending");
        fs::create_dir(&bin).unwrap();
        fs::create_dir(&pending).unwrap();
        for (program, _) in wants("test") {
            let into = if missing.contains(&program.as_str()) {
                if !apt_brings {
                    continue;
                }
                &pending
            } else {
                &bin
            };
            write_script(&into.join(&program), "exit 0");
        }
        // The Rust side is in place: `cargo fmt --version` and `cargo clippy
        // --version` succeed, and rustup is not needed.
        write_script(&bin.join("cargo"), "exit 0");
        write_script(&bin.join("id"), &format!("echo {uid}"));
        let log = dir.path().join("apt.log");
        write_script(
            &bin.join("apt-get"),
            &format!(
                "echo \"$*\" >> '{log}'\n\
                 if [ \"$1\" = install ]; then\n\
                   for program in '{pending}'/*; do\n\
                     [ -e \"$program\" ] && '{cp}' -p \"$program\" '{bin}/'\n\
                   done\n\
                 fi\n\
                 exit 0",
                log = log.display(),
                pending = pending.display(),
                cp = real("cp").display(),
                bin = bin.display(),
            ),
        );
        Machine { dir }
    }

    /// Runs `need.sh test` there, with only the stand-ins on PATH.
    fn need(&self) -> Output {
        run(
            Command::new("/bin/sh")
                .arg(script())
                .arg("test")
                .env_clear()
                .env("PATH", self.dir.path().join("bin")),
            "",
        )
    }

    /// What apt-get was asked, one call a line.
    fn apt_calls(&self) -> String {
        fs::read_to_string(self.dir.path().join("apt.log")).unwrap_or_default()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const SERVERS: [&str; 3] = ["redis-server", "redis-cli", "haproxy"];

#[test]
fn a_user_is_told_the_exact_command_and_nothing_is_installed() {
    let machine = Machine::new(&SERVERS, 1000, true);
    let output = machine.need();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains(
            "sudo apt-get update && sudo apt-get install -y --no-install-recommends \
             redis-server redis-tools haproxy"
        ),
        "{}",
        stderr(&output)
    );
    assert_eq!(machine.apt_calls(), "");
}

#[test]
fn root_installs_what_is_missing_and_then_finds_it() {
    let machine = Machine::new(&SERVERS, 0, true);
    let output = machine.need();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        machine.apt_calls(),
        "update\ninstall -y --no-install-recommends redis-server redis-tools haproxy\n"
    );
    // Once there, nothing more is installed.
    let again = machine.need();
    assert!(again.status.success(), "{again:?}");
    assert_eq!(machine.apt_calls().lines().count(), 2);
}

#[test]
fn root_stops_when_apt_get_did_not_bring_a_program() {
    let machine = Machine::new(&["haproxy"], 0, false);
    let output = machine.need();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("still missing after apt-get: haproxy"),
        "{}",
        stderr(&output)
    );
}

/// The tests run kill(1): the shell's own `kill` does not count.
#[test]
fn the_shells_own_kill_is_not_kill() {
    let machine = Machine::new(&["kill"], 1000, false);
    let output = machine.need();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("install -y --no-install-recommends procps"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn nothing_missing_installs_nothing() {
    let machine = Machine::new(&[], 0, true);
    let output = machine.need();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(machine.apt_calls(), "");
}

/// Every program a test starts by name is one the script makes sure of.
#[test]
fn the_list_covers_every_program_the_tests_start() {
    let listed: Vec<String> = wants("test").into_iter().map(|(p, _)| p).collect();
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut started = Vec::new();
    for path in rust_files(&tests) {
        let text = fs::read_to_string(&path).unwrap();
        for piece in text.split("Command::new(\"").skip(1) {
            let program = piece.split('"').next().unwrap().to_string();
            started.push((program, path.clone()));
        }
    }
    assert!(started.iter().any(|(program, _)| program == "redis-server"));
    for (program, path) in started {
        // The shell is POSIX's own, at /bin/sh on every system.
        if program != "sh" && program != "/bin/sh" {
            assert!(
                listed.contains(&program),
                "{} starts {program}, which scripts/need.sh does not list",
                path.display()
            );
        }
    }
}

/// The `.rs` files under `dir`, its folders' included.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}
