//! A connection's outgoing frame pieces that QUIC could not take yet.

use std::collections::VecDeque;

use bytes::Bytes;

/// Outgoing frames (or pieces of them) waiting for quiche's stream buffer (flow control). The
/// engine moves them into quiche without copying; this crate only queues.
#[derive(Default)]
pub struct TxQueue {
    frames: VecDeque<Bytes>,
    /// Bytes queued here (not yet in quiche).
    pub bytes: usize,
}

impl TxQueue {
    /// Queues a frame (or a piece of one).
    #[inline]
    pub fn push(&mut self, b: Bytes) {
        self.bytes += b.len();
        self.frames.push_back(b);
    }

    /// Puts a piece back at the front (what quiche did not accept).
    pub fn push_front(&mut self, b: Bytes) {
        self.bytes += b.len();
        self.frames.push_front(b);
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Takes the oldest queued piece.
    pub fn pop_front(&mut self) -> Option<Bytes> {
        let b = self.frames.pop_front()?;
        self.bytes -= b.len();
        Some(b)
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }

    /// Gives back spare capacity once the queue is empty, so an idle connection holds none.
    pub fn shrink_when_empty(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > 64 {
            self.frames = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_track_pushes_and_pops() {
        let mut q = TxQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"de"));
        assert_eq!(q.bytes, 5);
        let a = q.pop_front().unwrap();
        assert_eq!(&a[..], b"abc");
        assert_eq!(q.bytes, 2);
        q.push_front(a.slice(1..));
        assert_eq!(q.bytes, 4);
        assert_eq!(&q.pop_front().unwrap()[..], b"bc");
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.bytes, 0);
    }
}
