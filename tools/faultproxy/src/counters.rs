//! What the proxy did, per direction and overall, as a plain snapshot.

use std::fmt;

use crate::faults::Direction;
use crate::shaper::ShaperCounters;

/// One direction's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirCounters {
    /// Datagrams received in this direction.
    pub received: u64,
    /// Datagrams sent on (duplicates included).
    pub forwarded: u64,
    /// Dropped by a blackhole.
    pub dropped_blackhole: u64,
    /// Dropped for exceeding the MTU.
    pub dropped_mtu: u64,
    /// Dropped by random loss.
    pub dropped_loss: u64,
    /// Dropped because the bandwidth cap's queue was full.
    pub dropped_rate: u64,
    /// Dropped because the delayed datagrams already held `max_queued_bytes`.
    pub dropped_overflow: u64,
    /// Dropped for another reason: a send that failed, a client whose session expired while
    /// its datagram waited, a datagram that reached a client's old port after a rebind.
    pub dropped_other: u64,
    /// Sent later than they arrived.
    pub delayed: u64,
    /// Held back by the reorder delay.
    pub reordered: u64,
    /// Sent twice.
    pub duplicated: u64,
}

impl DirCounters {
    pub(crate) fn from_shaper(s: ShaperCounters) -> DirCounters {
        DirCounters {
            received: s.received,
            dropped_blackhole: s.dropped_blackhole,
            dropped_mtu: s.dropped_mtu,
            dropped_loss: s.dropped_loss,
            dropped_rate: s.dropped_rate,
            delayed: s.delayed,
            reordered: s.reordered,
            duplicated: s.duplicated,
            ..DirCounters::default()
        }
    }

    /// All drops.
    pub fn dropped(&self) -> u64 {
        self.dropped_blackhole
            + self.dropped_mtu
            + self.dropped_loss
            + self.dropped_rate
            + self.dropped_overflow
            + self.dropped_other
    }
}

/// Counters of both directions and of the client table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Client → node.
    pub up: DirCounters,
    /// Node → client.
    pub down: DirCounters,
    /// Clients with an upstream socket now.
    pub clients: u64,
    /// Clients seen since the start.
    pub clients_total: u64,
    /// Datagrams from new clients refused because `max_clients` were open.
    pub clients_refused: u64,
    /// Clients whose upstream socket was closed after `client_idle_timeout` of silence.
    pub clients_expired: u64,
    /// Upstream sockets replaced by a rebind.
    pub rebinds: u64,
    /// Datagrams waiting in the delay queue now.
    pub queued: u64,
    /// Bytes waiting in the delay queue now.
    pub queued_bytes: u64,
}

impl Counters {
    /// One direction's counters.
    pub fn dir(&self, dir: Direction) -> &DirCounters {
        match dir {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }
}

impl fmt::Display for DirCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} forwarded={} dropped={} (loss={} blackhole={} mtu={} rate={} \
             overflow={} other={}) delayed={} reordered={} duplicated={}",
            self.received,
            self.forwarded,
            self.dropped(),
            self.dropped_loss,
            self.dropped_blackhole,
            self.dropped_mtu,
            self.dropped_rate,
            self.dropped_overflow,
            self.dropped_other,
            self.delayed,
            self.reordered,
            self.duplicated
        )
    }
}

impl fmt::Display for Counters {
    /// Three lines: `up ...`, `down ...`, `clients ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "up   {}", self.up)?;
        writeln!(f, "down {}", self.down)?;
        write!(
            f,
            "clients={} total={} refused={} expired={} rebinds={} queued={} ({} bytes)",
            self.clients,
            self.clients_total,
            self.clients_refused,
            self.clients_expired,
            self.rebinds,
            self.queued,
            self.queued_bytes
        )
    }
}
