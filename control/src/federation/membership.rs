//! Federation membership and failure detection: SWIM by `foca`, wrapped sans-I/O.
//!
//! foca is already sans-I/O: it asks a [`Runtime`] to send bytes, to call it back after a
//! delay, and tells it about membership changes. [`Membership`] is that runtime plus a timer
//! queue keyed by due time, so the control-thread driver only feeds in received datagrams and
//! the current time, and drains [`MembershipEvent`]s: datagrams to send and members that came
//! up or went down. foca's messages are encoded with its own `PostcardCodec` (serde on our
//! identity), the smallest well-kept option; they are opaque bytes to the driver, which carries
//! them on the federation link to the member's node.
//!
//! ANNOUNCE frames (id, endpoint, region, load, capacity, hlc) are kept per member beside
//! foca's state for the operator view ([`Membership::members`]) and for call placement (load).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use foca::{
    Config, Foca, Identity, NoCustomBroadcast, Notification, OwnedNotification, PostcardCodec,
    Runtime, State, Timer,
};
use fovea_codec::frame::Announce;
use rand_foca::rngs::SmallRng;
use rand_foca::SeedableRng;
use serde::{Deserialize, Serialize};

use super::metrics::FederationMetrics;
use super::replica::NodeId;

/// A federation member as SWIM knows it: node id, where it is reached, and which life of the
/// node this is. A node that restarts (or was declared down and rejoins) comes back with a
/// higher `incarnation`; foca keys members by node id and lets the higher one win.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FedIdentity {
    /// Node id.
    pub id: NodeId,
    /// Federation endpoint.
    pub endpoint: SocketAddr,
    /// Life of the node (the driver may start it from a boot counter or the start time).
    pub incarnation: u32,
}

impl Identity for FedIdentity {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(FedIdentity { incarnation: self.incarnation.wrapping_add(1), ..self.clone() })
    }

    fn addr(&self) -> NodeId {
        self.id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

/// What membership asks of the driver, or tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// Send these SWIM bytes to the member's node.
    Send {
        /// The member.
        to: FedIdentity,
        /// foca's encoded message.
        datagram: Bytes,
    },
    /// A member became active.
    Up(FedIdentity),
    /// A member was declared down: its entries expire, calls forwarded to it fail.
    Down(FedIdentity),
    /// A member rejoined with a new identity (restart).
    Renamed {
        /// The identity it had.
        old: FedIdentity,
        /// The one it has now.
        new: FedIdentity,
    },
    /// We were declared down and renewed our identity to rejoin.
    Rejoined(FedIdentity),
    /// Every member we knew is gone.
    Idle,
}

/// A member's liveness, as SWIM judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; still forwarded to until declared down.
    Suspect,
    /// Declared down.
    Dead,
}

/// A row of the operator view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Node id.
    pub id: NodeId,
    /// Endpoint (ANNOUNCE, else SWIM's identity).
    pub endpoint: SocketAddr,
    /// Region label from ANNOUNCE (empty before the first).
    pub region: Bytes,
    /// Connected peers at the last ANNOUNCE.
    pub load: u64,
    /// Its max_peers.
    pub capacity: u64,
    /// When we last heard from it (SWIM message or ANNOUNCE), ms.
    pub last_seen_ms: u64,
    /// Liveness.
    pub state: MemberState,
}

/// The newest ANNOUNCE of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceInfo {
    /// Endpoint.
    pub endpoint: SocketAddr,
    /// Region.
    pub region: Bytes,
    /// Load.
    pub load: u64,
    /// Capacity.
    pub capacity: u64,
    /// Its stamp; only a newer one replaces it.
    pub hlc: u64,
}

/// foca's [`Runtime`]: collects what foca asks for, stamped with the current time.
#[derive(Debug, Default)]
struct Collector {
    now_ms: u64,
    sends: Vec<(FedIdentity, Bytes)>,
    timers: Vec<(u64, Timer<FedIdentity>)>,
    notes: Vec<OwnedNotification<FedIdentity>>,
}

impl Runtime<FedIdentity> for Collector {
    fn notify(&mut self, notification: Notification<'_, FedIdentity>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: FedIdentity, data: &[u8]) {
        self.sends.push((to, Bytes::copy_from_slice(data)));
    }

    fn submit_after(&mut self, event: Timer<FedIdentity>, after: Duration) {
        // Rounded up: a timer fired early can make foca judge a probe before its deadline.
        let after_ms = after.as_nanos().div_ceil(1_000_000);
        let due = self.now_ms.saturating_add(u64::try_from(after_ms).unwrap_or(u64::MAX));
        self.timers.push((due, event));
    }
}

type Swim = Foca<FedIdentity, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// SWIM membership of this node plus the ANNOUNCE view.
pub struct Membership {
    foca: Swim,
    rt: Collector,
    /// Due time and insertion order → timer: fired in due order, ties in submission order.
    timers: BTreeMap<(u64, u64), Timer<FedIdentity>>,
    timer_seq: u64,
    announces: HashMap<NodeId, AnnounceInfo>,
    last_seen: HashMap<NodeId, u64>,
    events: Vec<MembershipEvent>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", self.foca.identity())
            .field("members", &self.foca.num_members())
            .field("timers", &self.timers.len())
            .finish()
    }
}

/// foca's WAN defaults for a cluster of `expected_members` (probe every 5 s, 3 s probe RTT).
pub fn wan_config(expected_members: u32) -> Config {
    Config::new_wan(NonZeroU32::new(expected_members.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Membership {
    /// Membership for `identity` with foca `config`; `seed` seeds foca's member choice (random
    /// in production, fixed in simulations).
    pub fn new(identity: FedIdentity, config: Config, seed: u64) -> Membership {
        let foca = Foca::new(identity, config, SmallRng::seed_from_u64(seed), PostcardCodec);
        Membership {
            foca,
            rt: Collector::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            announces: HashMap::new(),
            last_seen: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// Our identity.
    pub fn identity(&self) -> &FedIdentity {
        self.foca.identity()
    }

    /// Asks `seed` (a configured federation peer) to let us in.
    pub fn join(&mut self, seed: FedIdentity, now_ms: u64, metrics: &mut FederationMetrics) {
        self.rt.now_ms = now_ms;
        if self.foca.announce(seed, &mut self.rt).is_err() {
            metrics.membership_errors += 1;
        }
        self.collect(metrics);
    }

    /// A SWIM datagram arrived from a federation link.
    pub fn handle_datagram(&mut self, data: &[u8], now_ms: u64, metrics: &mut FederationMetrics) {
        self.rt.now_ms = now_ms;
        if self.foca.handle_data(data, &mut self.rt).is_err() {
            metrics.membership_errors += 1;
        }
        self.collect(metrics);
    }

    /// Fires every timer due at `now_ms`.
    pub fn advance(&mut self, now_ms: u64, metrics: &mut FederationMetrics) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let ((due, _), timer) = entry.remove_entry();
            // foca computes follow-up delays from when the timer was due, not when we noticed.
            self.rt.now_ms = due.max(self.rt.now_ms).min(now_ms);
            if self.foca.handle_timer(timer, &mut self.rt).is_err() {
                metrics.membership_errors += 1;
            }
            self.collect(metrics);
        }
        self.rt.now_ms = now_ms;
    }

    /// When the next timer is due (the driver's wake-up), if any.
    pub fn next_timer_ms(&self) -> Option<u64> {
        self.timers.keys().next().map(|k| k.0)
    }

    /// Drains what membership produced since the last call.
    pub fn drain_events(&mut self, out: &mut Vec<MembershipEvent>) {
        out.append(&mut self.events);
    }

    fn collect(&mut self, metrics: &mut FederationMetrics) {
        let now = self.rt.now_ms;
        for (due, timer) in self.rt.timers.drain(..) {
            self.timers.insert((due, self.timer_seq), timer);
            self.timer_seq += 1;
        }
        for (to, datagram) in self.rt.sends.drain(..) {
            self.events.push(MembershipEvent::Send { to, datagram });
        }
        for note in self.rt.notes.drain(..) {
            let event = match note {
                OwnedNotification::MemberUp(m) => {
                    self.last_seen.insert(m.id, now);
                    MembershipEvent::Up(m)
                }
                OwnedNotification::MemberDown(m) => MembershipEvent::Down(m),
                OwnedNotification::Rename(old, new) => MembershipEvent::Renamed { old, new },
                OwnedNotification::Rejoin(me) => MembershipEvent::Rejoined(me),
                OwnedNotification::Idle => MembershipEvent::Idle,
                // Defunct cannot happen: our identity renews itself. Active is not news.
                _ => continue,
            };
            self.events.push(event);
        }
        self.update_gauges(metrics);
    }

    fn update_gauges(&self, metrics: &mut FederationMetrics) {
        let (mut alive, mut suspect, mut dead) = (0, 0, 0);
        for m in self.foca.iter_membership_state() {
            match m.state() {
                State::Alive => alive += 1,
                State::Suspect => suspect += 1,
                State::Down => dead += 1,
            }
        }
        metrics.members_alive = alive;
        metrics.members_suspect = suspect;
        metrics.members_dead = dead;
    }

    /// Something arrived from `id` (any federation frame): the operator view's "last seen".
    pub fn seen(&mut self, id: NodeId, now_ms: u64) {
        let at = self.last_seen.entry(id).or_insert(now_ms);
        *at = (*at).max(now_ms);
    }

    /// Keeps an ANNOUNCE if it is newer than the one held. True when kept.
    pub fn on_announce(&mut self, a: &Announce, now_ms: u64) -> bool {
        self.seen(a.node_id, now_ms);
        if self.announces.get(&a.node_id).is_some_and(|held| held.hlc >= a.hlc) {
            return false;
        }
        let info = AnnounceInfo {
            endpoint: a.endpoint,
            region: a.region.clone(),
            load: a.load,
            capacity: a.capacity,
            hlc: a.hlc,
        };
        self.announces.insert(a.node_id, info);
        true
    }

    /// The newest ANNOUNCE of `id`.
    pub fn announce_of(&self, id: &NodeId) -> Option<&AnnounceInfo> {
        self.announces.get(id)
    }

    /// SWIM's judgement of `id` (`None`: not a member we know).
    pub fn state_of(&self, id: &NodeId) -> Option<MemberState> {
        self.foca.iter_membership_state().find(|m| m.id().id == *id).map(|m| convert(m.state()))
    }

    /// True when `id` is alive or suspect: worth forwarding to.
    pub fn is_reachable(&self, id: &NodeId) -> bool {
        matches!(self.state_of(id), Some(MemberState::Alive | MemberState::Suspect))
    }

    /// Members alive or suspect, as foca holds them.
    pub fn active(&self) -> impl Iterator<Item = &FedIdentity> {
        self.foca.iter_members().map(|m| m.id())
    }

    /// The operator view: every member SWIM knows, with its ANNOUNCE, in id order.
    pub fn members(&self) -> Vec<MemberView> {
        let mut rows: Vec<MemberView> = self
            .foca
            .iter_membership_state()
            .map(|m| {
                let id = m.id();
                let announce = self.announces.get(&id.id);
                MemberView {
                    id: id.id,
                    endpoint: announce.map_or(id.endpoint, |a| a.endpoint),
                    region: announce.map(|a| a.region.clone()).unwrap_or_default(),
                    load: announce.map_or(0, |a| a.load),
                    capacity: announce.map_or(0, |a| a.capacity),
                    last_seen_ms: self.last_seen.get(&id.id).copied().unwrap_or(0),
                    state: convert(m.state()),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }
}

fn convert(state: State) -> MemberState {
    match state {
        State::Alive => MemberState::Alive,
        State::Suspect => MemberState::Suspect,
        State::Down => MemberState::Dead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(n: u8) -> FedIdentity {
        FedIdentity {
            id: [n; 32],
            endpoint: SocketAddr::from(([10, 0, 0, n], 4433)),
            incarnation: 0,
        }
    }

    /// Delivers every datagram among `nodes` until none is left, dropping those to or from a
    /// node in `down`; returns the other events as (node, event).
    fn pump(
        nodes: &mut [Membership],
        down: &[u8],
        now_ms: u64,
        m: &mut FederationMetrics,
    ) -> Vec<(u8, MembershipEvent)> {
        let mut seen = Vec::new();
        loop {
            let mut moved = false;
            for i in 0..nodes.len() {
                let mut events = Vec::new();
                nodes[i].drain_events(&mut events);
                let from = nodes[i].identity().id[0];
                for e in events {
                    let MembershipEvent::Send { to, datagram } = e else {
                        seen.push((from, e));
                        continue;
                    };
                    moved = true;
                    if down.contains(&to.id[0]) || down.contains(&from) {
                        continue;
                    }
                    if let Some(n) = nodes.iter_mut().find(|n| n.identity().id == to.id) {
                        n.handle_datagram(&datagram, now_ms, m);
                    }
                }
            }
            if !moved {
                return seen;
            }
        }
    }

    #[test]
    fn three_nodes_join_then_a_silent_one_is_declared_down() {
        let mut m = FederationMetrics::default();
        let mut config = wan_config(3);
        config.probe_period = Duration::from_millis(1_000);
        config.probe_rtt = Duration::from_millis(300);
        config.suspect_to_down_after = Duration::from_millis(3_000);
        let mut nodes: Vec<Membership> =
            (1..=3).map(|n| Membership::new(identity(n), config.clone(), u64::from(n))).collect();
        nodes[1].join(identity(1), 0, &mut m);
        nodes[2].join(identity(1), 0, &mut m);
        pump(&mut nodes, &[], 0, &mut m);
        let mut now = 0;
        while now < 5_000 {
            now += 100;
            for n in nodes.iter_mut() {
                n.advance(now, &mut m);
            }
            pump(&mut nodes, &[], now, &mut m);
        }
        for n in &nodes {
            assert_eq!(n.active().count(), 2, "{:?}", n.members());
        }
        // Node 3 goes silent: its timers stop and its datagrams are lost.
        let mut downs = Vec::new();
        while now < 60_000 {
            now += 100;
            for n in nodes.iter_mut().take(2) {
                n.advance(now, &mut m);
            }
            for (at, e) in pump(&mut nodes, &[3], now, &mut m) {
                if let MembershipEvent::Down(who) = e {
                    downs.push((at, who.id[0]));
                }
            }
        }
        assert!(downs.contains(&(1, 3)) && downs.contains(&(2, 3)), "{downs:?}");
        assert_eq!(nodes[0].state_of(&[3; 32]), Some(MemberState::Dead));
        assert!(nodes[0].is_reachable(&[2; 32]));
    }

    #[test]
    fn newer_announce_replaces_older_only() {
        let mut members = Membership::new(identity(1), wan_config(3), 1);
        let mut a = Announce {
            node_id: [2; 32],
            endpoint: SocketAddr::from(([10, 0, 0, 2], 4433)),
            region: Bytes::from_static(b"eu-west"),
            load: 10,
            capacity: 100,
            hlc: 5,
        };
        assert!(members.on_announce(&a, 1_000));
        a.load = 99;
        a.hlc = 4;
        assert!(!members.on_announce(&a, 1_001));
        assert_eq!(members.announce_of(&[2; 32]).map(|i| i.load), Some(10));
        assert_eq!(members.last_seen.get(&[2; 32]), Some(&1_001));
    }
}
