//! The proxy between a plain UDP client and a UDP echo server on loopback: forwarding, one
//! upstream socket per client, each fault on real sockets, rebinding, the memory cap,
//! scripts, shutdown, and the binary. Every wait has a deadline.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fovea_faultproxy::{Direction, Faults, Phase, Proxy, ProxyConfig, Script};

const WAIT: Duration = Duration::from_secs(10);

/// Echoes every datagram to its sender and remembers the senders' addresses.
struct Echo {
    addr: SocketAddr,
    sources: Arc<Mutex<Vec<SocketAddr>>>,
    received: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let socket = udp();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = socket.local_addr().unwrap();
        let sources = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, r, st) = (sources.clone(), received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65535];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    r.fetch_add(1, Ordering::Relaxed);
                    let mut v = s.lock().unwrap();
                    if !v.contains(&from) {
                        v.push(from);
                    }
                    drop(v);
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Echo { addr, sources, received, stop, thread: Some(thread) }
    }

    fn sources(&self) -> Vec<SocketAddr> {
        self.sources.lock().unwrap().clone()
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_to(echo: &Echo, seed: u64) -> Proxy {
    let mut c = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), echo.addr);
    c.seed = seed;
    Proxy::start(c).unwrap()
}

/// A loopback socket with a 4 MiB receive buffer: the tests send bursts and read afterwards,
/// and a default buffer (about 200 small datagrams) would lose some of them outside the proxy.
fn udp() -> UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    s.into()
}

fn client(proxy: &Proxy) -> UdpSocket {
    let s = udp();
    s.connect(proxy.local_addr()).unwrap();
    s
}

/// Receives datagrams until `want` arrived or `quiet` passes without one (or `WAIT` overall).
fn recv_all(s: &UdpSocket, want: usize, quiet: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    let mut buf = [0u8; 65535];
    s.set_read_timeout(Some(quiet)).unwrap();
    while out.len() < want && Instant::now() < deadline {
        match s.recv(&mut buf) {
            Ok(n) => out.push(buf[..n].to_vec()),
            // A signal (the binary test's child exiting) must not end the wait early.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out
}

/// Polls `cond` until it holds or `WAIT` passes, yielding the core between polls so the
/// proxy's threads run (a busy spin would starve them on a 2-core CI machine).
fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::yield_now();
    }
    cond()
}

fn seq(i: u32) -> Vec<u8> {
    let mut v = i.to_be_bytes().to_vec();
    v.resize(200, 0xab);
    v
}

#[test]
fn clean_path_forwards_both_ways_with_one_upstream_socket_per_client() {
    let echo = Echo::start();
    let proxy = proxy_to(&echo, 1);
    let (a, b) = (client(&proxy), client(&proxy));
    for i in 0..100 {
        a.send(&seq(i)).unwrap();
        b.send(&seq(1000 + i)).unwrap();
    }
    let got_a = recv_all(&a, 100, Duration::from_secs(2));
    let got_b = recv_all(&b, 100, Duration::from_secs(2));
    // Loopback with no faults: everything, in order, and each client gets only its own.
    assert_eq!(got_a, (0..100).map(seq).collect::<Vec<_>>());
    assert_eq!(got_b, (1000..1100).map(seq).collect::<Vec<_>>());
    let sources = echo.sources();
    assert_eq!(sources.len(), 2, "{sources:?}");
    let clients = proxy.clients();
    assert_eq!(clients.len(), 2);
    let seen: HashSet<SocketAddr> = clients.iter().map(|c| c.upstream_local).collect();
    assert_eq!(seen, sources.into_iter().collect());
    let c = proxy.shutdown();
    assert_eq!((c.up.received, c.up.forwarded), (200, 200));
    assert_eq!((c.down.received, c.down.forwarded), (200, 200));
    assert_eq!(c.up.dropped() + c.down.dropped(), 0);
    assert_eq!(c.clients_total, 2);
}

#[test]
fn loss_in_one_direction_is_counted_exactly() {
    let echo = Echo::start();
    let proxy = proxy_to(&echo, 2);
    proxy.set(Direction::Up, Faults::loss(0.3)).unwrap();
    let a = client(&proxy);
    const N: u64 = 2000;
    for i in 0..N as u32 {
        a.send(&seq(i)).unwrap();
        if i % 100 == 99 {
            // Keep loopback's socket buffers from being the lossy part.
            let sent = u64::from(i) + 1;
            assert!(wait_until(|| proxy.counters().up.received == sent));
        }
    }
    let c = proxy.counters();
    assert_eq!(c.up.received, N);
    let dropped = c.up.dropped_loss;
    // 5 standard deviations around 600.
    assert!((dropped as f64 - 600.0).abs() < 5.0 * (N as f64 * 0.21).sqrt(), "{dropped}");
    assert!(wait_until(|| echo.received() == N - dropped), "{} at the echo", echo.received());
    // `forwarded` is counted by the sending thread after the send, so it can trail `received`.
    assert!(wait_until(|| proxy.counters().up.forwarded + dropped == N), "{}", proxy.counters());
    let got = recv_all(&a, (N - dropped) as usize, Duration::from_secs(2));
    assert_eq!(got.len() as u64, N - dropped);
    assert_eq!(proxy.counters().down.dropped(), 0);
}

#[test]
fn delay_holds_datagrams_back() {
    let echo = Echo::start();
    let proxy = proxy_to(&echo, 3);
    let faults = Faults { delay: Duration::from_millis(60), ..Faults::default() };
    proxy.set(Direction::Down, faults).unwrap();
    let a = client(&proxy);
    let start = Instant::now();
    a.send(&seq(1)).unwrap();
    let got = recv_all(&a, 1, Duration::from_secs(2));
    let rtt = start.elapsed();
    assert_eq!(got.len(), 1);
    assert!(rtt >= Duration::from_millis(60), "{rtt:?}");
    assert_eq!(proxy.counters().down.delayed, 1);
}

#[test]
fn jitter_and_reordering_reorder_but_lose_nothing() {
    let echo = Echo::start();
    let proxy = proxy_to(&echo, 4);
    let faults = Faults {
        jitter: Duration::from_millis(5),
        reorder: 0.1,
        reorder_delay: Duration::from_millis(15),
        ..Faults::default()
    };
    proxy.set(Direction::Down, faults).unwrap();
    let a = client(&proxy);
    for i in 0..300 {
        a.send(&seq(i)).unwrap();
        if i % 50 == 49 {
            let sent = u64::from(i) + 1;
            assert!(wait_until(|| proxy.counters().up.received == sent));
        }
    }
    let got = recv_all(&a, 300, Duration::from_secs(2));
    let ids: Vec<u32> =
        got.iter().map(|d| u32::from_be_bytes(d[..4].try_into().unwrap())).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, (0..300).collect::<Vec<_>>(), "all arrive once");
    assert_ne!(ids, sorted, "some arrive out of order");
    assert!(proxy.counters().down.reordered > 0);
}

#[test]
fn duplication_sends_every_datagram_twice() {
    let echo = Echo::start();
    let proxy = proxy_to(&echo, 5);
    proxy.set(Direction::Up, Faults { duplicate: 1.0, ..Faults::default() }).unwrap();
    let a = client(&proxy);
    for i in 0..20 {
        a.send(&seq(i)).unwrap();
    }
    let got = recv_all(&a, 40, Duration::from_secs(2));
    assert_eq!(got.len(), 40);
    assert_eq!(echo.received(), 40);
    // The proxy counts a datagram after its send returns, which may be after it arrived.
    assert!(wait_until(|| proxy.counters().down.forwarded == 40), "{}", proxy.counters());
    let c = proxy.counters();
    assert_eq!((c.up.duplicated, c.up.forwarded), (20, 40));
}

#[test]
fn blackhole_drops_until_lifted() {
    let echo = Echo::start();
    let proxy = proxy_to(&echo, 6);
    let a = client(&proxy);
    proxy.blackhole(Direction::Down, true);
    a.send(&seq(1)).unwrap();
    assert!(wait_until(|| echo.received() == 1), "up still passes");
    assert!(recv_all(&a, 1, Duration::from_millis(200)).is_empty());
    assert_eq!(proxy.counters().down.dropped_blackhole, 1);
    proxy.blackhole(Direction::Down, false);
    a.send(&seq(2)).unwrap();
    assert_eq!(recv_all(&a, 1, Duration::from_secs(2)), vec![seq(2)]);
}

#[test]
fn bandwidth_cap_paces_a_burst() {
    let echo = Echo::start();
    let proxy = proxy_to(&echo, 7);
    // 100 kB/s with a 2 kB burst: 20 datagrams of 1 kB take about 180 ms.
    let rate = fovea_faultproxy::RateLimit { bytes_per_sec: 100_000, burst: 2_000, queue: 64_000 };
    proxy.set(Direction::Down, Faults { rate: Some(rate), ..Faults::default() }).unwrap();
    let a = client(&proxy);
    let start = Instant::now();
    let mut d = seq(0);
    d.resize(1000, 0);
    for _ in 0..20 {
        a.send(&d).unwrap();
    }
    let got = recv_all(&a, 20, Duration::from_secs(2)).len();
    assert_eq!(got, 20, "echo got {}; {}", echo.received(), proxy.counters());
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(170), "{took:?}");
}

#[test]
fn rebinding_changes_the_source_port_the_upstream_sees() {
    let echo = Echo::start();
    let proxy = proxy_to(&echo, 8);
    let a = client(&proxy);
    a.send(&seq(1)).unwrap();
    assert_eq!(recv_all(&a, 1, Duration::from_secs(2)).len(), 1);
    let before = proxy.clients()[0];
    assert_eq!(proxy.rebind_all(), 1);
    let after = proxy.clients()[0];
    assert_eq!(after.client, before.client);
    assert_ne!(after.upstream_local, before.upstream_local);
    a.send(&seq(2)).unwrap();
    assert_eq!(recv_all(&a, 1, Duration::from_secs(2)), vec![seq(2)]);
    assert_eq!(echo.sources(), vec![before.upstream_local, after.upstream_local]);
    // A datagram to the old port finds no mapping.
    let old = UdpSocket::bind("127.0.0.1:0").unwrap();
    old.send_to(b"late", before.upstream_local).unwrap();
    assert!(recv_all(&a, 1, Duration::from_millis(200)).is_empty());
    assert_eq!(proxy.counters().rebinds, 1);
    // One client by address.
    let third = proxy.rebind(a.local_addr().unwrap()).unwrap();
    assert_ne!(third, after.upstream_local);
    assert!(proxy.rebind("127.0.0.1:9".parse().unwrap()).is_none());
}

#[test]
fn delayed_datagrams_beyond_the_memory_cap_are_dropped_and_counted() {
    let echo = Echo::start();
    let mut c = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), echo.addr);
    c.max_queued_bytes = 10_000;
    c.up = Faults { delay: Duration::from_millis(300), ..Faults::default() };
    let proxy = Proxy::start(c).unwrap();
    let a = client(&proxy);
    let mut d = seq(0);
    d.resize(1000, 0);
    for _ in 0..30 {
        a.send(&d).unwrap();
    }
    assert!(wait_until(|| proxy.counters().up.received == 30));
    // The queue's verdict is counted just after `received`: wait for it, then read the rest.
    assert!(wait_until(|| proxy.counters().up.dropped_overflow == 20), "{}", proxy.counters());
    let c = proxy.counters();
    assert!(c.queued_bytes <= 10_000);
    assert_eq!(recv_all(&a, 10, Duration::from_secs(2)).len(), 10);
}

#[test]
fn scripts_change_faults_over_time() {
    let echo = Echo::start();
    let proxy = proxy_to(&echo, 9);
    let script = Script::parse(
        r#"
        [[phase]]
        at = "0s"
        both = { blackhole = true }
        [[phase]]
        at = "300ms"
        clear = true
        "#,
    )
    .unwrap();
    proxy.run_script(script).unwrap();
    assert!(wait_until(|| proxy.faults(Direction::Up).blackhole));
    let a = client(&proxy);
    // Probe until the clear phase lets one through.
    let deadline = Instant::now() + WAIT;
    let mut through = false;
    while !through && Instant::now() < deadline {
        a.send(&seq(1)).unwrap();
        through = !recv_all(&a, 1, Duration::from_millis(50)).is_empty();
    }
    assert!(through);
    assert!(proxy.counters().up.dropped_blackhole > 0);
    assert!(proxy.faults(Direction::Down).is_clean());
    // A phase applied directly.
    proxy.apply(&Phase { rebind: true, ..Phase::default() });
    assert_eq!(proxy.counters().rebinds, 1);
}

#[test]
fn shutdown_closes_the_listening_socket() {
    let echo = Echo::start();
    let proxy = proxy_to(&echo, 10);
    let addr = proxy.local_addr();
    let a = client(&proxy);
    a.send(&seq(1)).unwrap();
    assert_eq!(recv_all(&a, 1, Duration::from_secs(2)).len(), 1);
    let started = Instant::now();
    proxy.shutdown();
    assert!(started.elapsed() < Duration::from_secs(2));
    UdpSocket::bind(addr).expect("the port is free again");
}

#[test]
fn binary_runs_a_script_prints_its_counters_and_exits() {
    let echo = Echo::start();
    let dir = std::env::temp_dir().join(format!("faultproxy-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("s.toml");
    std::fs::write(&script, "[[phase]]\nat = \"0s\"\nup = { loss = 0.5 }\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_fovea-faultproxy");
    let check = Command::new(bin).args(["--check", "--script"]).arg(&script).output().unwrap();
    assert!(check.status.success(), "{check:?}");
    std::fs::write(dir.join("bad.toml"), "[[phase]]\nat = \"x\"\n").unwrap();
    let bad =
        Command::new(bin).args(["--check", "--script"]).arg(dir.join("bad.toml")).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));

    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--upstream", &echo.addr.to_string(), "--seed", "1"])
        .args(["--exit-after-script", "1500ms", "--stats-every", "0s", "--script"])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("fovea-faultproxy ready listen=127.0.0.1:"), "{line}");
    let listen: SocketAddr =
        line.split_whitespace().nth(2).unwrap().trim_start_matches("listen=").parse().unwrap();
    let s = udp();
    s.connect(listen).unwrap();
    for i in 0..200 {
        s.send(&seq(i)).unwrap();
    }
    // The script's 50 % loss (up) applies from the start; seed 1 fixes the draws.
    let got = recv_all(&s, 200, Duration::from_millis(300));
    assert!(!got.is_empty() && got.len() < 150, "{}", got.len());
    // Wait for the exit on another thread, bounded here.
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx.recv_timeout(WAIT).expect("the binary exits after its script").unwrap();
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
    assert!(err.contains("final after"), "{err}");
    let up = err.lines().rev().find(|l| l.starts_with("up   received=200")).expect(&err);
    let lost: u64 = up.split("loss=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(lost > 50 && lost < 150, "{up}");
    assert_eq!(echo.received(), 200 - lost, "{up}");
    let _ = std::fs::remove_dir_all(&dir);
}
