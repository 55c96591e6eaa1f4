//! Goal: every valid frame survives encode → decode unchanged however the bytes are cut up on
//! the way, the hot-path encoders produce exactly the generic encoding, and the reference topic
//! matcher means what docs/PROTOCOL.md §5.3 says.
//!
//! Method: proptest strategies build arbitrary *valid* values of every message type (topics,
//! patterns, realms, names, addresses, byte strings, varints of every length class); each
//! property encodes them with the codec and decodes them back, whole, split at every byte
//! position, or one byte at a time. The matcher is compared with a naive recursive matcher
//! written here from the doc's definition. Case counts are modest: the machine has 2 cores.

mod support;

use bytes::{BufMut, BytesMut};
use fovea_codec::frame::{types, Sink};
use fovea_codec::{
    decode_frame, decode_frame_bytes, encode_deliver_head, encode_deliver_tail, encode_publish,
    Frame, Limits, Pattern, Topic,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use support::{
    any_frame, covered_types, deliver, frame_of, pattern_segments, pattern_text, publish, segment,
    Seg,
};

// ---------------------------------------------------------------------------------------------
// Helpers.

fn concat(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        f.encode(&mut out);
    }
    out.to_vec()
}

/// Decodes every whole frame in `buf`; panics on a decoding error.
fn drain(buf: &mut BytesMut, out: &mut Vec<Frame>) {
    let limits = Limits::default();
    while let Some(f) = decode_frame(buf, &limits).expect("valid bytes decode") {
        out.push(f);
    }
}

// ---------------------------------------------------------------------------------------------
// Properties.

#[test]
fn strategies_cover_every_message_type() {
    let mut runner = TestRunner::deterministic();
    for t in covered_types() {
        let frame = frame_of(t).new_tree(&mut runner).expect("strategy yields a value").current();
        if t >= types::EXTENSION_MIN {
            assert!(frame.frame_type() >= types::EXTENSION_MIN);
        } else {
            assert_eq!(frame.frame_type(), t, "strategy for 0x{t:02x} builds another type");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn every_valid_frame_decodes_to_itself(frame in any_frame()) {
        let bytes = frame.to_bytes();
        prop_assert_eq!(bytes.len(), frame.encoded_len());
        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = decode_frame(&mut buf, &Limits::default());
        prop_assert_eq!(decoded, Ok(Some(frame.clone())));
        prop_assert!(buf.is_empty(), "decode_frame consumes exactly one frame");
        let (again, used) = decode_frame_bytes(&bytes, &Limits::default())
            .expect("valid")
            .expect("whole frame");
        prop_assert_eq!(again, frame);
        prop_assert_eq!(used, bytes.len());
    }

    #[test]
    fn bytes_after_the_known_fields_are_ignored(
        frame in any_frame().prop_filter("extensions have no known fields", |f| {
            f.frame_type() < types::EXTENSION_MIN
        }),
        extra in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let bytes = frame.to_bytes();
        let header = frame.encoded_len() - frame.body_len();
        let mut longer = BytesMut::new();
        longer.put_u8(frame.frame_type());
        longer.w_varint((frame.body_len() + extra.len()) as u64);
        longer.extend_from_slice(&bytes[header..]);
        longer.extend_from_slice(&extra);
        let decoded = decode_frame(&mut longer, &Limits::default());
        prop_assert_eq!(decoded, Ok(Some(frame)));
        prop_assert!(longer.is_empty());
    }

    #[test]
    fn a_frame_length_in_a_longer_varint_form_decodes_the_same(frame in any_frame()) {
        let bytes = frame.to_bytes();
        let header = frame.encoded_len() - frame.body_len();
        let mut long = BytesMut::new();
        long.put_u8(frame.frame_type());
        long.put_u64(frame.body_len() as u64 | 0xc000_0000_0000_0000);
        long.extend_from_slice(&bytes[header..]);
        prop_assert_eq!(decode_frame(&mut long, &Limits::default()), Ok(Some(frame)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn frames_split_at_every_point_decode_to_the_same_frames(
        frames in prop::collection::vec(any_frame(), 1..4),
    ) {
        let bytes = concat(&frames);
        for split in 0..=bytes.len() {
            let mut buf = BytesMut::from(&bytes[..split]);
            let mut got = Vec::new();
            drain(&mut buf, &mut got);
            buf.extend_from_slice(&bytes[split..]);
            drain(&mut buf, &mut got);
            prop_assert!(buf.is_empty(), "split at {split}: bytes left over");
            prop_assert_eq!(&got, &frames, "split at {}", split);
        }
    }

    #[test]
    fn frames_fed_one_byte_at_a_time_decode_to_the_same_frames(
        frames in prop::collection::vec(any_frame(), 1..6),
    ) {
        let bytes = concat(&frames);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &bytes {
            buf.put_u8(b);
            drain(&mut buf, &mut got);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn deliver_head_then_tail_is_the_deliver_frame(d in deliver()) {
        let tail = encode_deliver_tail(d.message_id, &d.topic, &d.payload);
        let mut fast = BytesMut::new();
        encode_deliver_head(&d.sub_ids, tail.len(), &mut fast);
        fast.extend_from_slice(&tail);
        let generic = Frame::Deliver(d).to_bytes();
        prop_assert_eq!(fast.as_ref(), generic.as_ref());
    }

    #[test]
    fn encode_publish_is_the_publish_frame(p in publish()) {
        let mut fast = BytesMut::new();
        encode_publish(p.request_id, p.message_id, &p.topic, &p.payload, &mut fast);
        let generic = Frame::Publish(p).to_bytes();
        prop_assert_eq!(fast.as_ref(), generic.as_ref());
    }

    #[test]
    fn encoders_append_after_existing_bytes(p in publish(), d in deliver()) {
        // The hot path writes into shared buffers: nothing already there may be disturbed.
        let mut out = BytesMut::from(&b"prefix"[..]);
        encode_publish(p.request_id, p.message_id, &p.topic, &p.payload, &mut out);
        let tail = encode_deliver_tail(d.message_id, &d.topic, &d.payload);
        encode_deliver_head(&d.sub_ids, tail.len(), &mut out);
        out.extend_from_slice(&tail);
        prop_assert_eq!(&out[..6], b"prefix");
        let _ = out.split_to(6);
        let mut got = Vec::new();
        drain(&mut out, &mut got);
        prop_assert_eq!(got, vec![Frame::Publish(p), Frame::Deliver(d)]);
    }
}

// ---------------------------------------------------------------------------------------------
// The matcher.

/// Matching straight from the definition (docs/PROTOCOL.md §5.3): a literal consumes one equal
/// segment, `*` any one segment, `**` any number of segments, and the whole topic must be
/// consumed. Exponential in the worst case; fine for the small inputs below.
fn naive_matches(pattern: &[Seg], topic: &[&str]) -> bool {
    match pattern.split_first() {
        None => topic.is_empty(),
        Some((Seg::Lit(l), rest)) => {
            topic.first() == Some(&l.as_str()) && naive_matches(rest, &topic[1..])
        }
        Some((Seg::One, rest)) => !topic.is_empty() && naive_matches(rest, &topic[1..]),
        Some((Seg::Many, rest)) => (0..=topic.len()).any(|k| naive_matches(rest, &topic[k..])),
    }
}

/// Parses pattern text back into segments (for the naive matcher).
fn segs_of(p: &Pattern) -> Vec<Seg> {
    p.as_str()
        .split('.')
        .map(|s| match s {
            "*" => Seg::One,
            "**" => Seg::Many,
            l => Seg::Lit(l.to_string()),
        })
        .collect()
}

/// A tiny alphabet so that literals collide often and matches are common.
fn small_literal() -> BoxedStrategy<String> {
    prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("ab".to_string())].boxed()
}

fn small_topic() -> impl Strategy<Value = Topic> {
    prop::collection::vec(small_literal(), 1..=7)
        .prop_map(|segs| segs.join(".").parse::<Topic>().expect("valid"))
}

fn small_pattern() -> impl Strategy<Value = Pattern> {
    pattern_segments(small_literal(), 6)
        .prop_map(|segs| pattern_text(&segs).parse::<Pattern>().expect("valid"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn reference_matcher_agrees_with_a_naive_recursive_matcher(
        pattern in small_pattern(),
        topic in small_topic(),
    ) {
        let topic_segs: Vec<&str> = topic.as_str().split('.').collect();
        let want = naive_matches(&segs_of(&pattern), &topic_segs);
        prop_assert_eq!(pattern.matches(&topic), want, "{} vs {}", pattern, topic);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_topic_as_a_pattern_matches_only_itself(a in small_topic(), b in small_topic()) {
        let p = Pattern::from(a.clone());
        prop_assert!(p.matches(&a));
        prop_assert_eq!(p.matches(&b), a == b);
    }

    #[test]
    fn a_pattern_of_full_width_segments_matches_the_topic_it_was_built_from(
        segs in prop::collection::vec(segment(), 1..=8),
        wild in prop::collection::vec(0u8..3, 8),
    ) {
        // Replace some segments by `*` or `**`: the pattern must still match the topic.
        // (Four 64-byte segments already exceed the 256-byte limit: such draws are skipped.)
        let text = segs.join(".");
        prop_assume!(text.len() <= fovea_codec::limits::TOPIC_LEN_MAX);
        let topic: Topic = text.parse().expect("valid");
        let pattern: Vec<Seg> = segs
            .iter()
            .zip(&wild)
            .map(|(s, w)| match w {
                0 => Seg::Lit(s.clone()),
                1 => Seg::One,
                _ => Seg::Many,
            })
            .collect();
        let pattern: Pattern = pattern_text(&pattern).parse().expect("valid");
        prop_assert!(pattern.matches(&topic), "{} vs {}", pattern, topic);
    }
}
