//! Outgoing federation links: one `ClientSession` per dialed node on the control thread's UDP
//! socket, with reconnect backoff and a bounded queue of frames waiting for WELCOME.
//!
//! A dial targets an address: a seed (node id learned from WELCOME, dialed again whenever the
//! link drops) or a member SWIM told us about (node id known, dialed again only while it is
//! still a reachable member).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fovea_client::{ClientConfig, ClientSession, StreamKind};
use fovea_codec::Frame;
use fovea_control::federation::NodeId;

/// Frames queued per link before WELCOME; beyond, they are dropped (and counted): SWIM and
/// anti-entropy repair what a starting link misses.
pub(super) const QUEUE_MAX: usize = 4096;

/// One dialed node.
pub(super) struct Dial {
    /// Where it is dialed.
    pub addr: SocketAddr,
    /// A configured seed: dialed again forever.
    pub seed: bool,
    /// Its node id, once known (WELCOME, or the member it was dialed for).
    pub node: Option<NodeId>,
    /// The connection, while one is up or being set up.
    pub session: Option<ClientSession>,
    /// WELCOME arrived: frames go straight to the session.
    pub welcomed: bool,
    /// Failures since the last WELCOME (backoff exponent).
    pub failures: u32,
    /// When to dial again (no session).
    pub next_attempt: Instant,
    /// Frames waiting for WELCOME.
    pub queued: VecDeque<Frame>,
    /// Not dialed again (it was ourselves, or a member that left).
    pub retired: bool,
}

/// The outgoing links of the control thread.
pub(super) struct Links {
    pub dials: Vec<Dial>,
    client: ClientConfig,
    quic: quiche::Config,
    redial_min: Duration,
    redial_max: Duration,
    /// Dials started (counter).
    pub attempts: u64,
    /// Dials that ended without WELCOME, or links that dropped (counter).
    pub failures: u64,
}

impl Links {
    pub(super) fn new(
        client: ClientConfig,
        redial_min: Duration,
        redial_max: Duration,
    ) -> Result<Links, fovea_client::ClientError> {
        let quic = client.quic_config()?;
        Ok(Links {
            dials: Vec::new(),
            client,
            quic,
            redial_min,
            redial_max,
            attempts: 0,
            failures: 0,
        })
    }

    /// Adds a dial (due now) unless one to `addr` exists; returns its index.
    pub(super) fn add(&mut self, addr: SocketAddr, seed: bool, node: Option<NodeId>) -> usize {
        if let Some(i) = self.dials.iter().position(|d| d.addr == addr) {
            let d = &mut self.dials[i];
            if d.retired && !seed && node.is_some() && d.node == node {
                // A member that left and came back.
                d.retired = false;
                d.failures = 0;
            }
            return i;
        }
        self.dials.push(Dial {
            addr,
            seed,
            node,
            session: None,
            welcomed: false,
            failures: 0,
            next_attempt: Instant::now(),
            queued: VecDeque::new(),
            retired: false,
        });
        self.dials.len() - 1
    }

    /// Starts a QUIC connection for dial `i` from `local`.
    pub(super) fn connect(&mut self, i: usize, local: SocketAddr) {
        let d = &mut self.dials[i];
        self.attempts += 1;
        match ClientSession::with_quic_config(&self.client, &mut self.quic, None, local, d.addr) {
            Ok(s) => d.session = Some(s),
            Err(e) => {
                tracing::warn!(addr = %d.addr, error = %e, "cannot start a federation link");
                self.failures += 1;
                d.failures += 1;
                d.next_attempt =
                    Instant::now() + backoff(self.redial_min, self.redial_max, d.failures);
            }
        }
    }

    /// The session of dial `i` ended: back off and dial again later (or retire it).
    pub(super) fn closed(&mut self, i: usize, keep: bool) -> usize {
        let d = &mut self.dials[i];
        d.session = None;
        if !d.welcomed || keep {
            self.failures += 1;
        }
        d.welcomed = false;
        d.failures += 1;
        d.next_attempt = Instant::now() + backoff(self.redial_min, self.redial_max, d.failures);
        d.retired |= !keep;
        let dropped = d.queued.len();
        d.queued.clear();
        dropped
    }

    /// The established link to `node`, if any.
    pub(super) fn established(&mut self, node: &NodeId) -> Option<&mut ClientSession> {
        self.dials
            .iter_mut()
            .find(|d| d.welcomed && d.node.as_ref() == Some(node))
            .and_then(|d| d.session.as_mut())
    }

    /// Index of a dial to `node` still setting up (or waiting to redial).
    pub(super) fn pending_to(&self, node: &NodeId) -> Option<usize> {
        self.dials.iter().position(|d| !d.welcomed && !d.retired && d.node.as_ref() == Some(node))
    }

    /// Links with WELCOME.
    pub(super) fn up(&self) -> usize {
        self.dials.iter().filter(|d| d.welcomed).count()
    }
}

/// Sends `frame` on a session's data stream (stream 2).
pub(super) fn send(session: &mut ClientSession, frame: &Frame) -> bool {
    session.send_frame(frame, StreamKind::Data).is_ok()
}

/// `min · 2^(failures-1)`, at most `max`.
fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    min.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (min, max) = (Duration::from_millis(250), Duration::from_secs(10));
        assert_eq!(backoff(min, max, 1), Duration::from_millis(250));
        assert_eq!(backoff(min, max, 2), Duration::from_millis(500));
        assert_eq!(backoff(min, max, 4), Duration::from_secs(2));
        assert_eq!(backoff(min, max, 10), max);
        assert_eq!(backoff(min, max, 1_000), max);
    }
}
