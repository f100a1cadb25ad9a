//! The `kgpu-helper` command at its edges: every subcommand with bad
//! arguments ends with status 1 or 2 and a message on stderr (never a panic,
//! never a hang); a closed stdout ends `stats --watch` quietly; errors reach
//! stderr whatever RUST_LOG says; and no region file or child helper stays
//! behind, whether the command fails or is killed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_kgpu-helper");

/// Every run of the helper is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

/// A tag in the environment of every process a test starts (children
/// inherit it), to find what is left behind.
fn tag(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn command(tag: &str, args: &[&str]) -> Command {
    let mut c = Command::new(EXE);
    c.args(args)
        .env("KGPU_CLI_TEST_TAG", tag)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for `child` at most `limit`; kills it and fails the test on a hang.
/// Its output is collected on a thread: a process it left behind may hold
/// the pipes open, which fails the test instead of hanging it.
fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> Output {
    let t0 = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    std::thread::spawn(move || {
        use std::io::Read;
        let mut o = Vec::new();
        let mut e = Vec::new();
        let read_err = std::thread::spawn(move || {
            if let Some(s) = err.as_mut() {
                let _ = s.read_to_end(&mut e);
            }
            e
        });
        if let Some(s) = out.as_mut() {
            let _ = s.read_to_end(&mut o);
        }
        let _ = tx.send((o, read_err.join().unwrap_or_default()));
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok((stdout, stderr)) => Output {
            status,
            stdout,
            stderr,
        },
        Err(_) => {
            panic!("{what}: pid {pid} exited, but something it started still holds its output open")
        }
    }
}

fn run(tag: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = command(tag, args);
    c.envs(env.iter().copied());
    wait_bounded(c.spawn().unwrap(), LIMIT, &args.join(" "))
}

/// Processes (other than this test) whose environment holds `tag`.
fn tagged_processes(tag: &str) -> Vec<u32> {
    let needle = format!("KGPU_CLI_TEST_TAG={tag}");
    let me = std::process::id();
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Zombies have an empty environ; they are not left running.
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) {
                v.push(pid);
            }
        }
    }
    v
}

/// Region files (the old naming, kgpu-TAG-PID.region) in /dev/shm and $TMPDIR.
fn region_files() -> Vec<String> {
    [std::path::PathBuf::from("/dev/shm"), std::env::temp_dir()]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("kgpu-") && n.ends_with(".region"))
        .collect()
}

/// Asserts that no region file appeared since `before` was listed.
fn assert_no_new_region_files(before: &[String]) {
    let after: Vec<_> = region_files()
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert!(after.is_empty(), "region files left: {after:?}");
}

/// Asserts that nothing `tag` started still runs (waiting a little for the
/// kernel to deliver the parent-death signal).
fn assert_nothing_left(tag: &str) {
    let t0 = Instant::now();
    while !tagged_processes(tag).is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tagged_processes(tag), Vec::<u32>::new(), "processes left");
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_arguments_of_every_subcommand_fail_cleanly() {
    let t = tag("bad");
    let cases: &[(&[&str], &str)] = &[
        (&["nonsense"], "unrecognized subcommand"),
        (&["serve", "--backend", "gpu"], "invalid value 'gpu'"),
        (&["serve", "--data-mib", "100000"], "4095 MiB"),
        (&["serve", "--data-mib", "0"], "at least 1 MiB"),
        (&["serve", "--cpu-workers", "100000"], "at most 256"),
        (
            &["serve", "--device", "/etc/passwd"],
            "/etc/passwd is not the kgpu device",
        ),
        (&["serve", "--device", "/dev/null"], "not a misc device"),
        (
            &["serve", "--device", "/nonexistent/kgpu"],
            "does not exist",
        ),
        (&["serve", "--region", "/nonexistent/r"], "/nonexistent/r"),
        (&["serve", "--region", "/etc/passwd"], "/etc/passwd"),
        (&["stats", "--watch", "0"], "from 1 to"),
        (&["stats", "--watch", "-1"], "unexpected argument '-1'"),
        (&["selftest", "--backend", "none"], "invalid value 'none'"),
        (&["selftest", "--cpu-workers", "x"], "not a number"),
        (&["doctor", "--all"], "unexpected argument"),
        (&["plot"], "--from"),
        (
            &[
                "plot",
                "--from",
                "/nonexistent/rows.json",
                "--out",
                "/dev/null",
            ],
            "--from /nonexistent/rows.json",
        ),
        (
            &["plot", "--from", "/etc/passwd", "--out", "/dev/null"],
            "--from /etc/passwd: not rows",
        ),
        (&["bench", "--depths", "0"], "--depths 0"),
        (&["bench", "--depths", "4096"], "from 1 to 2048"),
        (&["bench", "--depths", "x"], "--depths"),
        (&["bench", "--data-mib", "100000"], "4095 MiB"),
        (&["bench", "--sizes", "1G"], "pass --data-mib 2049"),
        (&["bench", "--sizes", "0"], "--sizes 0"),
        (&["bench", "--sizes", "99999999999999999G"], "not a size"),
        (&["bench", "--sizes", "4Q"], "not a size"),
        (
            &["bench", "--sizes", "1", "--modes", "aes128-xts"],
            "16 bytes to 4 KiB",
        ),
        (&["bench", "--modes", "aes1024"], "unknown mode \"aes1024\""),
        (&["bench", "--millis", "-5"], "unexpected argument '-5'"),
    ];
    for (args, want) in cases {
        let t0 = Instant::now();
        let o = run(&t, args, &[]);
        let code = o.status.code();
        let err = stderr(&o);
        assert!(
            matches!(code, Some(1) | Some(2)),
            "{args:?}: exit {:?}, stderr {err}",
            o.status
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wanted {want:?} in {err}");
        // Refused before anything big was allocated or started.
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            t0.elapsed()
        );
    }
    assert_nothing_left(&t);
}

#[test]
fn fatal_errors_reach_stderr_whatever_the_log_level() {
    let t = tag("quiet");
    let args = [
        "plot",
        "--from",
        "/nonexistent/x.json",
        "--out",
        "/dev/null",
    ];
    for env in [
        &[("RUST_LOG", "off")][..],
        &[("RUST_LOG", "kgpu_helper=off")],
        &[],
    ] {
        let o = run(&t, &args, env);
        assert_eq!(o.status.code(), Some(1), "{env:?}");
        assert!(
            stderr(&o).starts_with("kgpu-helper: error: --from /nonexistent/x.json"),
            "{env:?}: {}",
            stderr(&o)
        );
    }
    let mut qargs = vec!["-qqq"];
    qargs.extend(args);
    let o = run(&t, &qargs, &[]);
    assert!(stderr(&o).contains("kgpu-helper: error:"), "{}", stderr(&o));
}

#[test]
fn verbose_and_quiet_set_the_log_level() {
    let t = tag("levels");
    let sel = |flag: Option<&str>| {
        let mut a = Vec::new();
        a.extend(flag);
        a.extend(["selftest", "--backend", "cpu"]);
        let o = run(&t, &a, &[("RUST_LOG", "info")]);
        assert!(o.status.success(), "{a:?}: {}", stderr(&o));
        stderr(&o)
    };
    let normal = sel(None);
    assert!(
        normal.contains(" INFO ") && !normal.contains(" DEBUG "),
        "{normal}"
    );
    let quiet = sel(Some("-q"));
    assert!(!quiet.contains(" INFO "), "{quiet}");
    let verbose = sel(Some("-v"));
    assert!(verbose.contains(" DEBUG "), "{verbose}");
    assert_nothing_left(&t);
}

#[test]
fn help_lists_the_environment() {
    let o = run(&tag("help"), &["--help"], &[]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for v in [
        "RUST_LOG",
        "KGPU_MAX_GPUS",
        "KGPU_GPU_MIN_BYTES",
        "KGPU_CACHE",
        "NOTIFY_SOCKET",
        "-v, --verbose",
        "-q, --quiet",
    ] {
        assert!(out.contains(v), "{v} missing from --help:\n{out}");
    }
}

#[test]
fn stats_watch_stops_quietly_when_its_reader_goes() {
    let t = tag("pipe");
    let dir = std::env::temp_dir().join(format!("kgpu-cli-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("none.json");
    let mut child = command(
        &t,
        &[
            "stats",
            "--watch",
            "1",
            "--stats-file",
            file.to_str().unwrap(),
        ],
    )
    .spawn()
    .unwrap();
    // `| head -3`: read three lines, then close the pipe.
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..3 {
        lines.next().unwrap().unwrap();
    }
    drop(lines);
    let o = wait_bounded(child, Duration::from_secs(20), "stats --watch 1");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_bench_leaves_no_region_and_no_helper() {
    let t = tag("fail");
    let before = region_files();
    // The helper starts, then the first request fails (AES-ECB of 1 byte).
    let o = run(
        &t,
        &[
            "bench",
            "--backend",
            "cpu",
            "--modes",
            "aes128-ecb",
            "--sizes",
            "1",
            "--depths",
            "1",
            "--millis",
            "10",
            "--data-mib",
            "16",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("kgpu-helper: error:"), "{}", stderr(&o));
    assert_nothing_left(&t);
    assert_no_new_region_files(&before);
}

/// `bench` of ECHO 4K requests on the CPU at `depths`, `millis` each.
fn echo_bench(t: &str, depths: &str, millis: &str) -> Command {
    command(
        t,
        &[
            "bench",
            "--backend",
            "cpu",
            "--modes",
            "echo",
            "--sizes",
            "4K",
            "--depths",
            depths,
            "--millis",
            millis,
            "--data-mib",
            "16",
        ],
    )
}

/// A long benchmark (its stderr dropped).
fn long_bench(t: &str) -> Child {
    use std::os::unix::process::CommandExt;
    let mut c = echo_bench(t, "1", "600000");
    c.stderr(Stdio::null());
    // SAFETY: between fork and exec only signal(), which is
    // async-signal-safe. A test run from a background job inherits SIGINT
    // ignored (as a shell sets it for `cmd &`); the bench under test must get
    // the default disposition, as from a terminal.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            Ok(())
        });
    }
    c.spawn().unwrap()
}

/// Waits until the process `parent` (tagged `t`) has started its helper child.
fn helper_of(t: &str, parent: u32) -> Option<u32> {
    let t0 = Instant::now();
    while t0.elapsed() < LIMIT {
        let others: Vec<u32> = tagged_processes(t)
            .into_iter()
            .filter(|&p| p != parent)
            .collect();
        if let [helper] = others[..] {
            return Some(helper);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_killed_bench_leaves_no_helper_behind() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let t = tag(&format!("sig{sig}"));
        let before = region_files();
        let mut child = long_bench(&t);
        let Some(helper) = helper_of(&t, child.id()) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the helper child never started");
        };
        // Let it get into the measurement.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill with a pid we started and have not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let o = wait_bounded(child, Duration::from_secs(20), "killed bench");
        assert!(!o.status.success());
        assert_nothing_left(&t);
        assert!(!tagged_processes(&t).contains(&helper));
        assert_no_new_region_files(&before);
    }
}

#[test]
fn output_and_log_into_a_closed_pipe_neither_panic_nor_leave_a_helper() {
    use std::io::Read;
    let t = tag("pipe2");
    // `bench ... 2>&1 | head -c 1`: stdout and stderr on one pipe whose
    // reader goes away after the first byte.
    // Close-on-exec: no child may hold the read end open.
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut c = echo_bench(&t, "1,2,4", "200");
    let child = c
        .stdout(Stdio::from(wr.try_clone().unwrap()))
        .stderr(Stdio::from(wr))
        .spawn()
        .unwrap();
    drop(c);
    let mut reader = std::fs::File::from(rd);
    let mut one = [0u8; 1];
    reader.read_exact(&mut one).unwrap();
    drop(reader);
    let o = wait_bounded(child, LIMIT, "bench into a closed pipe");
    assert_eq!(o.status.code(), Some(0), "{:?}", o.status);
    assert_nothing_left(&t);
}

#[test]
fn selftest_on_the_gpu_leaves_nothing_whether_or_not_there_is_one() {
    let t = tag("cuda");
    let before = region_files();
    // Without a GPU (or without the cuda feature) the helper exits before
    // attaching; with one the self-test runs. Either way, nothing stays.
    let o = run(&t, &["selftest", "--backend", "cuda"], &[]);
    match o.status.code() {
        Some(0) => assert!(String::from_utf8_lossy(&o.stdout).contains("0 failed")),
        Some(1) => assert!(
            stderr(&o).contains("kgpu-helper: error: the helper exited"),
            "{}",
            stderr(&o)
        ),
        other => panic!("exit {other:?}: {}", stderr(&o)),
    }
    assert_nothing_left(&t);
    assert_no_new_region_files(&before);
}
