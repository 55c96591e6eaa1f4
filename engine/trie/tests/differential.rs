//! Property test: the trie (and its match cache) against brute force.
//! Goal: any sequence of subscribe / unsubscribe / publish gives the same matches, each leaf once.
//! Method: tiny segment alphabets and short topics so that patterns collide, share prefixes and
//! overlap through `*` and `**`; `model::Differential` compares and checks invariants each step.

use fovea_codec::topic::{Pattern, Topic};
use fovea_trie::model::{Differential, Op};
use proptest::prelude::*;

/// Pattern segments: two or three literals plus the wildcards, weighted towards literals.
fn pattern_segment(alphabet: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => proptest::sample::select(alphabet),
        1 => Just("*"),
        1 => Just("**"),
    ]
}

fn pattern(alphabet: &'static [&'static str]) -> impl Strategy<Value = Pattern> {
    proptest::collection::vec(pattern_segment(alphabet), 1..6).prop_map(|mut segments| {
        // `**.**` is not canonical and the codec rejects it; fold adjacent pairs into one.
        segments.dedup_by(|a, b| *a == "**" && *b == "**");
        segments.join(".").parse().expect("generated pattern is valid")
    })
}

fn topic(alphabet: &'static [&'static str]) -> impl Strategy<Value = Topic> {
    proptest::collection::vec(proptest::sample::select(alphabet), 1..7)
        .prop_map(|segments| segments.join(".").parse().expect("generated topic is valid"))
}

/// A pool of patterns per case, then operations that pick from it, so unsubscribes mostly hit.
fn ops(alphabet: &'static [&'static str]) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(pattern(alphabet), 1..12).prop_flat_map(move |pool| {
        let op = prop_oneof![
            3 => proptest::sample::select(pool.clone()).prop_map(Op::Subscribe),
            2 => proptest::sample::select(pool).prop_map(Op::Unsubscribe),
            3 => topic(alphabet).prop_map(Op::Publish),
        ];
        proptest::collection::vec(op, 1..80)
    })
}

fn run(ops: &[Op]) {
    let mut harness = Differential::new();
    for op in ops {
        harness.apply(op);
    }
    // Drain: after unsubscribing everything the trie must be back to a bare root.
    for op in ops {
        if let Op::Subscribe(p) = op {
            harness.apply(&Op::Unsubscribe(p.clone()));
        }
    }
    assert!(harness.trie().is_empty());
    assert_eq!(harness.trie().node_count(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn trie_agrees_with_brute_force_on_two_letters(ops in ops(&["a", "b"])) {
        run(&ops);
    }

    #[test]
    fn trie_agrees_with_brute_force_on_three_letters(ops in ops(&["a", "b", "c"])) {
        run(&ops);
    }
}
