//! Fan-out fixtures: one publish planned onto N local subscribers with the engine's own planner
//! (`fovea_fanout::FanoutPlanner`, the code `Shard::deliver_local` runs), and the cross-shard
//! handoff of a batch through the engine's inbox (`fovea_fanout::Mesh`).
//!
//! Subscribers are spread over four patterns that all match the published topic (exact, two
//! with `*`, one with `**`), and every eighth subscriber holds a second matching subscription,
//! so the planner groups ids into one DELIVER as it does in production; 1,000 patterns that do
//! not match sit beside them. Planning is everything up to the connection's send queue:
//! trie match, grouping per connection, the budget check, the per-connection head, refcount
//! clones of the tail and the queue appends. No I/O.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use fovea_codec::topic::{Pattern, Realm, Topic};
use fovea_fanout::{
    FanoutPlanner, Mesh, PlanLimits, PlanOutcome, Recipient, Recipients, SlowConsumerPolicy,
    SubLeaf,
};
use fovea_trie::{HashSeed, PatternTrie};

use crate::trie::TABLE_SEED;

/// Subscriber counts benched.
pub const SUBSCRIBER_COUNTS: [usize; 5] = [1, 10, 100, 1_000, 10_000];
/// Messages per batch in the handoff bench.
pub const HANDOFF_BATCHES: [usize; 2] = [1, 64];

const TOPIC: &str = "org3.realm17.site2040.device11.temp";
const MATCHING: [&str; 4] = [
    "org3.realm17.site2040.device11.temp",
    "org3.*.site2040.*.temp",
    "org3.realm17.*.device11.*",
    "org3.**",
];
const NOISE_PATTERNS: usize = 1_000;

/// The bench's connection table: recipient `i` is connection `i`.
pub struct Table(pub Vec<Recipient>);

impl Recipients<u32> for Table {
    #[inline]
    fn recipient(&mut self, key: u32) -> Option<&mut Recipient> {
        self.0.get_mut(key as usize)
    }
}

/// One publish ready to plan onto `subscribers` connections.
pub struct FanoutFixture {
    /// Subscribing connections.
    pub subscribers: usize,
    /// The shard's subscriber trie.
    pub trie: PatternTrie<SubLeaf<u32>>,
    /// The published topic.
    pub topic: Topic,
    /// The DELIVER tail, encoded once (64-byte payload).
    pub tail: Bytes,
    /// Connections.
    pub table: Table,
    /// The shard's planner.
    pub planner: FanoutPlanner<u32>,
    /// The flush list.
    pub dirty: Vec<u32>,
    /// Connections to close (disconnect policy).
    pub disconnect: Vec<u32>,
    /// Budget and policy.
    pub limits: PlanLimits,
}

impl FanoutFixture {
    /// A fixture with `subscribers` connections subscribed to the topic.
    pub fn new(subscribers: usize) -> FanoutFixture {
        let mut trie: PatternTrie<SubLeaf<u32>> =
            PatternTrie::with_seed(HashSeed::fixed(TABLE_SEED));
        let patterns: Vec<Pattern> = MATCHING.iter().map(|p| Pattern::from_static(p)).collect();
        for i in 0..subscribers {
            let conn = i as u32;
            trie.entry(&patterns[i % patterns.len()]).push((conn, 1));
            if i % 8 == 7 {
                trie.entry(&patterns[(i + 1) % patterns.len()]).push((conn, 2));
            }
        }
        for i in 0..NOISE_PATTERNS {
            let p = Pattern::new(Bytes::from(format!("org{}.realm{}.site{i}.*", i % 7, i % 31)))
                .expect("valid pattern");
            trie.entry(&p).push((u32::MAX, 1));
        }
        let topic = Topic::from_static(TOPIC);
        let tail = fovea_codec::encode_deliver_tail(Some(7), &topic, &[0xAB; 64]);
        let mut planner = FanoutPlanner::default();
        let mut table = Table((0..subscribers).map(|_| Recipient::default()).collect());
        let limits =
            PlanLimits { send_budget_bytes: 4 << 20, slow_consumer: SlowConsumerPolicy::Drop };
        let (mut dirty, mut disconnect) = (Vec::new(), Vec::new());
        // One warm-up plan: the arena and queues have their steady-state capacity, as on a
        // shard that has been running.
        planner.plan(&trie, &topic, &tail, &mut table, limits, &mut dirty, &mut disconnect);
        let mut fx = FanoutFixture {
            subscribers,
            trie,
            topic,
            tail,
            table,
            planner,
            dirty,
            disconnect,
            limits,
        };
        fx.reset();
        fx
    }

    /// Empties every queue and the flush list (what the flush does between publishes).
    pub fn reset(&mut self) {
        for r in &mut self.table.0 {
            r.data_tx.clear();
            r.dirty = false;
        }
        self.dirty.clear();
        self.disconnect.clear();
    }

    /// Checks a plan's outcome and what it queued: one DELIVER (head + tail) per subscriber.
    pub fn check(&self, outcome: PlanOutcome, plans: usize) {
        let want = PlanOutcome { delivered: self.subscribers as u64, dropped: 0, disconnected: 0 };
        assert_eq!(outcome, want, "{} subscribers", self.subscribers);
        assert_eq!(self.dirty.len(), self.subscribers, "every subscriber on the flush list");
        // Head: type, length, count and one or two small ids: 4 to 8 bytes.
        let (lo, hi) = (plans * (self.tail.len() + 4), plans * (self.tail.len() + 8));
        for r in &self.table.0 {
            let q = r.data_tx.bytes;
            assert!((lo..=hi).contains(&q), "queued {q} bytes, want {lo}..={hi}");
        }
    }
}

/// Plans one publish onto the fixture's subscribers.
#[inline(never)]
pub fn plan_publish(fx: &mut FanoutFixture) -> PlanOutcome {
    let FanoutFixture { trie, topic, tail, table, planner, dirty, disconnect, limits, .. } = fx;
    black_box(planner.plan(
        black_box(&*trie),
        black_box(&*topic),
        black_box(&*tail),
        table,
        *limits,
        dirty,
        disconnect,
    ))
}

/// A stand-in with the fields of the engine's `ShardMsg::Deliver` (the engine enum needs the
/// QUIC connection type, and the bench crate builds without quiche).
pub struct DeliverMsg {
    /// Realm of the publish.
    pub realm: Realm,
    /// Topic.
    pub topic: Topic,
    /// The shared DELIVER tail.
    pub tail: Bytes,
    /// When the publish was decoded.
    pub published_at: Instant,
}

/// Two shards' inboxes and one publish to hand over.
pub struct HandoffFixture {
    /// Messages per batch.
    pub batch: usize,
    /// The node's inboxes.
    pub mesh: std::sync::Arc<Mesh<DeliverMsg>>,
    realm: Realm,
    topic: Topic,
    tail: Bytes,
    at: Instant,
}

impl HandoffFixture {
    /// Inboxes of two shards; batches of `batch` messages.
    pub fn new(batch: usize) -> HandoffFixture {
        let topic = Topic::from_static(TOPIC);
        let tail = fovea_codec::encode_deliver_tail(Some(7), &topic, &[0xAB; 64]);
        HandoffFixture {
            batch,
            mesh: Mesh::new(2, 64),
            realm: Realm::from_static("acme"),
            topic,
            tail,
            at: Instant::now(),
        }
    }
}

/// One batch from shard 0 to shard 1: the sender builds it (refcount clones of realm, topic and
/// tail), pushes it into the inbox, the receiver pops it and consumes the messages. Returns the
/// messages received.
#[inline(never)]
pub fn handoff_batch(fx: &HandoffFixture) -> usize {
    let mut batch = Vec::with_capacity(fx.batch);
    for _ in 0..black_box(fx.batch) {
        batch.push(DeliverMsg {
            realm: fx.realm.clone(),
            topic: fx.topic.clone(),
            tail: fx.tail.clone(),
            published_at: fx.at,
        });
    }
    let inbox = fx.mesh.inbox(1);
    if inbox.push(black_box(batch)).is_err() {
        return 0;
    }
    let mut received = 0;
    while let Some(batch) = inbox.pop() {
        for msg in batch {
            received += black_box(&msg).tail.len().min(1);
        }
    }
    received
}
