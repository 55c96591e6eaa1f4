//! Goal: hostile or broken input gives the error docs/PROTOCOL.md §4.2 documents, never a
//! panic, a wrong frame or a large allocation; incomplete input is "need more bytes", never an
//! error.
//!
//! Method: frames are built byte by byte (type, length varint, body fields written with the
//! codec's `Sink`), each with one defect, and decoded with `decode_frame`; the exact
//! `DecodeError` is asserted. Prefix and cut-body properties run over arbitrary valid frames of
//! every type (strategies in `support`). A counting global allocator proves that hostile list
//! counts and lengths reserve nothing large.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use fovea_codec::frame::{types, Sink};
use fovea_codec::topic::TopicError;
use fovea_codec::varint::VARINT_MAX;
use fovea_codec::{
    decode_frame, decode_frame_bytes, peek_header, DecodeError, ErrorCode, Field, Frame, Limits,
};
use proptest::prelude::*;
use support::any_frame;

// ---------------------------------------------------------------------------------------------
// Allocation watch: counts allocations of 64 MiB or more (nothing legitimate here needs one).

struct CountingAlloc;

const LARGE_ALLOCATION: usize = 64 << 20;
static LARGE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE_ALLOCATION {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, which is the system allocator's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= LARGE_ALLOCATION {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A frame of type `t` around `body`, with a correct length.
fn frame(t: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(t);
    out.w_varint(body.len() as u64);
    out.extend_from_slice(body);
    out
}

/// Builds a body with the codec's field writers.
fn body(write: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut b = BytesMut::new();
    write(&mut b);
    b.to_vec()
}

fn decode_with(bytes: &[u8], limits: &Limits) -> Result<Option<Frame>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    decode_frame(&mut buf, limits)
}

fn decode(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
    decode_with(bytes, &Limits::default())
}

/// Limits so large that only the bytes actually present can stop a decoder.
fn unbounded() -> Limits {
    Limits {
        max_frame_len: usize::MAX,
        max_payload: usize::MAX,
        max_topic_len: 256,
        max_topic_depth: 16,
        max_list_len: usize::MAX,
        max_sync_entries: usize::MAX,
        max_sub_ids: usize::MAX,
        max_string: usize::MAX,
        max_credential: usize::MAX,
    }
}

fn publish_with_topic(topic: &[u8]) -> BytesMut {
    frame(
        types::PUBLISH,
        &body(|b| {
            b.w_u8(0);
            b.w_varint(1);
            b.w_bin(topic);
            b.w_bin(b"x");
        }),
    )
}

fn subscribe_with_pattern(pattern: &[u8]) -> BytesMut {
    frame(
        types::SUBSCRIBE,
        &body(|b| {
            b.w_varint(1);
            b.w_varint(1);
            b.w_bin(pattern);
        }),
    )
}

fn goodbye_with_reason(reason: &[u8]) -> BytesMut {
    frame(
        types::GOODBYE,
        &body(|b| {
            b.w_varint(0);
            b.w_bin(reason);
        }),
    )
}

fn hello_with(realm: &[u8], credential: &[u8], client_name: &[u8]) -> BytesMut {
    frame(
        types::HELLO,
        &body(|b| {
            b.w_varint(1);
            b.w_raw(&[0x11; 32]);
            b.w_u8(0);
            b.w_bin(realm);
            b.w_u8(0);
            b.w_bin(credential);
            b.w_bin(client_name);
        }),
    )
}

fn topic_error(field: Field, e: TopicError) -> Result<Option<Frame>, DecodeError> {
    Err(DecodeError::InvalidTopic(field, e))
}

fn over_limit(field: Field, len: u64, max: u64) -> Result<Option<Frame>, DecodeError> {
    Err(DecodeError::LengthOverLimit { field, len, max })
}

// ---------------------------------------------------------------------------------------------
// The frame header.

#[test]
fn frame_length_beyond_max_frame_len_is_rejected_from_the_header_alone() {
    let max = Limits::default().max_frame_len;
    // Only the header: the body does not exist, and the decoder must not wait for it.
    let mut header = BytesMut::new();
    header.put_u8(types::PUBLISH);
    header.w_varint(max as u64 + 1);
    let want = DecodeError::FrameTooLarge { len: max as u64 + 1, max: max as u64 };
    assert_eq!(decode(&header), Err(want));
    assert_eq!(peek_header(&header, &Limits::default()), Err(want));
    assert_eq!(decode_frame_bytes(&header.clone().freeze(), &Limits::default()), Err(want));
}

#[test]
fn frame_length_at_max_frame_len_waits_for_the_body() {
    let max = Limits::default().max_frame_len;
    let mut header = BytesMut::new();
    header.put_u8(types::PUBLISH);
    header.w_varint(max as u64);
    assert_eq!(decode(&header), Ok(None));
}

#[test]
fn frame_length_limit_is_the_decoders_configured_one() {
    let limits = Limits { max_frame_len: 100, ..Limits::default() };
    let ok = frame(types::PING, &[0; 100]);
    assert!(matches!(decode_with(&ok, &limits), Ok(Some(Frame::Ping(_)))));
    let too_long = frame(types::PING, &[0; 101]);
    assert_eq!(
        decode_with(&too_long, &limits),
        Err(DecodeError::FrameTooLarge { len: 101, max: 100 })
    );
}

#[test]
fn frame_length_of_the_largest_varint_is_too_large_not_an_overflow() {
    let mut header = BytesMut::new();
    header.put_u8(types::DELIVER);
    header.put_u64(VARINT_MAX | 0xc000_0000_0000_0000);
    assert!(
        matches!(decode(&header), Err(DecodeError::FrameTooLarge { len, .. }) if len == VARINT_MAX)
    );
    // Even with no frame limit at all, nothing is reserved for a body that is not there.
    assert_eq!(decode_with(&header, &unbounded()), Ok(None));
}

#[test]
fn extension_frames_are_held_to_max_frame_len_too() {
    let mut header = BytesMut::new();
    header.put_u8(0xA0);
    header.w_varint(Limits::default().max_frame_len as u64 + 1);
    assert!(matches!(decode(&header), Err(DecodeError::FrameTooLarge { .. })));
}

// ---------------------------------------------------------------------------------------------
// Frame types.

#[test]
fn unknown_types_below_0x80_are_rejected_from_the_type_byte_alone() {
    for t in (0u8..types::EXTENSION_MIN).filter(|&t| !types::is_known(t)) {
        assert_eq!(decode(&[t]), Err(DecodeError::UnknownFrameType(t)), "type 0x{t:02x}");
        assert_eq!(decode(&frame(t, b"abc")), Err(DecodeError::UnknownFrameType(t)));
    }
}

#[test]
fn types_from_0x80_up_decode_as_extension_frames_with_their_raw_body() {
    for t in types::EXTENSION_MIN..=u8::MAX {
        let got = decode(&frame(t, &[1, 2, 3]));
        assert_eq!(
            got,
            Ok(Some(Frame::Extension { frame_type: t, body: Bytes::from_static(&[1, 2, 3]) }))
        );
    }
}

#[test]
fn an_extension_frame_is_skipped_and_the_next_frame_decodes() {
    let mut buf = frame(0xEE, b"anything at all, even \xff\xfe");
    buf.extend_from_slice(&frame(types::OK, &[7]));
    let limits = Limits::default();
    assert!(matches!(decode_frame(&mut buf, &limits), Ok(Some(Frame::Extension { .. }))));
    assert!(matches!(decode_frame(&mut buf, &limits), Ok(Some(Frame::Ok(o))) if o.request_id == 7));
    assert!(buf.is_empty());
}

#[test]
fn decode_errors_map_to_the_documented_close_codes() {
    assert_eq!(DecodeError::UnknownFrameType(0x7f).error_code(), ErrorCode::UnknownFrameType);
    assert_eq!(
        DecodeError::FrameTooLarge { len: 2, max: 1 }.error_code(),
        ErrorCode::FrameTooLarge
    );
    for e in [
        DecodeError::Truncated,
        DecodeError::LengthOverLimit { field: Field::Topic, len: 2, max: 1 },
        DecodeError::InvalidTopic(Field::Topic, TopicError::Empty),
        DecodeError::InvalidUtf8(Field::Reason),
        DecodeError::InvalidAddrFamily(5),
        DecodeError::InvalidValue(Field::SubIds),
    ] {
        assert_eq!(e.error_code(), ErrorCode::FrameMalformed, "{e:?}");
        assert!(e.error_code().closes_connection());
    }
}

// ---------------------------------------------------------------------------------------------
// Field lengths.

#[test]
fn publish_rejects_topic_length_beyond_limit() {
    let topic = vec![b'a'; 257];
    assert_eq!(decode(&publish_with_topic(&topic)), over_limit(Field::Topic, 257, 256));
}

#[test]
fn publish_rejects_topic_longer_than_a_lowered_max_topic_len() {
    let limits = Limits { max_topic_len: 10, ..Limits::default() };
    assert!(matches!(decode_with(&publish_with_topic(b"abcdefghij"), &limits), Ok(Some(_))));
    assert_eq!(
        decode_with(&publish_with_topic(b"abcdefghijk"), &limits),
        over_limit(Field::Topic, 11, 10)
    );
}

#[test]
fn topic_length_beyond_the_body_is_truncated() {
    // The topic claims 50 bytes; the frame ends after 3.
    let f = frame(
        types::PUBLISH,
        &body(|b| {
            b.w_u8(0);
            b.w_varint(1);
            b.w_varint(50);
            b.w_raw(b"abc");
        }),
    );
    assert_eq!(decode(&f), Err(DecodeError::Truncated));
}

#[test]
fn payload_length_beyond_the_body_is_truncated() {
    let f = frame(
        types::PUBLISH,
        &body(|b| {
            b.w_u8(0);
            b.w_varint(1);
            b.w_bin(b"t");
            b.w_varint(1000);
            b.w_raw(b"short");
        }),
    );
    assert_eq!(decode(&f), Err(DecodeError::Truncated));
}

#[test]
fn payload_length_beyond_max_payload_is_over_limit_before_the_payload_is_read() {
    let limits = Limits { max_payload: 4, ..Limits::default() };
    let f = frame(
        types::PUBLISH,
        &body(|b| {
            b.w_u8(0);
            b.w_varint(1);
            b.w_bin(b"t");
            b.w_varint(5);
        }),
    );
    assert_eq!(decode_with(&f, &limits), over_limit(Field::Payload, 5, 4));
}

#[test]
fn a_field_length_of_the_largest_varint_is_over_limit_not_an_overflow() {
    let f = frame(
        types::REPLY,
        &body(|b| {
            b.w_varint(1);
            b.w_varint(VARINT_MAX);
        }),
    );
    let max = Limits::default().max_payload as u64;
    assert_eq!(decode(&f), over_limit(Field::Payload, VARINT_MAX, max));
    // With no limit, the bytes that are really there decide: truncated, nothing reserved.
    let before = LARGE_ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(decode_with(&f, &unbounded()), Err(DecodeError::Truncated));
    assert_eq!(LARGE_ALLOCATIONS.load(Ordering::Relaxed), before);
}

#[test]
fn strings_beyond_max_string_are_over_limit() {
    let reason = vec![b'r'; 1025];
    assert_eq!(decode(&goodbye_with_reason(&reason)), over_limit(Field::Reason, 1025, 1024));
    let name = vec![b'n'; 1025];
    assert_eq!(decode(&hello_with(b"acme", b"", &name)), over_limit(Field::ClientName, 1025, 1024));
}

#[test]
fn credentials_beyond_max_credential_are_over_limit() {
    let credential = vec![0u8; 4097];
    assert_eq!(
        decode(&hello_with(b"acme", &credential, b"")),
        over_limit(Field::Credential, 4097, 4096)
    );
    let nonce = frame(types::CHALLENGE, &body(|b| b.w_bin(&[0; 4097])));
    assert_eq!(decode(&nonce), over_limit(Field::Nonce, 4097, 4096));
}

#[test]
fn realm_longer_than_64_bytes_is_over_limit() {
    let realm = vec![b'r'; 65];
    assert_eq!(decode(&hello_with(&realm, b"", b"")), over_limit(Field::Realm, 65, 64));
}

// ---------------------------------------------------------------------------------------------
// List counts.

/// A list frame of type `t` whose count is `count` and that holds no entries.
fn list_frame(t: u8, count: u64) -> BytesMut {
    frame(
        t,
        &body(|b| match t {
            types::DELIVER => b.w_varint(count),
            types::WELCOME => {
                b.w_varint(1);
                b.w_raw(&[0x22; 32]);
                b.w_addr(&"192.0.2.1:1".parse().expect("literal"));
                b.w_varint(count);
            }
            types::SYNC_DELTA => {
                b.w_varint(1);
                b.w_raw(&[0x22; 32]);
                b.w_varint(count);
            }
            _ => {
                b.w_varint(1);
                b.w_varint(count);
            }
        }),
    )
}

const LIST_TYPES: [(u8, Field); 6] = [
    (types::DELIVER, Field::SubIds),
    (types::WELCOME, Field::List),
    (types::NODES, Field::List),
    (types::VALUE, Field::List),
    (types::SYNC_DIGEST, Field::List),
    (types::SYNC_DELTA, Field::List),
];

#[test]
fn list_counts_beyond_their_limit_are_over_limit() {
    let d = Limits::default();
    for (t, field, max) in [
        (types::DELIVER, Field::SubIds, d.max_sub_ids as u64),
        (types::WELCOME, Field::List, 64),
        (types::NODES, Field::List, d.max_list_len as u64),
        (types::VALUE, Field::List, d.max_list_len as u64),
        (types::SYNC_DIGEST, Field::List, d.max_sync_entries as u64),
        (types::SYNC_DELTA, Field::List, d.max_sync_entries as u64),
    ] {
        assert_eq!(decode(&list_frame(t, max + 1)), over_limit(field, max + 1, max), "0x{t:02x}");
    }
}

#[test]
fn list_counts_larger_than_the_input_are_truncated() {
    // Within the limits, but the frame holds no entries at all.
    for (t, _) in LIST_TYPES {
        assert_eq!(decode(&list_frame(t, 3)), Err(DecodeError::Truncated), "0x{t:02x}");
    }
}

#[test]
fn a_list_count_of_2_pow_60_allocates_nothing_large() {
    let before = LARGE_ALLOCATIONS.load(Ordering::Relaxed);
    for (t, field) in LIST_TYPES {
        let f = list_frame(t, 1 << 60);
        // Default limits: the count is over the limit.
        assert!(
            matches!(decode(&f), Err(DecodeError::LengthOverLimit { field: got, len, .. }) if got == field && len == 1 << 60),
            "0x{t:02x}"
        );
        // No count limit: the bytes left decide, before anything is reserved.
        let unlimited = decode_with(&f, &unbounded());
        if t == types::WELCOME {
            // WELCOME's limit of 64 entries is fixed by the protocol, not by `Limits`.
            assert!(matches!(unlimited, Err(DecodeError::LengthOverLimit { .. })));
        } else {
            assert_eq!(unlimited, Err(DecodeError::Truncated), "0x{t:02x}");
        }
    }
    assert_eq!(
        LARGE_ALLOCATIONS.load(Ordering::Relaxed),
        before,
        "a hostile count reserved memory"
    );
}

#[test]
fn deliver_with_zero_sub_ids_is_invalid() {
    let f = frame(
        types::DELIVER,
        &body(|b| {
            b.w_varint(0);
            b.w_u8(0);
            b.w_bin(b"t");
            b.w_bin(b"p");
        }),
    );
    assert_eq!(decode(&f), Err(DecodeError::InvalidValue(Field::SubIds)));
}

#[test]
fn sync_delta_with_an_unknown_kind_or_op_is_invalid() {
    for (kind, op) in [(0u8, 1u8), (3, 1), (1, 0), (2, 3)] {
        let f = frame(
            types::SYNC_DELTA,
            &body(|b| {
                b.w_varint(1);
                b.w_raw(&[0x22; 32]);
                b.w_varint(1);
                b.w_u8(kind);
                b.w_u8(op);
                b.w_u64(1);
                b.w_bin(b"acme");
                b.w_bin(b"a.b");
            }),
        );
        assert_eq!(decode(&f), Err(DecodeError::InvalidValue(Field::Flags)), "{kind} {op}");
    }
}

// ---------------------------------------------------------------------------------------------
// Topics, patterns, names, realms.

#[test]
fn publish_rejects_other_systems_wildcards_in_topics() {
    for (topic, byte) in [(&b"a.#"[..], b'#'), (b"a.+", b'+'), (b"a.>", b'>'), (b"#", b'#')] {
        assert_eq!(
            decode(&publish_with_topic(topic)),
            topic_error(Field::Topic, TopicError::InvalidByte(byte))
        );
    }
}

#[test]
fn publish_rejects_wildcards_in_topics() {
    for topic in [&b"a.*"[..], b"**", b"*.b"] {
        assert_eq!(
            decode(&publish_with_topic(topic)),
            topic_error(Field::Topic, TopicError::WildcardNotAllowed)
        );
    }
}

#[test]
fn publish_rejects_empty_topics_and_empty_segments() {
    assert_eq!(decode(&publish_with_topic(b"")), topic_error(Field::Topic, TopicError::Empty));
    for topic in [&b"a..b"[..], b".a", b"a.", b"."] {
        assert_eq!(
            decode(&publish_with_topic(topic)),
            topic_error(Field::Topic, TopicError::EmptySegment)
        );
    }
}

#[test]
fn publish_rejects_topics_deeper_than_16_segments() {
    let deep = vec!["a"; 17].join(".");
    assert_eq!(
        decode(&publish_with_topic(deep.as_bytes())),
        topic_error(Field::Topic, TopicError::TooDeep)
    );
}

#[test]
fn publish_rejects_topics_deeper_than_a_lowered_max_topic_depth() {
    let limits = Limits { max_topic_depth: 4, ..Limits::default() };
    assert!(matches!(decode_with(&publish_with_topic(b"a.b.c.d"), &limits), Ok(Some(_))));
    assert_eq!(
        decode_with(&publish_with_topic(b"a.b.c.d.e"), &limits),
        topic_error(Field::Topic, TopicError::TooDeep)
    );
}

#[test]
fn topics_longer_than_256_bytes_break_the_syntax_even_under_a_raised_limit() {
    // A decoder whose length limit is above the syntax limit still refuses them.
    let limits = Limits { max_topic_len: 1000, ..Limits::default() };
    let long = ["x".repeat(64), "x".repeat(64), "x".repeat(64), "x".repeat(62)].join(".");
    assert_eq!(long.len(), 257);
    assert_eq!(
        decode_with(&publish_with_topic(long.as_bytes()), &limits),
        topic_error(Field::Topic, TopicError::TooLong)
    );
}

#[test]
fn publish_rejects_segments_longer_than_64_bytes() {
    let seg = "y".repeat(65);
    assert_eq!(
        decode(&publish_with_topic(seg.as_bytes())),
        topic_error(Field::Topic, TopicError::SegmentTooLong)
    );
}

#[test]
fn publish_rejects_bytes_outside_the_alphabet() {
    for (topic, byte) in [(&b"a b"[..], b' '), (b"a/b", b'/'), (b"\xc3\xa9", 0xc3), (b"a\0", 0)] {
        assert_eq!(
            decode(&publish_with_topic(topic)),
            topic_error(Field::Topic, TopicError::InvalidByte(byte))
        );
    }
}

#[test]
fn subscribe_rejects_partial_segment_wildcards() {
    for pattern in [&b"a*"[..], b"*a", b"***", b"a.b*.c"] {
        assert_eq!(
            decode(&subscribe_with_pattern(pattern)),
            topic_error(Field::Pattern, TopicError::PartialWildcard),
            "{}",
            String::from_utf8_lossy(pattern)
        );
    }
}

#[test]
fn subscribe_rejects_adjacent_multi_level_wildcards() {
    for pattern in [&b"**.**"[..], b"a.**.**", b"**.**.b"] {
        assert_eq!(
            decode(&subscribe_with_pattern(pattern)),
            topic_error(Field::Pattern, TopicError::AdjacentMany)
        );
    }
}

#[test]
fn subscribe_rejects_other_systems_wildcards_and_empty_segments() {
    for (pattern, e) in [
        (&b"a.#"[..], TopicError::InvalidByte(b'#')),
        (b"+.a", TopicError::InvalidByte(b'+')),
        (b"a.>", TopicError::InvalidByte(b'>')),
        (b"a..*", TopicError::EmptySegment),
        (b"", TopicError::Empty),
    ] {
        assert_eq!(decode(&subscribe_with_pattern(pattern)), topic_error(Field::Pattern, e));
    }
}

#[test]
fn subscribe_rejects_patterns_deeper_than_16_segments_and_longer_than_the_limit() {
    let deep = vec!["*"; 17].join(".");
    assert_eq!(
        decode(&subscribe_with_pattern(deep.as_bytes())),
        topic_error(Field::Pattern, TopicError::TooDeep)
    );
    let long = vec![b'a'; 257];
    assert_eq!(decode(&subscribe_with_pattern(&long)), over_limit(Field::Pattern, 257, 256));
}

#[test]
fn register_rejects_wildcards_in_procedure_names() {
    let f = frame(
        types::REGISTER,
        &body(|b| {
            b.w_varint(1);
            b.w_bin(b"math.*");
        }),
    );
    assert_eq!(decode(&f), topic_error(Field::Name, TopicError::WildcardNotAllowed));
}

#[test]
fn hello_rejects_realms_that_are_not_one_segment() {
    assert_eq!(
        decode(&hello_with(b"a.b", b"", b"")),
        topic_error(Field::Realm, TopicError::InvalidByte(b'.'))
    );
    assert_eq!(
        decode(&hello_with(b"*", b"", b"")),
        topic_error(Field::Realm, TopicError::WildcardNotAllowed)
    );
    assert_eq!(decode(&hello_with(b"", b"", b"")), topic_error(Field::Realm, TopicError::Empty));
}

// ---------------------------------------------------------------------------------------------
// Text and addresses.

#[test]
fn text_fields_reject_bytes_that_are_not_utf8() {
    // A lone continuation byte, an overlong encoding, a surrogate, a truncated sequence.
    for bad in [&b"\x80"[..], b"\xc0\xaf", b"\xed\xa0\x80", b"ok\xe2\x82"] {
        assert_eq!(decode(&goodbye_with_reason(bad)), Err(DecodeError::InvalidUtf8(Field::Reason)));
        assert_eq!(
            decode(&hello_with(b"acme", b"", bad)),
            Err(DecodeError::InvalidUtf8(Field::ClientName))
        );
        let error = frame(
            types::ERROR,
            &body(|b| {
                b.w_varint(1);
                b.w_varint(0x100);
                b.w_bin(bad);
            }),
        );
        assert_eq!(decode(&error), Err(DecodeError::InvalidUtf8(Field::Message)));
        let call_error = frame(
            types::CALL_ERROR,
            &body(|b| {
                b.w_varint(1);
                b.w_varint(0x110);
                b.w_bin(bad);
            }),
        );
        assert_eq!(decode(&call_error), Err(DecodeError::InvalidUtf8(Field::Message)));
    }
}

#[test]
fn binary_fields_accept_bytes_that_are_not_utf8() {
    let f = frame(
        types::REPLY,
        &body(|b| {
            b.w_varint(1);
            b.w_bin(b"\xff\xfe\x80");
        }),
    );
    assert!(
        matches!(decode(&f), Ok(Some(Frame::Reply(r))) if r.payload.as_ref() == b"\xff\xfe\x80")
    );
}

#[test]
fn addresses_with_a_family_other_than_4_or_6_are_invalid() {
    for family in [0u8, 5, 7, 46, 255] {
        let f = frame(types::OBSERVED_ADDR, &[family, 1, 2, 3, 4, 0, 80]);
        assert_eq!(decode(&f), Err(DecodeError::InvalidAddrFamily(family)));
    }
    let nodes = frame(
        types::NODES,
        &body(|b| {
            b.w_varint(1);
            b.w_varint(1);
            b.w_raw(&[0x66; 32]);
            b.w_raw(&[5, 1, 2, 3, 4, 0, 80]);
        }),
    );
    assert_eq!(decode(&nodes), Err(DecodeError::InvalidAddrFamily(5)));
}

#[test]
fn addresses_cut_short_are_truncated() {
    assert_eq!(
        decode(&frame(types::OBSERVED_ADDR, &[4, 1, 2, 3, 4, 0])),
        Err(DecodeError::Truncated)
    );
    assert_eq!(decode(&frame(types::OBSERVED_ADDR, &[6, 0, 0, 0, 0])), Err(DecodeError::Truncated));
}

// ---------------------------------------------------------------------------------------------
// Incomplete input, for every message type.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn every_strict_prefix_of_a_frame_is_incomplete_not_an_error(frame in any_frame()) {
        let bytes = frame.to_bytes();
        for len in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..len]);
            prop_assert_eq!(decode_frame(&mut buf, &Limits::default()), Ok(None), "prefix {}", len);
            prop_assert_eq!(buf.len(), len, "an incomplete frame must not be consumed");
            prop_assert_eq!(
                decode_frame_bytes(&bytes.slice(..len), &Limits::default()),
                Ok(None)
            );
        }
    }

    #[test]
    fn a_body_cut_short_inside_its_fields_is_truncated(
        frame in any_frame().prop_filter("extension bodies have no fields", |f| {
            f.frame_type() < types::EXTENSION_MIN
        }),
    ) {
        // The header is honest about a body that lacks its last bytes.
        let bytes = frame.to_bytes();
        let header = frame.encoded_len() - frame.body_len();
        let body = &bytes[header..];
        for cut in 0..body.len() {
            let f = self::frame(frame.frame_type(), &body[..cut]);
            prop_assert_eq!(decode(&f), Err(DecodeError::Truncated), "body cut to {}", cut);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_consume_only_whole_frames(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        let limits = Limits::default();
        loop {
            let before = buf.len();
            match decode_frame(&mut buf, &limits) {
                Ok(Some(_)) => prop_assert!(buf.len() < before),
                Ok(None) | Err(_) => {
                    break;
                }
            }
        }
    }
}
