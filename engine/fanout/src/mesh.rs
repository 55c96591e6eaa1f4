//! The links between shards: one bounded lock-free inbox per shard, fed in batches.
//!
//! A shard collects what it has for each other shard during a loop turn and pushes it as one
//! batch (one queue operation and at most one wake-up per destination per turn). The queue is a
//! crossbeam `ArrayQueue`: bounded, lock-free, multi-producer. A full inbox is never a silent
//! drop: the sender keeps the batch and retries next turn, and stops reading publishers while it
//! holds more than its limit (QUIC flow control then pushes back on them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

/// One shard's inbox of `M` messages (the engine's `ShardMsg`).
pub struct Inbox<M> {
    queue: ArrayQueue<Vec<M>>,
    waker: AtomicWaker,
    messages: AtomicUsize,
}

impl<M> Inbox<M> {
    fn new(batches: usize) -> Inbox<M> {
        Inbox {
            queue: ArrayQueue::new(batches),
            waker: AtomicWaker::new(),
            messages: AtomicUsize::new(0),
        }
    }

    /// Pushes a batch; gives it back when the inbox is full.
    pub fn push(&self, batch: Vec<M>) -> Result<(), Vec<M>> {
        let n = batch.len();
        self.queue.push(batch)?;
        self.messages.fetch_add(n, Ordering::Relaxed);
        self.waker.wake();
        Ok(())
    }

    /// Takes the oldest batch.
    pub fn pop(&self) -> Option<Vec<M>> {
        let batch = self.queue.pop()?;
        self.messages.fetch_sub(batch.len(), Ordering::Relaxed);
        Some(batch)
    }

    /// Messages waiting (for the queue-depth gauge).
    pub fn depth(&self) -> usize {
        self.messages.load(Ordering::Relaxed)
    }

    /// Ready when a batch is waiting; registers the waker otherwise. The waker is registered
    /// before the second emptiness check, so a push racing with this call is never missed.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.queue.is_empty() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.queue.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Wakes the owning shard without a message (used to ask it to drain).
    pub fn wake(&self) {
        self.waker.wake();
    }
}

/// All inboxes of a node, indexed by shard.
pub struct Mesh<M> {
    inboxes: Vec<Arc<Inbox<M>>>,
}

impl<M> Mesh<M> {
    /// Inboxes for `shards` shards, each holding up to `batches` batches.
    pub fn new(shards: usize, batches: usize) -> Arc<Mesh<M>> {
        Arc::new(Mesh { inboxes: (0..shards).map(|_| Arc::new(Inbox::new(batches))).collect() })
    }

    /// The inbox of `shard`.
    pub fn inbox(&self, shard: usize) -> &Inbox<M> {
        &self.inboxes[shard]
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }
}
