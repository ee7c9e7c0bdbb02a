//! `synod dev` as a newcomer runs it: a replica that cannot start (its port is taken, it exits at
//! once, etcd exits) makes `synod dev` exit non-zero within seconds, saying which one and why,
//! with nothing left running; a start that does not finish in time says what is missing; and a
//! normal start prints no warning.

use driver::dev::free_port;
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A base port whose replica ports base+1..=base+n are all free now.
fn free_base(n: u16) -> u16 {
    for _ in 0..100 {
        let base = free_port().saturating_sub(n + 1);
        if base > 1024 && (1..=n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no run of {n} free loopback ports found");
}

/// `synod dev` with its temporary files in `tmp`, output captured, RUST_LOG unset (the default
/// filters, as a newcomer gets them).
fn dev(tmp: &std::path::Path, args: &[String], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_synod"))
        .arg("dev")
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("synod dev starts")
}

/// Wait for `child` to exit within `timeout` (killed and a panic otherwise); its status and its
/// stdout and stderr together.
fn finish(mut child: Child, timeout: Duration) -> (ExitStatus, String, Duration) {
    let started = Instant::now();
    let deadline = started + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            // Ctrl-C first, so that it stops what it started; then SIGKILL.
            let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
            let grace = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("synod dev still running after {timeout:?}: {}", read_all(&mut child));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = read_all(&mut child);
    (status, out, started.elapsed())
}

fn read_all(child: &mut Child) -> String {
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    out
}

/// Every replica REST port is free again: the replicas that bound them are gone.
fn assert_ports_free(base: u16, n: u16, out: &str) {
    for i in 1..=n {
        let deadline = Instant::now() + Duration::from_secs(3);
        while TcpListener::bind(("127.0.0.1", base + i)).is_err() {
            assert!(Instant::now() < deadline, "port {} still taken after synod dev exited:\n{out}", base + i);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// No process of this run is left: nothing runs with the run's temporary directory (etcd's
/// `--data-dir`) or one of its replica addresses on its command line, and the replica ports are
/// free.
fn assert_nothing_left(tmp: &std::path::Path, base: u16, n: u16, out: &str) {
    assert_ports_free(base, n, out);
    let ps = Command::new("ps").args(["-eo", "pid,args"]).output().expect("ps runs");
    let ps = String::from_utf8_lossy(&ps.stdout);
    let mut needles = vec![tmp.display().to_string()];
    needles.extend((1..=n).map(|i| format!("--http-listen=127.0.0.1:{}", base + i)));
    let left: Vec<&str> = ps.lines().filter(|l| needles.iter().any(|x| l.contains(x.as_str()))).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}\n{out}");
}

#[test]
fn a_taken_replica_port_fails_at_once_naming_the_port_and_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let base = free_base(3);
    // Another program listens on replica 2's REST port.
    let _other = TcpListener::bind(("127.0.0.1", base + 2)).unwrap();
    let args = vec!["--nodes=3".to_string(), format!("--http-base-port={base}")];
    let (status, out, took) = finish(dev(tmp.path(), &args, &[]), Duration::from_secs(10));
    assert!(!status.success(), "synod dev must fail:\n{out}");
    assert!(took < Duration::from_secs(5), "it failed at once, not after {took:?}:\n{out}");
    assert!(out.contains(&format!("port {} (replica 2's REST port)", base + 2)), "the port is named:\n{out}");
    assert!(out.contains("--http-base-port"), "the flag to choose other ports is named:\n{out}");
    assert!(!out.contains("WARN"), "{out}");
    // Nothing was started: no etcd, and replicas 1 and 3's ports are free.
    assert!(TcpListener::bind(("127.0.0.1", base + 1)).is_ok() && TcpListener::bind(("127.0.0.1", base + 3)).is_ok());
    assert_nothing_left(tmp.path(), base, 0, &out);
}

#[test]
fn a_replica_that_exits_at_start_stops_the_cluster_with_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let base = free_base(3);
    // Every replica reads SYNOD_READ_TIMEOUT_MS (synod dev does not), so each one exits at once
    // with a flag error, after etcd is up.
    let args = vec!["--nodes=3".to_string(), format!("--http-base-port={base}")];
    let (status, out, took) = finish(dev(tmp.path(), &args, &[("SYNOD_READ_TIMEOUT_MS", "bogus")]), Duration::from_secs(20));
    assert!(!status.success(), "synod dev must fail:\n{out}");
    assert!(took < Duration::from_secs(10), "it failed soon, not after {took:?}:\n{out}");
    assert!(out.contains("exited during start-up"), "which one exited:\n{out}");
    assert!(out.contains("replica "), "a replica is named:\n{out}");
    assert!(out.contains("invalid value 'bogus'"), "the last lines of its log are shown:\n{out}");
    assert!(out.contains("logs kept in"), "{out}");
    assert_nothing_left(tmp.path(), base, 3, &out);
}

#[test]
fn an_etcd_that_exits_at_start_is_reported_with_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("fake-etcd");
    std::fs::write(&fake, "#!/bin/sh\necho 'listen tcp 127.0.0.1:2379: bind: address already in use' >&2\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = free_base(3);
    let args = vec!["--nodes=3".to_string(), format!("--http-base-port={base}")];
    let (status, out, took) = finish(dev(tmp.path(), &args, &[("SYNOD_ETCD_BIN", fake.to_str().unwrap())]), Duration::from_secs(10));
    assert!(!status.success(), "synod dev must fail:\n{out}");
    assert!(took < Duration::from_secs(5), "{took:?}:\n{out}");
    assert!(out.contains("etcd exited at start"), "{out}");
    assert!(out.contains("address already in use"), "the last lines of etcd's log:\n{out}");
    assert_nothing_left(tmp.path(), base, 3, &out);
}

#[test]
fn a_start_that_does_not_finish_in_time_says_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = free_base(3);
    // No cluster is ready the moment its replicas are spawned: a zero timeout fails on the first
    // check, listing what is missing.
    let args = vec!["--nodes=3".to_string(), format!("--http-base-port={base}"), "--startup-timeout=0".to_string()];
    let (status, out, took) = finish(dev(tmp.path(), &args, &[]), Duration::from_secs(20));
    assert!(!status.success(), "synod dev must fail:\n{out}");
    assert!(took < Duration::from_secs(10), "{took:?}:\n{out}");
    assert!(out.contains("the cluster was not ready within 0s"), "{out}");
    assert!(out.contains("replica 1 not ready") && out.contains("replica 3 not ready"), "each replica's state:\n{out}");
    assert!(out.contains("--startup-timeout"), "{out}");
    assert_nothing_left(tmp.path(), base, 3, &out);
}

/// A running `synod dev` whose stdout and stderr lines arrive on one channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(tmp: &std::path::Path, args: &[String]) -> Running {
        let mut child = dev(tmp, args, &[]);
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Running { child, lines, seen: Vec::new() }
    }

    /// Wait for a line containing `what` (panics after `timeout`, with everything seen).
    fn wait_for(&mut self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let found = line.contains(what);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => {
                    let _ = Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status();
                    std::thread::sleep(Duration::from_secs(5));
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("no line with {what:?} within {timeout:?}; output:\n{}", self.output());
                }
            }
        }
    }

    /// Ctrl-C, then its exit status and whole output.
    fn interrupt(mut self) -> (ExitStatus, String) {
        assert!(Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status().unwrap().success());
        let (status, _, _) = finish(self.child, Duration::from_secs(20));
        // The reader threads end with the pipes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"))
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }
}

/// The pid of the `synod node` serving REST on `port`.
fn replica_pid(port: u16) -> u32 {
    let ps = Command::new("ps").args(["-eo", "pid,args"]).output().expect("ps runs");
    let ps = String::from_utf8_lossy(&ps.stdout);
    let needle = format!("--http-listen=127.0.0.1:{port}");
    let line = ps.lines().find(|l| l.contains(" node ") && l.contains(&needle)).expect("the replica process");
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_normal_start_prints_no_warning_and_ctrl_c_stops_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let base = free_base(3);
    let args = vec!["--nodes=3".to_string(), format!("--http-base-port={base}")];
    let started = Instant::now();
    let mut dev = Running::start(tmp.path(), &args);
    // The banner's last line comes once every replica is ready.
    dev.wait_for("Ctrl-C stops everything", Duration::from_secs(45));
    let ready_after = started.elapsed();
    assert!(dev.output().contains(&format!("node 3: http://127.0.0.1:{}", base + 3)), "{}", dev.output());
    let (status, out) = dev.interrupt();
    assert!(status.success(), "a stopped dev cluster exits 0:\n{out}");
    assert!(!out.contains("WARN") && !out.to_lowercase().contains("warning"), "a normal start prints no warning:\n{out}");
    assert!(!out.contains("ERROR") && !out.contains("exited"), "{out}");
    assert_nothing_left(tmp.path(), base, 3, &out);
    // A clean stop leaves no files behind.
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("synod-dev")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "files left: {left:?}");
    eprintln!("ready after {ready_after:?}");
}

#[test]
fn a_replica_that_dies_after_start_up_is_reported_on_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let base = free_base(3);
    let args = vec!["--nodes=3".to_string(), format!("--http-base-port={base}")];
    let mut dev = Running::start(tmp.path(), &args);
    dev.wait_for("Ctrl-C stops everything", Duration::from_secs(45));
    let pid = replica_pid(base + 2);
    assert!(Command::new("kill").arg("-KILL").arg(pid.to_string()).status().unwrap().success());
    dev.wait_for("replica 2", Duration::from_secs(5));
    let report = dev.seen.last().unwrap().clone();
    assert!(report.contains("exited") && report.contains("node-2.log"), "the report names its log: {report}");
    let log = report.split("its log: ").nth(1).expect("a log path").trim().to_string();
    // The others keep running until Ctrl-C, which exits 0 and keeps the logs.
    let (status, out) = dev.interrupt();
    assert!(status.success(), "{out}");
    assert!(out.contains("logs kept in"), "{out}");
    assert!(std::path::Path::new(&log).is_file(), "{log} is kept:\n{out}");
    assert_nothing_left(tmp.path(), base, 3, &out);
}
