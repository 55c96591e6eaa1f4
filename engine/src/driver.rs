//! The per-core driver: a monoio runtime that owns one shard's socket, timers and inbox, and
//! feeds the sans-I/O shard core.
//!
//! Three tasks share the core (`Rc<RefCell<Shard>>`, never borrowed across an await):
//! - receive: waits for the socket to be readable, drains it with `recvmmsg`, then ends the turn;
//! - inbox: waits for batches from other shards, applies them, then ends the turn;
//! - timer: sleeps until the core's next deadline (re-armed when an earlier one appears).
//!
//! "Ending the turn" produces every pending packet into one `SendBatch` (sendmmsg + GSO), and
//! pushes the turn's cross-shard messages, one batch per destination. The runtime uses io_uring
//! where the kernel allows and falls back to the legacy (epoll) driver, logging why.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::mesh::Mesh;
use crate::metrics::ShardMetrics;
use crate::shard::Shard;
use crate::udp::{Offload, RecvBatch, SendBatch, BATCH};

/// Datagrams taken in from the socket before a turn must end (16 full `recvmmsg` batches
/// without GRO).
const DATAGRAMS_PER_TURN: usize = 16 * BATCH;

/// Which I/O driver a shard ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring.
    IoUring,
    /// epoll (monoio's legacy driver).
    Legacy,
}

impl IoDriver {
    /// Name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            IoDriver::IoUring => "io_uring",
            IoDriver::Legacy => "legacy",
        }
    }
}

/// Stops a shard's loop: set by the node on drain completion or deadline.
#[derive(Default)]
pub struct StopFlag {
    stop: std::sync::atomic::AtomicBool,
    drain_deadline: std::sync::Mutex<Option<Instant>>,
}

impl StopFlag {
    /// Asks the shard to drain until `deadline`, then exit.
    pub fn drain(&self, deadline: Instant) {
        *self.drain_deadline.lock().expect("not poisoned") = Some(deadline);
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }

    fn requested(&self) -> Option<Instant> {
        if self.stop.load(std::sync::atomic::Ordering::Acquire) {
            *self.drain_deadline.lock().expect("not poisoned")
        } else {
            None
        }
    }
}

/// Runs a shard until it has drained. Picks io_uring unless `force_legacy`.
pub fn run(
    shard: Shard,
    socket: std::net::UdpSocket,
    mesh: Arc<Mesh>,
    stop: Arc<StopFlag>,
    offload: Offload,
    force_legacy: bool,
) -> IoDriver {
    if !force_legacy {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(1024)
            .enable_timer()
            .build()
        {
            Ok(mut rt) => {
                rt.block_on(shard_main(shard, socket, mesh, stop, offload));
                return IoDriver::IoUring;
            }
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable (old kernel or seccomp policy); using the legacy epoll driver");
            }
        }
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("the legacy driver needs only epoll");
    rt.block_on(shard_main(shard, socket, mesh, stop, offload));
    IoDriver::Legacy
}

/// Whether io_uring works here (probed once at start for logs and metrics).
pub fn io_uring_available() -> bool {
    monoio::utils::detect_uring()
}

/// A wake-up between tasks of one thread.
#[derive(Default)]
struct LocalNotify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

struct Driver {
    core: RefCell<Shard>,
    send: RefCell<SendBatch>,
    fd: RawFd,
    mesh: Arc<Mesh>,
    metrics: Arc<ShardMetrics>,
    timer_rearm: LocalNotify,
    writable_wait: LocalNotify,
    armed: Cell<Option<Instant>>,
    blocked: Cell<bool>,
    done: LocalNotify,
    more_work: LocalNotify,
}

/// Cross-shard batches the inbox task applies before it ends a turn.
const INBOX_BATCHES_PER_TURN: usize = 64;

impl Driver {
    /// Applies up to `max_batches` batches from this shard's cross-shard inbox.
    fn apply_inbox(&self, core: &mut Shard, index: usize, now: Instant, max_batches: usize) {
        for _ in 0..max_batches {
            let Some(batch) = self.mesh.inbox(index).pop() else { break };
            for msg in batch {
                core.handle_message(now, msg);
            }
        }
        ShardMetrics::set(
            &self.metrics.cross_shard_queue_depth,
            self.mesh.inbox(index).depth() as u64,
        );
    }

    /// Ends a loop turn: transmit, push the outbox, re-arm the timer.
    fn end_turn(&self) {
        let now = Instant::now();
        let mut core = self.core.borrow_mut();
        let mut send = self.send.borrow_mut();
        let fd = self.fd;
        let metrics = &self.metrics;
        let mut blocked = false;
        let mut flush = |b: &mut SendBatch| -> bool {
            match b.flush(fd) {
                Ok(stats) => {
                    ShardMetrics::add(&metrics.send_calls, stats.calls);
                    ShardMetrics::add(&metrics.bytes_out, stats.bytes);
                    blocked |= stats.blocked;
                    !stats.blocked
                }
                Err(e) => {
                    tracing::warn!(error = %e, "send failed");
                    true
                }
            }
        };
        core.poll_transmit(now, &mut send, &mut flush);
        if !send.is_empty() {
            flush(&mut send);
        }
        if blocked || !send.is_empty() {
            self.blocked.set(true);
            self.writable_wait.notify();
        }
        let outbox: Vec<(usize, Vec<_>)> = core.take_outbox().collect();
        for (dest, batch) in outbox {
            if let Err(batch) = self.mesh.inbox(dest).push(batch) {
                core.requeue_outbox(dest, batch);
            }
        }
        ShardMetrics::inc(&self.metrics.loop_turns);
        let next = core.next_timeout();
        if let Some(next) = next {
            if self.armed.get().is_none_or(|a| next < a) {
                self.timer_rearm.notify();
            }
        }
        if core.has_pending_input() {
            self.more_work.notify();
        }
        if core.is_drained() {
            self.done.notify();
        }
    }
}

async fn shard_main(
    shard: Shard,
    socket: std::net::UdpSocket,
    mesh: Arc<Mesh>,
    stop: Arc<StopFlag>,
    offload: Offload,
) {
    let index = shard.index();
    let metrics_handle = shard_metrics(&shard);
    let socket = monoio::net::udp::UdpSocket::from_std(socket).expect("register shard socket");
    let socket = Rc::new(socket);
    let driver = Rc::new(Driver {
        core: RefCell::new(shard),
        send: RefCell::new(SendBatch::new(offload.gso)),
        fd: socket.as_raw_fd(),
        mesh: mesh.clone(),
        metrics: metrics_handle,
        timer_rearm: LocalNotify::default(),
        writable_wait: LocalNotify::default(),
        armed: Cell::new(None),
        blocked: Cell::new(false),
        done: LocalNotify::default(),
        more_work: LocalNotify::default(),
    });

    // Work task: runs another turn for input left over by the per-connection frame budget,
    // after the other tasks have had their turn.
    {
        let d = driver.clone();
        monoio::spawn(async move {
            loop {
                d.more_work.wait().await;
                d.end_turn();
            }
        });
    }

    // Receive task.
    {
        let d = driver.clone();
        let socket = socket.clone();
        monoio::spawn(async move {
            let mut batch = RecvBatch::new(offload.gro);
            // Datagrams handled since the last turn ended. Counted per datagram, not per
            // receive buffer: with GRO one `recvmmsg` can return thousands of datagrams, and a
            // turn that takes all of them in before flushing lets send queues grow by as much
            // (the 5,000 publishes/s overload scenario peaked at 2.3 GB instead of 0.6 GB).
            let mut since_turn = 0;
            loop {
                if socket.readable(false).await.is_err() {
                    continue;
                }
                loop {
                    let n = match batch.recv(d.fd) {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(error = %e, "recvmmsg failed");
                            0
                        }
                    };
                    let mut now = Instant::now();
                    let mut core = d.core.borrow_mut();
                    for i in 0..n {
                        let Some((data, from, segment)) = batch.get(i) else { continue };
                        for datagram in data.chunks_mut(segment) {
                            core.handle_datagram(now, datagram, from);
                            since_turn += 1;
                            // Keep draining, but not unboundedly: a flush to 1000 peers takes
                            // milliseconds, during which their ACKs pile up in the socket
                            // buffer and, once it is full, are dropped by the kernel (loss,
                            // retransmits, latency); after DATAGRAMS_PER_TURN the turn ends
                            // anyway, so sends are never starved.
                            if since_turn >= DATAGRAMS_PER_TURN {
                                since_turn = 0;
                                drop(core);
                                d.end_turn();
                                core = d.core.borrow_mut();
                                now = Instant::now();
                            }
                        }
                    }
                    drop(core);
                    if n < BATCH {
                        break;
                    }
                }
                since_turn = 0;
                d.end_turn();
            }
        });
    }

    // Inbox task.
    {
        let d = driver.clone();
        monoio::spawn(async move {
            loop {
                poll_fn(|cx| d.mesh.inbox(index).poll_ready(cx)).await;
                // Bounded per turn so a flood from other shards cannot starve our socket.
                d.apply_inbox(
                    &mut d.core.borrow_mut(),
                    index,
                    Instant::now(),
                    INBOX_BATCHES_PER_TURN,
                );
                d.end_turn();
            }
        });
    }

    // Writable task: retries sends the kernel refused with EAGAIN.
    {
        let d = driver.clone();
        let socket = socket.clone();
        monoio::spawn(async move {
            loop {
                d.writable_wait.wait().await;
                while d.blocked.get() {
                    let _ = socket.writable(false).await;
                    d.blocked.set(false);
                    d.end_turn();
                }
            }
        });
    }

    // Timer task.
    {
        let d = driver.clone();
        monoio::spawn(async move {
            loop {
                let next = d.core.borrow().next_timeout();
                d.armed.set(next);
                let now = Instant::now();
                // Without a deadline, still wake periodically to notice a drain request.
                let wait = next
                    .map_or(Duration::from_millis(100), |t| t.saturating_duration_since(now))
                    .min(Duration::from_millis(100));
                let sleep = std::pin::pin!(monoio::time::sleep(wait));
                let rearm = std::pin::pin!(d.timer_rearm.wait());
                let _ = futures_util::future::select(sleep, rearm).await;
                let now = Instant::now();
                if let Some(deadline) = stop.requested() {
                    let mut core = d.core.borrow_mut();
                    if !core.is_draining() {
                        // Deliveries other shards accepted before the stop and already handed
                        // to us go out before the GOODBYE: after it, the fan-out skips the
                        // connection, and a publisher that had its OK would have lost them
                        // (the SIGTERM test saw it under CI load).
                        d.apply_inbox(&mut core, index, now, usize::MAX);
                        core.start_drain(now, deadline);
                    } else if now >= deadline {
                        core.force_close_all();
                    }
                }
                d.core.borrow_mut().handle_timeouts(now);
                d.end_turn();
            }
        });
    }

    driver.done.wait().await;
    // Give quiche's CONNECTION_CLOSE packets one last flush.
    driver.end_turn();
}

fn shard_metrics(shard: &Shard) -> Arc<ShardMetrics> {
    shard.metrics()
}
