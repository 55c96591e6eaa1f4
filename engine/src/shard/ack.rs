//! Deferred acknowledgements.
//!
//! quiche puts an ACK into the next packet `send()` builds after any ack-eliciting input, and
//! has no delayed-ACK timer of its own. A connection that only received this turn (a caller's
//! CALL, a provider's REPLY, a publisher's PUBLISH) would therefore get a packet that holds
//! nothing but an ACK, and one more a few microseconds later with the data that answers it: at
//! 100,000 calls/s about a fifth of the node's packets were such ACK-only packets, each costing
//! the node a `sendmsg` and the peer a receive (docs/decisions/0007-deferred-acks.md).
//!
//! So a connection dirtied only by its own input, with nothing of ours to send, is not flushed
//! for up to `limits.ack_delay_us`; whatever is sent to it meanwhile carries the ACK, and when
//! nothing is, the deadline sends it alone. The bound stays far below the `max_ack_delay` the
//! node advertises (25 ms), so the peer's loss detection never waits on it, and quiche writes
//! the real delay into the ACK frame, so the peer's RTT estimate does not grow with it.

use std::time::{Duration, Instant};

use super::conn::{Conn, Phase};

/// What a dirty connection's flush does this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckPlan {
    /// Build and send its packets now.
    SendNow,
    /// Skip it: a deferral is already queued for it.
    Wait,
    /// Skip it and queue a deferral ending at this instant.
    Queue(Instant),
}

/// Decides a dirty connection's flush. `had_output`: the connection had frames of ours queued
/// before this turn's `push_tx` (they may now be in quiche, and go out at once).
pub(super) fn plan(conn: &mut Conn, had_output: bool, now: Instant, delay: Duration) -> AckPlan {
    let deferrable = !delay.is_zero()
        && conn.ack_only
        && !had_output
        && conn.phase == Phase::Active
        && !conn.goodbye_sent
        && conn.quic.is_established()
        && !conn.quic.is_draining()
        && !conn.quic.is_closed();
    if !deferrable {
        conn.ack_due = None;
        return AckPlan::SendNow;
    }
    match conn.ack_due {
        Some(at) if at <= now => {
            conn.ack_due = None;
            AckPlan::SendNow
        }
        Some(_) => AckPlan::Wait,
        None => {
            let at = now + delay;
            conn.ack_due = Some(at);
            AckPlan::Queue(at)
        }
    }
}
