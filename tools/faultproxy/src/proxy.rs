//! The socket driver: a listening socket for clients, one connected upstream socket per client
//! address, a scheduler thread that sends delayed datagrams when they are due, and the handle
//! tests and the binary use to change faults at run time.
//!
//! Threads (plain std, blocking sockets; the proxy is a test tool, not a hot path):
//! - `faultproxy-listen`: receives from clients, shapes, sends up (at once or via the queue);
//! - one `faultproxy-up` per client socket: receives the node's replies, shapes, sends down;
//! - `faultproxy-sched`: sends queued datagrams at their time, expires idle clients, runs
//!   periodic rebinds;
//! - `faultproxy-script` while a script runs.
//!
//! Every blocking receive has a read timeout of [`POLL`], so each thread notices a shutdown or
//! a rebind within that time.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::counters::{Counters, DirCounters};
use crate::error::{FaultError, ProxyError};
use crate::faults::{Direction, Faults};
use crate::queue::{DelayQueue, Footprint};
use crate::script::{Phase, Script};
use crate::shaper::{Shaper, Verdict};

/// Longest a blocked thread goes without checking for shutdown or a rebind.
pub const POLL: Duration = Duration::from_millis(50);

/// How often the scheduler looks for idle clients and due rebinds.
const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// Largest UDP payload.
const DATAGRAM_MAX: usize = 65_535;

/// Socket buffers asked for (the kernel caps them at `net.core.rmem_max` / `wmem_max`): a
/// client's burst or a node's fan-out train must not be lost in the proxy's own sockets, where
/// it would look like a fault nobody configured.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Per-client receive threads do little; a small stack keeps thousands of clients cheap.
const CLIENT_THREAD_STACK: usize = 128 << 10;

/// How the proxy starts.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients send (e.g. `127.0.0.1:0` for an ephemeral port).
    pub listen: SocketAddr,
    /// The node.
    pub upstream: SocketAddr,
    /// Seed of every random decision.
    pub seed: u64,
    /// Initial faults client → node.
    pub up: Faults,
    /// Initial faults node → client.
    pub down: Faults,
    /// Bytes of delayed datagrams held at most; beyond, datagrams are dropped and counted.
    pub max_queued_bytes: usize,
    /// Clients (source addresses) served at once; datagrams of further ones are dropped.
    pub max_clients: usize,
    /// A client silent in both directions this long loses its upstream socket.
    pub client_idle_timeout: Duration,
    /// Rebind every client's upstream socket this often.
    pub rebind_every: Option<Duration>,
}

impl ProxyConfig {
    /// Clean paths between `listen` and `upstream`, seed 0, 64 MiB of queue, 4096 clients,
    /// clients expire after 5 minutes of silence.
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> ProxyConfig {
        ProxyConfig {
            listen,
            upstream,
            seed: 0,
            up: Faults::default(),
            down: Faults::default(),
            max_queued_bytes: 64 << 20,
            max_clients: 4096,
            client_idle_timeout: Duration::from_secs(300),
            rebind_every: None,
        }
    }
}

/// One client address and its current upstream socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address as the proxy sees it.
    pub client: SocketAddr,
    /// The local address of its upstream socket: what the node sees as the client.
    pub upstream_local: SocketAddr,
}

struct Item {
    dir: Direction,
    client: SocketAddr,
    data: Vec<u8>,
}

impl Footprint for Item {
    fn bytes(&self) -> usize {
        self.data.len()
    }
}

struct Session {
    client: SocketAddr,
    socket: RwLock<Arc<UdpSocket>>,
    /// Bumped by every rebind; a receive thread of an older generation ends.
    generation: AtomicU64,
    /// Milliseconds since the proxy started, at the last datagram either way.
    last_active_ms: AtomicU64,
    closed: AtomicBool,
}

#[derive(Default)]
struct DriverCounters {
    forwarded: AtomicU64,
    dropped_overflow: AtomicU64,
    dropped_other: AtomicU64,
}

struct RebindSchedule {
    every: Option<Duration>,
    next: Option<Instant>,
}

struct Inner {
    listen: UdpSocket,
    listen_addr: SocketAddr,
    upstream: SocketAddr,
    bind_ip: IpAddr,
    started: Instant,
    max_clients: usize,
    client_idle_timeout: Duration,
    shaper: Mutex<Shaper>,
    queue: Mutex<DelayQueue<Item>>,
    queue_wake: Condvar,
    sessions: Mutex<HashMap<SocketAddr, Arc<Session>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop: AtomicBool,
    stop_lock: Mutex<()>,
    stop_wake: Condvar,
    driver: [DriverCounters; 2],
    clients_total: AtomicU64,
    clients_refused: AtomicU64,
    clients_expired: AtomicU64,
    rebinds: AtomicU64,
    rebind: Mutex<RebindSchedule>,
}

/// A running proxy. Dropping it (or [`Proxy::shutdown`]) stops every thread and closes every
/// socket; datagrams still queued are discarded.
pub struct Proxy {
    inner: Arc<Inner>,
    main_threads: Vec<JoinHandle<()>>,
}

/// Locks, ignoring poisoning: a panicked proxy thread must not take the test's handle down
/// with it, and every critical section leaves its data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A UDP socket bound to `addr` with large buffers (best effort: a smaller kernel cap is
/// not an error).
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

impl Proxy {
    /// Binds the listening socket and starts the threads.
    pub fn start(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        for (dir, f) in [(Direction::Up, &config.up), (Direction::Down, &config.down)] {
            f.validate().map_err(|source| ProxyError::Fault { dir, source })?;
        }
        let sock_err = |what, addr| move |source| ProxyError::Socket { what, addr, source };
        let listen = bind_udp(config.listen).map_err(sock_err("bind", config.listen))?;
        listen.set_read_timeout(Some(POLL)).map_err(sock_err("configure", config.listen))?;
        let listen_addr = listen.local_addr().map_err(sock_err("configure", config.listen))?;
        // Upstream sockets bind to the node's loopback address when the node is on loopback,
        // so that nothing leaves the host; otherwise to the unspecified address of its family.
        let bind_ip = match config.upstream.ip() {
            ip if ip.is_loopback() => ip,
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let now = Instant::now();
        let inner = Arc::new(Inner {
            listen,
            listen_addr,
            upstream: config.upstream,
            bind_ip,
            started: now,
            max_clients: config.max_clients,
            client_idle_timeout: config.client_idle_timeout,
            shaper: Mutex::new(Shaper::with_faults(config.seed, config.up, config.down)),
            queue: Mutex::new(DelayQueue::new(config.max_queued_bytes)),
            queue_wake: Condvar::new(),
            sessions: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            stop_wake: Condvar::new(),
            driver: Default::default(),
            clients_total: AtomicU64::new(0),
            clients_refused: AtomicU64::new(0),
            clients_expired: AtomicU64::new(0),
            rebinds: AtomicU64::new(0),
            rebind: Mutex::new(RebindSchedule {
                every: config.rebind_every,
                next: config.rebind_every.map(|e| now + e),
            }),
        });
        let mut proxy = Proxy { inner: inner.clone(), main_threads: Vec::new() };
        let spawn = |name: &str, f: fn(Arc<Inner>)| {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || f(inner))
                .map_err(ProxyError::Thread)
        };
        // On error, `proxy` drops and stops what was started.
        proxy.main_threads.push(spawn("faultproxy-listen", listen_loop)?);
        proxy.main_threads.push(spawn("faultproxy-sched", scheduler_loop)?);
        Ok(proxy)
    }

    /// Where clients send.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.listen_addr
    }

    /// The node's address.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.upstream
    }

    /// Replaces the faults of `dir`.
    pub fn set(&self, dir: Direction, faults: Faults) -> Result<(), FaultError> {
        faults.validate()?;
        lock(&self.inner.shaper).set(dir, faults);
        Ok(())
    }

    /// Replaces the faults of both directions.
    pub fn set_both(&self, faults: Faults) -> Result<(), FaultError> {
        faults.validate()?;
        let mut s = lock(&self.inner.shaper);
        s.set(Direction::Up, faults.clone());
        s.set(Direction::Down, faults);
        Ok(())
    }

    /// The faults of `dir` now.
    pub fn faults(&self, dir: Direction) -> Faults {
        lock(&self.inner.shaper).faults(dir).clone()
    }

    /// Turns the blackhole of `dir` on or off, leaving its other faults as they are.
    pub fn blackhole(&self, dir: Direction, on: bool) {
        let mut s = lock(&self.inner.shaper);
        let mut f = s.faults(dir).clone();
        f.blackhole = on;
        s.set(dir, f);
    }

    /// Clean paths both ways and no periodic rebinding.
    pub fn clear(&self) {
        {
            let mut s = lock(&self.inner.shaper);
            s.set(Direction::Up, Faults::default());
            s.set(Direction::Down, Faults::default());
        }
        self.set_rebind_every(None);
    }

    /// Gives every client a new upstream socket (a new source port at the node); returns how
    /// many were rebound. Datagrams the node sends to an old port afterwards are dropped, as
    /// by a NAT that forgot the old mapping.
    pub fn rebind_all(&self) -> usize {
        let sessions: Vec<Arc<Session>> = lock(&self.inner.sessions).values().cloned().collect();
        sessions.iter().filter(|s| rebind(&self.inner, s).is_ok()).count()
    }

    /// Gives one client a new upstream socket; returns its new local address, or `None` when
    /// the proxy does not know `client` or no socket could be opened.
    pub fn rebind(&self, client: SocketAddr) -> Option<SocketAddr> {
        let session = lock(&self.inner.sessions).get(&client).cloned()?;
        rebind(&self.inner, &session).ok()
    }

    /// Rebinds every client every `every` from now on (`None`: stop).
    pub fn set_rebind_every(&self, every: Option<Duration>) {
        let every = every.filter(|e| !e.is_zero());
        *lock(&self.inner.rebind) =
            RebindSchedule { every, next: every.map(|e| Instant::now() + e) };
    }

    /// The clients and the addresses the node sees for them.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let sessions = lock(&self.inner.sessions);
        let mut v: Vec<ClientInfo> = sessions
            .values()
            .filter_map(|s| {
                let socket = s.socket.read().unwrap_or_else(|e| e.into_inner()).clone();
                Some(ClientInfo { client: s.client, upstream_local: socket.local_addr().ok()? })
            })
            .collect();
        v.sort_by_key(|c| c.client);
        v
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let inner = &self.inner;
        let (up, down) = {
            let s = lock(&inner.shaper);
            (s.counters(Direction::Up), s.counters(Direction::Down))
        };
        let dir = |d: Direction, c| {
            let mut out = DirCounters::from_shaper(c);
            let drv = &inner.driver[d.index()];
            out.forwarded = drv.forwarded.load(Relaxed);
            out.dropped_overflow = drv.dropped_overflow.load(Relaxed);
            out.dropped_other = drv.dropped_other.load(Relaxed);
            out
        };
        let (queued, queued_bytes) = {
            let q = lock(&inner.queue);
            (q.len() as u64, q.bytes() as u64)
        };
        Counters {
            up: dir(Direction::Up, up),
            down: dir(Direction::Down, down),
            clients: lock(&inner.sessions).len() as u64,
            clients_total: inner.clients_total.load(Relaxed),
            clients_refused: inner.clients_refused.load(Relaxed),
            clients_expired: inner.clients_expired.load(Relaxed),
            rebinds: inner.rebinds.load(Relaxed),
            queued,
            queued_bytes,
        }
    }

    /// Applies one phase now (its `at` is ignored).
    pub fn apply(&self, phase: &Phase) {
        apply(&self.inner, phase);
    }

    /// Runs `script`, its offsets counted from now: phases at offset zero are applied before
    /// this returns (so the first datagram already meets them), later ones on a thread of
    /// their own. Phases not reached when the proxy shuts down are not applied.
    pub fn run_script(&self, script: Script) -> Result<(), ProxyError> {
        let start = Instant::now();
        let now_phases = script.phases.iter().take_while(|p| p.at.is_zero()).count();
        for phase in &script.phases[..now_phases] {
            apply(&self.inner, phase);
        }
        let inner = self.inner.clone();
        let handle = std::thread::Builder::new()
            .name("faultproxy-script".into())
            .spawn(move || {
                for phase in &script.phases[now_phases..] {
                    if !inner.wait_stop_until(start + phase.at) {
                        return;
                    }
                    apply(&inner, phase);
                }
            })
            .map_err(ProxyError::Thread)?;
        self.inner.keep_thread(handle);
        Ok(())
    }

    /// Time since the proxy started.
    pub fn elapsed(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Stops every thread and closes the sockets; returns the final counters.
    pub fn shutdown(mut self) -> Counters {
        self.stop();
        self.counters()
    }

    fn stop(&mut self) {
        let inner = &self.inner;
        inner.stop.store(true, Relaxed);
        {
            let _q = lock(&inner.queue);
            inner.queue_wake.notify_all();
        }
        {
            let _g = lock(&inner.stop_lock);
            inner.stop_wake.notify_all();
        }
        for t in self.main_threads.drain(..) {
            let _ = t.join();
        }
        // The listen thread has ended, so no new client threads start; those left end within
        // POLL.
        let threads = std::mem::take(&mut *lock(&inner.threads));
        for t in threads {
            let _ = t.join();
        }
        lock(&inner.sessions).clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if !self.main_threads.is_empty() {
            self.stop();
        }
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("listen", &self.inner.listen_addr)
            .field("upstream", &self.inner.upstream)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Waits until `at`; false when the proxy stopped first.
    fn wait_stop_until(&self, at: Instant) -> bool {
        let mut g = lock(&self.stop_lock);
        loop {
            if self.stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= at {
                return true;
            }
            g = self.stop_wake.wait_timeout(g, at - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn keep_thread(&self, handle: JoinHandle<()>) {
        let mut threads = lock(&self.threads);
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
    }

    fn open_upstream(&self) -> io::Result<UdpSocket> {
        let socket = bind_udp(SocketAddr::new(self.bind_ip, 0))?;
        socket.connect(self.upstream)?;
        socket.set_read_timeout(Some(POLL))?;
        Ok(socket)
    }

    /// Shapes a datagram and sends it now or queues it.
    fn handle(&self, dir: Direction, client: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        let verdict = lock(&self.shaper).decide(dir, data.len(), now);
        let Verdict::Deliver { at, copies } = verdict else { return };
        if at <= now {
            let q = lock(&self.queue);
            // With datagrams queued, this one goes behind those already due (FIFO at equal
            // times) instead of overtaking them.
            if q.is_empty() {
                drop(q);
                for _ in 0..copies {
                    self.send(dir, client, data);
                }
                return;
            }
        }
        let mut q = lock(&self.queue);
        let earliest = q.next_at();
        for _ in 0..copies {
            let item = Item { dir, client, data: data.to_vec() };
            if q.push(at, item).is_err() {
                self.driver[dir.index()].dropped_overflow.fetch_add(1, Relaxed);
            }
        }
        if earliest.is_none_or(|t| at < t) {
            self.queue_wake.notify_one();
        }
    }

    fn send(&self, dir: Direction, client: SocketAddr, data: &[u8]) {
        let counters = &self.driver[dir.index()];
        let sent = match dir {
            Direction::Up => {
                let session = lock(&self.sessions).get(&client).cloned();
                match session {
                    Some(s) => {
                        let socket = s.socket.read().unwrap_or_else(|e| e.into_inner()).clone();
                        socket.send(data).is_ok()
                    }
                    None => false,
                }
            }
            Direction::Down => self.listen.send_to(data, client).is_ok(),
        };
        if sent {
            counters.forwarded.fetch_add(1, Relaxed);
        } else {
            counters.dropped_other.fetch_add(1, Relaxed);
        }
    }

    /// Expires idle clients; runs a due periodic rebind.
    fn housekeeping(self: &Arc<Inner>) {
        let now_ms = self.now_ms();
        let idle_ms = self.client_idle_timeout.as_millis() as u64;
        {
            let mut sessions = lock(&self.sessions);
            sessions.retain(|_, s| {
                let keep = now_ms.saturating_sub(s.last_active_ms.load(Relaxed)) < idle_ms;
                if !keep {
                    s.closed.store(true, Relaxed);
                    self.clients_expired.fetch_add(1, Relaxed);
                }
                keep
            });
        }
        let due = {
            let mut r = lock(&self.rebind);
            match (r.every, r.next) {
                (Some(every), Some(next)) if Instant::now() >= next => {
                    r.next = Some(Instant::now() + every);
                    true
                }
                _ => false,
            }
        };
        if due {
            let sessions: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
            for s in &sessions {
                let _ = rebind(self, s);
            }
        }
    }
}

/// The session of `client`, created (with its upstream socket and receive thread) on its
/// first datagram; `None` when the client table is full or no socket can be opened.
fn session_for(inner: &Arc<Inner>, client: SocketAddr) -> Option<Arc<Session>> {
    let mut sessions = lock(&inner.sessions);
    if let Some(s) = sessions.get(&client) {
        return Some(s.clone());
    }
    if sessions.len() >= inner.max_clients {
        inner.clients_refused.fetch_add(1, Relaxed);
        return None;
    }
    let socket = match inner.open_upstream() {
        Ok(s) => Arc::new(s),
        Err(_) => {
            inner.driver[Direction::Up.index()].dropped_other.fetch_add(1, Relaxed);
            return None;
        }
    };
    let session = Arc::new(Session {
        client,
        socket: RwLock::new(socket.clone()),
        generation: AtomicU64::new(0),
        last_active_ms: AtomicU64::new(inner.now_ms()),
        closed: AtomicBool::new(false),
    });
    if spawn_upstream(inner, session.clone(), socket, 0).is_err() {
        inner.driver[Direction::Up.index()].dropped_other.fetch_add(1, Relaxed);
        return None;
    }
    sessions.insert(client, session.clone());
    inner.clients_total.fetch_add(1, Relaxed);
    Some(session)
}

fn spawn_upstream(
    inner: &Arc<Inner>,
    session: Arc<Session>,
    socket: Arc<UdpSocket>,
    generation: u64,
) -> io::Result<()> {
    let i = inner.clone();
    let handle = std::thread::Builder::new()
        .name("faultproxy-up".into())
        .stack_size(CLIENT_THREAD_STACK)
        .spawn(move || upstream_loop(i, session, socket, generation))?;
    inner.keep_thread(handle);
    Ok(())
}

fn rebind(inner: &Arc<Inner>, session: &Arc<Session>) -> io::Result<SocketAddr> {
    let socket = Arc::new(inner.open_upstream()?);
    let local = socket.local_addr()?;
    let generation = {
        let mut current = session.socket.write().unwrap_or_else(|e| e.into_inner());
        *current = socket.clone();
        session.generation.fetch_add(1, Relaxed) + 1
    };
    inner.rebinds.fetch_add(1, Relaxed);
    spawn_upstream(inner, session.clone(), socket, generation)?;
    Ok(local)
}

fn apply(inner: &Arc<Inner>, phase: &Phase) {
    {
        let mut s = lock(&inner.shaper);
        if phase.clear {
            s.set(Direction::Up, Faults::default());
            s.set(Direction::Down, Faults::default());
        }
        if let Some(f) = &phase.up {
            s.set(Direction::Up, f.clone());
        }
        if let Some(f) = &phase.down {
            s.set(Direction::Down, f.clone());
        }
    }
    let every = match (phase.clear, phase.rebind_every) {
        (_, Some(every)) => Some(every),
        (true, None) => Some(None),
        (false, None) => None,
    };
    if let Some(every) = every {
        *lock(&inner.rebind) = RebindSchedule { every, next: every.map(|e| Instant::now() + e) };
    }
    if phase.rebind {
        let sessions: Vec<Arc<Session>> = lock(&inner.sessions).values().cloned().collect();
        for s in &sessions {
            let _ = rebind(inner, s);
        }
    }
}

fn listen_loop(inner: Arc<Inner>) {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    while !inner.stopped() {
        match inner.listen.recv_from(&mut buf) {
            Ok((n, from)) => {
                let Some(session) = session_for(&inner, from) else { continue };
                session.last_active_ms.store(inner.now_ms(), Relaxed);
                inner.handle(Direction::Up, from, &buf[..n]);
            }
            Err(e) if is_timeout(&e) => {}
            // Anything else (an ICMP error reported on the socket) concerns one datagram.
            Err(_) => {}
        }
    }
}

fn upstream_loop(
    inner: Arc<Inner>,
    session: Arc<Session>,
    socket: Arc<UdpSocket>,
    generation: u64,
) {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    let current = || {
        !inner.stopped()
            && !session.closed.load(Relaxed)
            && session.generation.load(Relaxed) == generation
    };
    while current() {
        match socket.recv(&mut buf) {
            Ok(n) => {
                if !current() {
                    // Reached the old port after a rebind: a NAT would have no mapping for it.
                    inner.driver[Direction::Down.index()].dropped_other.fetch_add(1, Relaxed);
                    break;
                }
                session.last_active_ms.store(inner.now_ms(), Relaxed);
                inner.handle(Direction::Down, session.client, &buf[..n]);
            }
            Err(e) if is_timeout(&e) => {}
            // ECONNREFUSED: nothing listens upstream (ICMP port unreachable); that datagram is
            // lost, later ones may find the node up again.
            Err(_) => {}
        }
    }
}

fn scheduler_loop(inner: Arc<Inner>) {
    let mut due: Vec<Item> = Vec::with_capacity(64);
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
    loop {
        {
            let mut q = lock(&inner.queue);
            loop {
                if inner.stopped() {
                    return;
                }
                let now = Instant::now();
                while due.len() < 64 {
                    match q.pop_due(now) {
                        Some(item) => due.push(item),
                        None => break,
                    }
                }
                if !due.is_empty() || now >= next_housekeeping {
                    break;
                }
                let mut wait = next_housekeeping - now;
                if let Some(at) = q.next_at() {
                    wait = wait.min(at.saturating_duration_since(now));
                }
                q = inner.queue_wake.wait_timeout(q, wait).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
        // Sent without the queue's lock, so receivers can queue meanwhile.
        for item in due.drain(..) {
            inner.send(item.dir, item.client, &item.data);
        }
        if Instant::now() >= next_housekeeping {
            inner.housekeeping();
            next_housekeeping = Instant::now() + HOUSEKEEPING;
        }
    }
}
