//! Datagrams waiting for their departure time: a binary heap ordered by (time, arrival
//! sequence), so equal times leave in arrival order, bounded by the bytes it holds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Something with a size in bytes, for the queue's memory cap.
pub trait Footprint {
    /// Bytes this entry holds.
    fn bytes(&self) -> usize;
}

impl Footprint for Vec<u8> {
    fn bytes(&self) -> usize {
        self.len()
    }
}

struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The queue is full: the entry was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A time-ordered queue holding at most `cap` bytes.
pub struct DelayQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
    bytes: usize,
    cap: usize,
}

impl<T: Footprint> DelayQueue<T> {
    /// An empty queue of at most `cap` bytes.
    pub fn new(cap: usize) -> DelayQueue<T> {
        DelayQueue { heap: BinaryHeap::new(), seq: 0, bytes: 0, cap }
    }

    /// Queues `item` to leave at `at`; `Full` when it would take the queue over its cap.
    pub fn push(&mut self, at: Instant, item: T) -> Result<(), Full> {
        let n = item.bytes();
        if self.bytes + n > self.cap {
            return Err(Full);
        }
        self.bytes += n;
        self.seq += 1;
        self.heap.push(Reverse(Entry { at, seq: self.seq, item }));
        Ok(())
    }

    /// When the earliest entry is due.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_at()? > now {
            return None;
        }
        let Reverse(e) = self.heap.pop()?;
        self.bytes -= e.item.bytes();
        Some(e.item)
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_time_order_then_arrival_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut q = DelayQueue::new(1 << 20);
        q.push(ms(30), vec![3]).unwrap();
        q.push(ms(10), vec![1]).unwrap();
        q.push(ms(20), vec![2, 0]).unwrap();
        q.push(ms(20), vec![2, 1]).unwrap();
        assert_eq!(q.next_at(), Some(ms(10)));
        assert_eq!(q.pop_due(ms(5)), None);
        assert_eq!(q.pop_due(ms(25)), Some(vec![1]));
        assert_eq!(q.pop_due(ms(25)), Some(vec![2, 0]));
        assert_eq!(q.pop_due(ms(25)), Some(vec![2, 1]));
        assert_eq!(q.pop_due(ms(25)), None);
        assert_eq!(q.pop_due(ms(30)), Some(vec![3]));
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn memory_cap_refuses_and_frees() {
        let now = Instant::now();
        let mut q = DelayQueue::new(2500);
        q.push(now, vec![0; 1200]).unwrap();
        q.push(now, vec![0; 1200]).unwrap();
        assert_eq!(q.push(now, vec![0; 1200]), Err(Full));
        assert_eq!((q.len(), q.bytes()), (2, 2400));
        q.pop_due(now).unwrap();
        q.push(now, vec![0; 1200]).unwrap();
        assert_eq!(q.bytes(), 2400);
    }
}
