//! Faults sonde must survive without harming the measured applications or losing their data
//! silently: a target killed mid-request, PID reuse, a binary replaced on disk while an old
//! process still runs it, a full ring buffer, 50 concurrent scrapers under load, and sonde
//! itself restarted under load. (The Docker daemon restart is in tests/docker.rs.)
//!
//! Real BPF, real Go servers, real requests to 127.0.0.1; exact counts. Needs root.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::*;

const COUNT: &str = "http_server_request_duration_seconds_count";

/// A static Go build with `.symtab` (newest toolchain, or the oldest when `oldest`).
fn target(oldest: bool) -> GoTarget {
    let all: Vec<GoTarget> = go_targets()
        .into_iter()
        .filter(|t| t.linkage == "static" && !t.stripped)
        .collect();
    let t = if oldest { all.first() } else { all.last() };
    t.cloned().expect("a static Go target")
}

/// Starts a Go test server with its own `OTEL_SERVICE_NAME`, so its series are told apart
/// from every other process running the same binary.
fn spawn_named(path: &Path, port: u16, service: &str) -> ChildGuard {
    spawn_go_server_with(path, port, &[], &[("OTEL_SERVICE_NAME", service)])
}

fn sonde_for(ports: &[u16], prom: u16, extra: &[(&str, &str)]) -> SondeGuard {
    let ports = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let prom = prom.to_string();
    let mut env = vec![
        ("SONDE_OPEN_PORT", ports.as_str()),
        ("SONDE_PROMETHEUS_PORT", prom.as_str()),
        ("SONDE_DOCKER", "false"),
    ];
    env.extend_from_slice(extra);
    spawn_sonde(&env)
}

fn wait_instrumented(sonde: &SondeGuard, pid: u32) {
    sonde.expect_instrumented(pid, Duration::from_secs(30));
}

fn count(prom: u16, service: &str) -> f64 {
    metric_value(&scrape(prom), COUNT, &[("service_name", service)]).unwrap_or(0.0)
}

fn wait_count(prom: u16, service: &str, want: f64, sonde: &SondeGuard) {
    let t = Instant::now();
    let mut last = 0.0;
    while t.elapsed() < Duration::from_secs(20) {
        last = count(prom, service);
        if last == want {
            // Stays there: nothing extra trickles in.
            std::thread::sleep(Duration::from_millis(300));
            last = count(prom, service);
            assert_eq!(last, want, "{service} went past {want}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{service}: count {last}, want {want}\n{}\n{}",
        scrape(prom),
        sonde.log()
    );
}

fn get(port: u16, path: &str, n: usize) {
    for _ in 0..n {
        let (status, _) = http("GET", &format!("http://127.0.0.1:{port}{path}"), 0);
        assert_eq!(status, 200, "{path}");
    }
}

fn alive(sonde: &mut SondeGuard) -> bool {
    matches!(sonde.guard.child.try_wait(), Ok(None))
}

/// Requests on keep-alive connections from background threads, until stopped; every
/// response is checked, so a harmed target fails the test.
struct Load {
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    /// Requests started and not yet answered (0 when the load is quiet).
    busy: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, connections: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let busy = Arc::new(AtomicU64::new(0));
        let threads = (0..connections)
            .map(|_| {
                let (stop, pause, sent, busy) =
                    (stop.clone(), pause.clone(), sent.clone(), busy.clone());
                std::thread::spawn(move || {
                    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut r = BufReader::new(s);
                    while !stop.load(Ordering::SeqCst) {
                        busy.fetch_add(1, Ordering::SeqCst);
                        if pause.load(Ordering::SeqCst) {
                            busy.fetch_sub(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        keepalive_get(&mut r, "/status/200?size=3");
                        sent.fetch_add(1, Ordering::SeqCst);
                        busy.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load {
            stop,
            pause,
            sent,
            busy,
            threads,
        }
    }

    /// Pauses and returns how many requests were answered, once none is in flight.
    fn pause(&self) -> u64 {
        self.pause.store(true, Ordering::SeqCst);
        while self.busy.load(Ordering::SeqCst) != 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.sent.load(Ordering::SeqCst)
    }

    fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join()
                .expect("a load thread failed: the target was harmed");
        }
        self.sent()
    }
}

fn keepalive_get(r: &mut BufReader<TcpStream>, path: &str) {
    write!(r.get_mut(), "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut line = String::new();
    let mut len = 0;
    let mut status = 0;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if let Some(s) = line.strip_prefix("HTTP/1.1 ") {
            status = s[..3].parse().unwrap();
        } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        } else if line == "\r\n" {
            break;
        }
    }
    assert_eq!(status, 200);
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
}

#[test]
fn target_killed_mid_request() {
    if !require_root_or_skip("target_killed_mid_request") {
        return;
    }
    let t = target(false);
    let (pa, pb, prom) = (free_port(), free_port(), free_port());
    let a = spawn_named(&t.path, pa, "fault-killed");
    let b = spawn_named(&t.path, pb, "fault-survivor");
    let mut sonde = sonde_for(&[pa, pb], prom, &[]);
    wait_instrumented(&sonde, a.pid());
    wait_instrumented(&sonde, b.pid());
    get(pa, "/status/200", 3);
    get(pb, "/status/200", 2);
    // A request in flight (entry probe fired, no RET yet) when its process dies.
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", pa)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "GET /slow?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    });
    std::thread::sleep(Duration::from_millis(500));
    let killed = a.pid();
    // SAFETY: SIGKILL to our own child, by PID.
    unsafe { libc::kill(killed as i32, libc::SIGKILL) };
    drop(a);
    assert!(
        slow.join().unwrap().is_empty(),
        "the killed server answered"
    );
    assert!(
        sonde.wait_for_log(
            &format!("pid {killed} exited: probes detached"),
            Duration::from_secs(10)
        ),
        "{}",
        sonde.log()
    );
    get(pb, "/status/200", 5);
    wait_count(prom, "fault-survivor", 7.0, &sonde);
    // The killed process's finished requests stay; its unfinished one is not invented.
    assert_eq!(count(prom, "fault-killed"), 3.0);
    assert!(alive(&mut sonde), "{}", sonde.log());
    drop(b);
    assert_eq!(sonde.stop(), Some(0));
}

/// Forks `spawn` until the child gets `pid` (set through ns_last_pid); `None` if other forks
/// on the machine keep taking it.
fn spawn_with_pid(pid: u32, spawn: impl Fn() -> ChildGuard) -> Option<ChildGuard> {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let child = spawn();
        if child.pid() == pid {
            return Some(child);
        }
    }
    None
}

#[test]
fn reused_pid_is_not_attributed_to_the_old_process() {
    if !require_root_or_skip("reused_pid_is_not_attributed_to_the_old_process") {
        return;
    }
    if !Path::new("/proc/sys/kernel/ns_last_pid").exists() {
        skip_missing(
            "reused_pid_is_not_attributed_to_the_old_process",
            "/proc/sys/kernel/ns_last_pid (CONFIG_CHECKPOINT_RESTORE)",
        );
        return;
    }
    let (old_bin, new_bin) = (target(false), target(true));
    let (port, prom) = (free_port(), free_port());
    let sonde = sonde_for(&[port], prom, &[]);
    assert!(sonde.wait_for_log("serving Prometheus", Duration::from_secs(20)));
    let old = spawn_named(&old_bin.path, port, "pid-old");
    let pid = old.pid();
    wait_instrumented(&sonde, pid);
    get(port, "/status/200", 3);
    wait_count(prom, "pid-old", 3.0, &sonde);
    drop(old);
    // The same PID at once, often within one discovery scan: only the start time differs.
    let new = spawn_with_pid(pid, || spawn_named(&new_bin.path, port, "pid-new"))
        .expect("could not get the PID again: too many forks elsewhere");
    assert!(
        sonde.wait_for_log(
            &format!("instrumented pid {pid} ({}", new_bin.path.display()),
            Duration::from_secs(20)
        ),
        "{}",
        sonde.log()
    );
    get(port, "/status/200", 5);
    wait_count(prom, "pid-new", 5.0, &sonde);
    assert_eq!(count(prom, "pid-old"), 3.0);
    drop(new);
    assert_eq!(sonde.stop(), Some(0));
}

#[test]
fn binary_replaced_on_disk_gets_a_new_plan() {
    if !require_root_or_skip("binary_replaced_on_disk_gets_a_new_plan") {
        return;
    }
    let (v1, v2) = (target(true), target(false));
    assert_ne!(v1.version, v2.version, "needs two Go versions");
    let dir = PathBuf::from(format!("/tmp/sonde-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("server");
    std::fs::copy(&v1.path, &exe).unwrap();
    let (p1, p2, prom) = (free_port(), free_port(), free_port());
    let sonde = sonde_for(&[p1, p2], prom, &[]);
    let old = spawn_named(&exe, p1, "replaced-old");
    assert!(
        sonde.wait_for_log(
            &format!(
                "instrumented pid {} ({}, Go {}",
                old.pid(),
                exe.display(),
                v1.version
            ),
            Duration::from_secs(30)
        ),
        "{}",
        sonde.log()
    );
    // A deployment: the new version written beside the old and renamed over it.
    let tmp = dir.join("server.new");
    std::fs::copy(&v2.path, &tmp).unwrap();
    std::fs::rename(&tmp, &exe).unwrap();
    let new = spawn_named(&exe, p2, "replaced-new");
    assert!(
        sonde.wait_for_log(
            &format!(
                "instrumented pid {} ({}, Go {}",
                new.pid(),
                exe.display(),
                v2.version
            ),
            Duration::from_secs(30)
        ),
        "the new process did not get the new plan:\n{}",
        sonde.log()
    );
    get(p1, "/status/200", 4);
    get(p2, "/status/200", 6);
    wait_count(prom, "replaced-old", 4.0, &sonde);
    wait_count(prom, "replaced-new", 6.0, &sonde);
    // The old process kept its probes on the old inode: never detached, never re-attached.
    let log = sonde.log();
    assert_eq!(
        log.matches(&format!("instrumented pid {} ", old.pid()))
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains(&format!("pid {} exited", old.pid())), "{log}");
    drop(old);
    drop(new);
    assert_eq!(sonde.stop(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn full_ring_buffer_loss_is_counted() {
    if !require_root_or_skip("full_ring_buffer_loss_is_counted") {
        return;
    }
    let t = target(false);
    let (port, prom) = (free_port(), free_port());
    let server = spawn_named(&t.path, port, "ring-full");
    // 16 KiB holds ~55 events: the stalled agent cannot keep the next 400.
    let mut sonde = sonde_for(&[port], prom, &[("SONDE_RING_BUFFER_SIZE", "16384")]);
    wait_instrumented(&sonde, server.pid());
    get(port, "/status/200", 2);
    wait_count(prom, "ring-full", 2.0, &sonde);
    let lost_before = metric_value(&scrape(prom), "sonde_events_lost_total", &[]).unwrap_or(0.0);
    // Stall the drain: sonde stopped, the kernel keeps producing.
    // SAFETY: signals to our own child, by PID.
    unsafe { libc::kill(sonde.pid() as i32, libc::SIGSTOP) };
    let load = Load::start(port, 4);
    while load.sent() < 400 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = load.finish() as f64;
    // SAFETY: as above.
    unsafe { libc::kill(sonde.pid() as i32, libc::SIGCONT) };
    // Loss is read once a second; counted + lost must reach every request sent.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut counted, mut lost) = (0.0, 0.0);
    while Instant::now() < deadline {
        let text = scrape(prom);
        counted = metric_value(&text, COUNT, &[("service_name", "ring-full")]).unwrap_or(0.0);
        lost = metric_value(&text, "sonde_events_lost_total", &[]).unwrap_or(0.0) - lost_before;
        if counted + lost == sent + 2.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(counted + lost, sent + 2.0, "counted {counted} lost {lost}");
    assert!(lost > 0.0, "nothing lost: the ring buffer was not filled");
    assert!(sonde.log().contains("events lost"), "{}", sonde.log());
    // The agent is fine: the next requests are all counted.
    get(port, "/status/200", 10);
    wait_count(prom, "ring-full", counted + 10.0, &sonde);
    assert!(alive(&mut sonde));
    eprintln!("sent {sent}, counted {counted}, lost {lost}");
    drop(server);
    assert_eq!(sonde.stop(), Some(0));
}

#[test]
fn metrics_scraped_by_50_clients_under_load() {
    if !require_root_or_skip("metrics_scraped_by_50_clients_under_load") {
        return;
    }
    let t = target(false);
    let (port, prom) = (free_port(), free_port());
    let server = spawn_named(&t.path, port, "scraped");
    let mut sonde = sonde_for(&[port], prom, &[]);
    wait_instrumented(&sonde, server.pid());
    let load = Load::start(port, 4);
    let scrapers: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let body = scrape(prom);
                    assert!(
                        body.contains("sonde_instrumented_processes") && body.ends_with('\n'),
                        "incomplete scrape: {body:?}"
                    );
                }
            })
        })
        .collect();
    for s in scrapers {
        s.join().expect("a scraper got a bad answer");
    }
    let sent = load.finish() as f64;
    assert!(sent > 0.0);
    wait_count(prom, "scraped", sent, &sonde);
    assert!(alive(&mut sonde));
    drop(server);
    assert_eq!(sonde.stop(), Some(0));
}

/// The first code byte of ServeHTTP in the running target, and in the file.
fn code_bytes(pid: u32, exe: &Path) -> (u8, u8) {
    let out = Command::new(sonde_bin())
        .arg("inspect")
        .arg(exe)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .skip_while(|l| !l.contains("HttpServerHandler"))
        .find(|l| l.contains("entry:"))
        .unwrap_or_else(|| panic!("{text}"));
    let hex = |key: &str| {
        let v = line.split(key).nth(1).unwrap().trim_start();
        let v = v.trim_start_matches("0x");
        let end = v.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(v.len());
        u64::from_str_radix(&v[..end], 16).unwrap()
    };
    let (vaddr, offset) = (hex("vaddr"), hex("file offset"));
    use std::os::unix::fs::FileExt;
    let mut live = [0u8];
    std::fs::File::open(format!("/proc/{pid}/mem"))
        .unwrap()
        .read_exact_at(&mut live, vaddr)
        .unwrap();
    let mut file = [0u8];
    std::fs::File::open(exe)
        .unwrap()
        .read_exact_at(&mut file, offset)
        .unwrap();
    (live[0], file[0])
}

#[test]
fn sonde_restarted_under_load() {
    if !require_root_or_skip("sonde_restarted_under_load") {
        return;
    }
    let t = target(false);
    let port = free_port();
    let server = spawn_named(&t.path, port, "restarted");
    let pid = server.pid();
    let prom1 = free_port();
    let first = sonde_for(&[port], prom1, &[]);
    wait_instrumented(&first, pid);
    let (live, file) = code_bytes(pid, &t.path);
    assert_eq!(
        live, 0xcc,
        "no breakpoint while attached (file byte {file:#x})"
    );
    let load = Load::start(port, 2);
    std::thread::sleep(Duration::from_millis(500));
    let sent = load.pause() as f64;
    wait_count(prom1, "restarted", sent, &first);
    load.resume();
    std::thread::sleep(Duration::from_millis(300));
    // Stopped while requests keep coming: every probe must go, none left in the target.
    assert_eq!(first.stop(), Some(0));
    // The kernel removes breakpoints as the links close; give it a moment, boundedly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut live, mut file) = code_bytes(pid, &t.path);
    while live != file && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        (live, file) = code_bytes(pid, &t.path);
    }
    assert_eq!(live, file, "a probe was left in the target");
    let prom2 = free_port();
    let second = sonde_for(&[port], prom2, &[]);
    wait_instrumented(&second, pid);
    std::thread::sleep(Duration::from_millis(300));
    // Counts resume exactly: quiet the load, note where the new agent stands, send a batch.
    load.pause();
    std::thread::sleep(Duration::from_millis(500));
    let base = count(prom2, "restarted");
    let before = load.pause();
    load.resume();
    while load.sent() < before + 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = load.pause();
    wait_count(prom2, "restarted", base + (after - before) as f64, &second);
    assert!(base > 0.0, "nothing counted while the load ran");
    load.finish();
    drop(server);
    assert_eq!(second.stop(), Some(0));
}
