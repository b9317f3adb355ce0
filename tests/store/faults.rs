//! The store's faults: a data directory or file that cannot be written,
//! a full disk, a damaged file, files left open to others, and a
//! directory another server holds.

use super::*;

/// True if this process runs as root, which file permissions do not stop.
fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// Two clients chat on `server`: the chat goes on whatever the disk does.
fn still_chats(server: &ServerProcess, pki: &Pki) {
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    let bob = TestClient::connect(server.addr, &pki.ca);
    alice.recv_until(|line| line == format!("notice {} joined #lobby", bob.nick));
    chats(&mut alice, "still here");
    let heard = bob.recv_until(|line| line.starts_with("chat "));
    assert_eq!(heard, format!("chat {} still here", alice.nick));
}

/// Runs a server on `data` as a process that obeys file modes (root
/// without CAP_DAC_OVERRIDE, which writes anywhere otherwise), checks that
/// the chat goes on, and gives back its log.
fn chats_where_it_cannot_write(pki: &Pki, data: &Path) -> Vec<String> {
    let mut command = if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args(["--bounding-set=-dac_override", "--"])
            .arg(&SERVER);
        command
    } else {
        Command::new(&SERVER)
    };
    command
        .args(["--addr", "127.0.0.1:0", "--rate", "0", "--data-dir"])
        .arg(data)
        .args(cert_args(&pki.cert, &pki.key));
    let mut server = ServerProcess::spawn_command(&mut command);
    server.wait_until_listening();
    still_chats(&server, pki);
    server.stop()
}

#[test]
fn a_read_only_data_directory_warns_once_and_the_chat_goes_on() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o555)).unwrap();
    // Root writes anywhere; without CAP_DAC_OVERRIDE it obeys the mode.
    let log = chats_where_it_cannot_write(&pki, &data);
    let warnings: Vec<_> = log
        .iter()
        .filter(|line| line.contains("cannot be written"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log:#?}");
    assert!(warnings[0].contains("in memory"), "{}", warnings[0]);
    assert!(
        warnings[0].contains(&*data.to_string_lossy()),
        "{}",
        warnings[0]
    );
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(fs::read_dir(&data).unwrap().count(), 0);
}

/// A server on `data` whose files may grow to `limit` bytes (prlimit's
/// `--fsize` form: `SOFT` or `SOFT:HARD`): past it a write fails with
/// EFBIG, as on a full disk, root included. The signal a process gets past
/// the limit is ignored (the shell's ignore is inherited through exec).
fn on_a_small_disk(limit: &str, pki: &Pki, data: &Path, extra: &[&str]) -> ServerProcess {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ && exec prlimit --fsize={limit} -- \"$0\" \"$@\""
        ))
        .arg(&SERVER)
        .args(["--addr", "127.0.0.1:0", "--rate", "0", "--data-dir"])
        .arg(data)
        .args(extra)
        .args(cert_args(&pki.cert, &pki.key));
    ServerProcess::spawn_command(&mut command)
}

#[test]
fn a_full_disk_warns_once_and_the_chat_goes_on() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    // Files may grow to 64 KiB: room for the empty store, not for a burst.
    let mut server = on_a_small_disk("65536", &pki, &data, &[]);
    server.wait_until_listening();
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    for n in 0..300 {
        chats(&mut alice, &format!("{n} {}", "x".repeat(200)));
    }
    server.wait_for_log(|line| line.contains("the store cannot write"));
    still_chats(&server, &pki);
    drop(alice);
    let log = server.stop();
    let warnings = log
        .iter()
        .filter(|line| line.contains("cannot write"))
        .count();
    assert_eq!(warnings, 1, "{log:#?}");
}

/// One figure of the store from the server's metrics at `addr`.
fn store_figure(addr: std::net::SocketAddr, name: &str) -> f64 {
    let reply = support::metrics_text(addr);
    reply
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {reply}"))
        .parse()
        .unwrap()
}

#[test]
fn a_full_disk_that_frees_up_keeps_what_is_said_after_it() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    // As in `a_full_disk_warns_once_...`, but only the soft limit, which
    // the server's owner may raise while it runs: the disk frees up.
    let extra = ["--metrics", "127.0.0.1:0"];
    let mut server = on_a_small_disk("65536:unlimited", &pki, &data, &extra);
    let metrics = server.wait_for_log(|line| line.contains("metrics on http://"));
    let metrics: std::net::SocketAddr = metrics
        .rsplit_once("http://")
        .unwrap()
        .1
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    server.wait_until_listening();
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    for n in 0..300 {
        chats(&mut alice, &format!("{n} {}", "x".repeat(200)));
    }
    server.wait_for_log(|line| line.contains("the store cannot write"));
    // A room whose first line finds the disk full: its row is not made.
    // A disk at its limit may still take a small write after refusing a
    // larger one: a new room each time until its first line is refused.
    let mut refused_in = None;
    for n in 0..20 {
        let room = format!("#After{n}");
        alice.send(&format!("/join {room}"));
        alice.recv_until(|line| line.starts_with(&format!("notice you are in {room}")));
        let failed = store_figure(metrics, "chat_server_store_failed_total");
        chats(
            &mut alice,
            &format!("said while the disk was full {}", "y".repeat(2000)),
        );
        // Queued before its echo: once nothing waits, it was tried.
        assert!(wait_until(|| store_figure(
            metrics,
            "chat_server_store_queued"
        ) == 0.0));
        if store_figure(metrics, "chat_server_store_failed_total") > failed {
            refused_in = Some(room);
            break;
        }
    }
    let room = refused_in.expect("the full disk refused no room's first line");
    let raised = Command::new("prlimit")
        .args([
            "--pid",
            &server.pid.to_string(),
            "--fsize=unlimited:unlimited",
        ])
        .status()
        .unwrap();
    assert!(raised.success());
    chats(&mut alice, "said once it had room");
    server.wait_for_log(|line| line.contains("the store writes again"));
    let said_by = alice.nick.clone();
    drop(alice);
    server.stop();

    let server = kept(&pki, &data, &[]);
    let mut bob = TestClient::connect(server.addr, &pki.ca);
    let past = join_and_read_past(&mut bob, &room.to_lowercase());
    assert_eq!(
        past,
        [format!("history chat {said_by} said once it had room")]
    );
    drop(bob);
    server.stop();
}

#[test]
fn a_read_only_database_file_warns_once_and_the_chat_goes_on() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let server = kept(&pki, &data, &[]);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    chats(&mut alice, "kept before the file was made read-only");
    drop(alice);
    server.stop();
    // The directory can be written; the file, and its log if left, not.
    let mut files = vec![data.join("chat.db")];
    for file in ["chat.db-wal", "chat.db-shm"] {
        if data.join(file).exists() {
            files.push(data.join(file));
        }
    }
    for file in &files {
        fs::set_permissions(file, fs::Permissions::from_mode(0o444)).unwrap();
    }
    let before: Vec<Vec<u8>> = files.iter().map(|file| fs::read(file).unwrap()).collect();
    let log = chats_where_it_cannot_write(&pki, &data);
    let warnings: Vec<_> = log
        .iter()
        .filter(|line| line.contains("cannot be written") || line.contains("cannot write"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log:#?}");
    assert!(warnings[0].contains("chat.db"), "{}", warnings[0]);
    assert!(warnings[0].contains("in memory"), "{}", warnings[0]);
    for (file, bytes) in files.iter().zip(before) {
        assert_eq!(fs::read(file).unwrap(), bytes, "{} changed", file.display());
    }
}

#[test]
fn a_version_1_file_that_cannot_be_written_is_said_so_and_left_as_it_is() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    let file = data.join("chat.db");
    // Version 1's tables, as the server that made them wrote them.
    shell(&format!(
        "sqlite3 {} \"CREATE TABLE rooms (key TEXT PRIMARY KEY, name TEXT NOT NULL, \
         topic TEXT, rules TEXT) WITHOUT ROWID; CREATE TABLE lines (id INTEGER PRIMARY \
         KEY, room TEXT NOT NULL, at INTEGER NOT NULL, text TEXT NOT NULL); CREATE \
         TABLE server (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID; \
         INSERT INTO rooms VALUES ('#tea', '#Tea', 'leaves', NULL); \
         PRAGMA user_version = 1;\"",
        file.display()
    ));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o444)).unwrap();
    let before = fs::read(&file).unwrap();
    let log = chats_where_it_cannot_write(&pki, &data);
    let warnings: Vec<_> = log
        .iter()
        .filter(|line| line.contains("chat.db"))
        .filter(|line| line.contains("WARN") || line.contains("warn"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log:#?}");
    for said in [
        "could not be brought up to version 2",
        "untouched",
        "in memory",
    ] {
        assert!(warnings[0].contains(said), "{}", warnings[0]);
    }
    assert_eq!(fs::read(&file).unwrap(), before, "the file changed");
}

/// Starts chat-server on `data`, which must refuse; returns its message.
fn refused(pki: &Pki, data: &Path) -> String {
    let mut command = Command::new(&SERVER);
    command
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(cert_args(&pki.cert, &pki.key));
    let output = run(&mut command, "");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    stderr
}

#[test]
fn a_damaged_file_is_refused_with_how_to_recover_and_left_as_it_is() {
    let pki = Pki::new();
    let dir = TempDir::new();
    // Not a database at all.
    let data = dir.path().join("garbage");
    fs::create_dir(&data).unwrap();
    let file = data.join("chat.db");
    let garbage = "these are someone's notes, not a database\n".repeat(300);
    fs::write(&file, &garbage).unwrap();
    let said = refused(&pki, &data);
    assert!(
        said.contains(&format!("{} is damaged", file.display())),
        "{said}"
    );
    assert!(said.contains(".dump"), "{said}");
    assert!(
        said.contains("aside to start with an empty store"),
        "{said}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), garbage);

    // A real store, one of whose pages was overwritten.
    let data = dir.path().join("data");
    let server = kept(&pki, &data, &[]);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    for n in 0..40 {
        chats(&mut alice, &format!("{n} {}", "y".repeat(300)));
    }
    drop(alice);
    server.stop();
    let file = data.join("chat.db");
    let mut bytes = fs::read(&file).unwrap();
    assert!(bytes.len() > 3 * 4096, "{} bytes", bytes.len());
    bytes[4096..3 * 4096].fill(0x5a);
    fs::write(&file, &bytes).unwrap();
    let said = refused(&pki, &data);
    assert!(
        said.contains(&format!("{} is damaged", file.display())),
        "{said}"
    );
    assert_eq!(fs::read(&file).unwrap(), bytes, "the file was changed");
}

/// Runs `script` with `sh -c`, which must succeed; returns its output.
fn shell(script: &str) -> String {
    let output = run(Command::new("sh").args(["-c", script]), "");
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script}: {said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    said
}

#[test]
fn following_the_recovery_advice_gives_back_a_damaged_stores_lines() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let history = ["--history", "100"];
    let server = kept(&pki, &data, &history);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    alice.send("/join #tea");
    alice.recv_until(|line| line.starts_with("notice you are in #tea"));
    let said_by = format!("history chat {} ", alice.nick);
    let said: Vec<_> = (0..40)
        .map(|n| format!("{n} {}", "y".repeat(300)))
        .collect();
    for text in &said {
        chats(&mut alice, text);
    }
    drop(alice);
    server.stop();
    // Damage the index of the rooms' keys: `.dump` reads each table from its
    // root page, so every line can still be reached. (Damage to a table's
    // own root page loses its rows to `.dump`: the next check is there
    // so that nobody moves an empty copy in place.)
    let file = data.join("chat.db");
    let page_of = |sql: &str| -> usize {
        let said = shell(&format!("sqlite3 {} \"{sql}\"", file.display()));
        said.trim().parse().unwrap()
    };
    let size = page_of("pragma page_size");
    let index =
        page_of("select rootpage from sqlite_master where name = 'sqlite_autoindex_rooms_1'");
    let mut bytes = fs::read(&file).unwrap();
    bytes[(index - 1) * size..index * size].fill(0x5a);
    fs::write(&file, &bytes).unwrap();

    // The advice, word for word, as the refusal gives it.
    let refusal = refused(&pki, &data);
    let file = file.to_string_lossy();
    let save = format!(
        "sqlite3 {file} .dump | sed 's/^ROLLBACK; -- due to errors$/COMMIT;/' | \
         sqlite3 {file}.recovered"
    );
    let check = format!("sqlite3 {file}.recovered 'select count(*) from lines'");
    assert!(
        refusal.contains(&format!("To save what it holds: {save};")),
        "{refusal}"
    );
    assert!(refusal.contains(&check), "{refusal}");
    shell(&save);
    let kept_lines: usize = shell(&check).trim().parse().unwrap();
    assert_eq!(kept_lines, said.len(), "{refusal}");
    shell(&format!(
        "mv {file}.recovered {file} && rm -f {file}-wal {file}-shm"
    ));

    let server = kept(&pki, &data, &history);
    let mut bob = TestClient::connect(server.addr, &pki.ca);
    let past = join_and_read_past(&mut bob, "#tea");
    drop(bob);
    server.stop();
    let heard: Vec<_> = past
        .iter()
        .filter_map(|line| line.strip_prefix(&said_by))
        .filter_map(|text| text.split_once(' ').map(|(number, _)| number))
        .collect();
    let numbers: Vec<_> = (0..said.len()).map(|n| n.to_string()).collect();
    assert_eq!(heard, numbers, "{past:#?}");
}

/// The permission bits of `path`.
fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_stores_files_are_readable_by_their_owner_only() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let files = ["chat.db", "chat.db-wal", "chat.db-shm", "lock"].map(|name| data.join(name));
    let server = kept(&pki, &data, &[]);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    chats(&mut alice, "only for us");
    // The log and its index exist while the server has the file open.
    let modes: Vec<_> = files.iter().map(|file| mode_of(file)).collect();
    drop(alice);
    let log = server.stop();
    assert_eq!(mode_of(&data), 0o700);
    assert_eq!(modes, [0o600; 4], "{files:?}");
    assert!(
        !log.iter().any(|line| line.contains("open to others")),
        "{log:#?}"
    );

    // A directory and files opened to all by someone else: the files are
    // closed again, the directory left as it is and said to be open.
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    for file in [&files[0], &files[3]] {
        fs::set_permissions(file, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = kept(&pki, &data, &[]);
    still_chats(&server, &pki);
    let modes: Vec<_> = files.iter().map(|file| mode_of(file)).collect();
    let log = server.stop();
    assert_eq!(modes, [0o600; 4], "{files:?}");
    assert_eq!(mode_of(&data), 0o755);
    let warnings: Vec<_> = log
        .iter()
        .filter(|line| line.contains("open to others"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log:#?}");
    assert!(warnings[0].contains("(mode 755)"), "{}", warnings[0]);
    assert!(warnings[0].contains("chmod 700"), "{}", warnings[0]);

    // A crash leaves the log and its index behind (a clean stop removes
    // them), here opened to all: SQLite takes them up as they are, so the
    // server must close them before it opens the file.
    let mut server = kept(&pki, &data, &[]);
    let mut alice = TestClient::connect(server.addr, &pki.ca);
    alice.send("/join #crash");
    alice.recv_until(|line| line.starts_with("notice you are in #crash"));
    chats(&mut alice, "said before the crash");
    let on_disk = format!(
        "sqlite3 -readonly {} \"select count(*) from lines where text like '%before the crash%'\"",
        files[0].display()
    );
    assert!(
        wait_until(|| shell(&on_disk).trim() == "1"),
        "the line never reached the log"
    );
    server.signal("-KILL");
    server.wait_for_exit();
    drop(alice);
    for file in &files[..3] {
        fs::set_permissions(file, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = kept(&pki, &data, &[]);
    let mut bob = TestClient::connect(server.addr, &pki.ca);
    let past = join_and_read_past(&mut bob, "#crash");
    let modes: Vec<_> = files.iter().map(|file| mode_of(file)).collect();
    drop(bob);
    server.stop();
    assert_eq!(modes, [0o600; 4], "{files:?}");
    assert!(
        past.iter()
            .any(|line| line.ends_with("said before the crash")),
        "the log left by the crash was not read: {past:?}"
    );
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let server = kept(&pki, &data, &[]);
    let said = refused(&pki, &data);
    assert!(said.contains("in use by another chat-server"), "{said}");
    still_chats(&server, &pki);
    server.stop();
}
