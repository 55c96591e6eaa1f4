//! Topic, pattern, procedure-name and realm syntax (docs/PROTOCOL.md §5).
//!
//! The types here can only hold valid values: every constructor validates, so the engine and
//! the trie never re-check syntax. Each wraps `bytes::Bytes`, so a topic decoded from a frame
//! is a slice of the receive buffer, not a copy.
//!
//! Rules: 1..=16 segments separated by `.`, 1..=256 bytes in all; a segment is 1..=64 bytes of
//! `A-Z a-z 0-9 _ - : @ = ~ !`. Patterns add the whole-segment wildcards `*` (exactly one
//! segment) and `**` (zero or more segments, anywhere); `**.**` is rejected as non-canonical;
//! `#`, `+` and `>` (other systems' wildcards) are rejected, so nothing ambiguous is accepted.

use std::fmt;

use bytes::Bytes;

use crate::limits::{REALM_LEN_MAX, SEGMENT_LEN_MAX, TOPIC_DEPTH_MAX, TOPIC_LEN_MAX};

/// Why a topic, pattern, name or realm is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TopicError {
    /// Zero bytes.
    Empty,
    /// Longer than the length limit.
    TooLong,
    /// More segments than the depth limit.
    TooDeep,
    /// Two dots in a row, or a leading or trailing dot.
    EmptySegment,
    /// A segment longer than 64 bytes.
    SegmentTooLong,
    /// A byte outside the allowed set.
    InvalidByte(u8),
    /// `*` or `**` where no wildcard is allowed (topics, names, realms).
    WildcardNotAllowed,
    /// `*` or `**` mixed with other bytes in one segment (`a*`, `***`).
    PartialWildcard,
    /// `**.**`: two multi-level wildcards in a row.
    AdjacentMany,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => f.write_str("empty"),
            TopicError::TooLong => write!(f, "longer than {TOPIC_LEN_MAX} bytes"),
            TopicError::TooDeep => write!(f, "more than {TOPIC_DEPTH_MAX} segments"),
            TopicError::EmptySegment => f.write_str("empty segment"),
            TopicError::SegmentTooLong => write!(f, "segment longer than {SEGMENT_LEN_MAX} bytes"),
            TopicError::InvalidByte(b) => write!(f, "invalid byte 0x{b:02x}"),
            TopicError::WildcardNotAllowed => f.write_str("wildcards are not allowed here"),
            TopicError::PartialWildcard => f.write_str("'*' and '**' must be whole segments"),
            TopicError::AdjacentMany => f.write_str("'**.**' is not canonical"),
        }
    }
}

impl std::error::Error for TopicError {}

/// Whether `b` may appear in a segment (wildcards aside).
#[inline]
pub const fn is_segment_byte(b: u8) -> bool {
    matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b':' | b'@' | b'=' | b'~' | b'!')
}

/// Whether each byte value may appear in a segment: one load per byte, where
/// [`is_segment_byte`] is a chain of range compares.
static SEGMENT_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_segment_byte(b as u8);
        b += 1;
    }
    table
};

/// The depth of `bytes` when it is a valid topic with no wildcard, `None` otherwise.
///
/// This is the common case and it runs for every PUBLISH, so it is one pass: a tight scan to
/// the end of each segment (a table load and a well-predicted branch per byte), then one check
/// per segment. (Word-at-a-time variants were measured and were no faster on 20-byte topics:
/// the alphabet is irregular, so each byte still costs a table load.) It does not say what is
/// wrong: callers that get `None` ask [`validate`], which is slower but names the rule that is
/// broken (and accepts wildcards where they are allowed).
#[inline]
fn plain_depth(bytes: &[u8]) -> Option<usize> {
    if bytes.len() > TOPIC_LEN_MAX {
        return None;
    }
    let mut depth = 0;
    let mut start = 0;
    loop {
        let rest = &bytes[start..];
        let len = rest.iter().position(|&b| !SEGMENT_BYTE[b as usize]).unwrap_or(rest.len());
        // `len - 1 >= MAX` (wrapping) is `len == 0 || len > MAX` in one compare; it also
        // rejects empty input, a leading or trailing dot and two dots in a row.
        if len.wrapping_sub(1) >= SEGMENT_LEN_MAX {
            return None;
        }
        depth += 1;
        start += len;
        match bytes.get(start) {
            None => break,
            Some(b'.') => start += 1,
            Some(_) => return None,
        }
    }
    (depth <= TOPIC_DEPTH_MAX).then_some(depth)
}

/// Validates dotted text and returns its depth: the one-pass check first, the rule-naming
/// one when that fails.
#[inline]
fn checked_depth(bytes: &[u8], wildcards: bool) -> Result<usize, TopicError> {
    match plain_depth(bytes) {
        Some(depth) => Ok(depth),
        None => validate(bytes, wildcards, TOPIC_LEN_MAX),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SegmentKind {
    Literal,
    One,
    Many,
}

/// Validates dotted text; `wildcards` allows `*` and `**` segments. Returns the depth.
fn validate(bytes: &[u8], wildcards: bool, len_max: usize) -> Result<usize, TopicError> {
    if bytes.is_empty() {
        return Err(TopicError::Empty);
    }
    if bytes.len() > len_max {
        return Err(TopicError::TooLong);
    }
    let mut depth = 0;
    let mut previous = SegmentKind::Literal;
    for segment in bytes.split(|&b| b == b'.') {
        depth += 1;
        if depth > TOPIC_DEPTH_MAX {
            return Err(TopicError::TooDeep);
        }
        let kind = classify(segment)?;
        if kind != SegmentKind::Literal && !wildcards {
            return Err(TopicError::WildcardNotAllowed);
        }
        if kind == SegmentKind::Many && previous == SegmentKind::Many {
            return Err(TopicError::AdjacentMany);
        }
        previous = kind;
    }
    Ok(depth)
}

fn classify(segment: &[u8]) -> Result<SegmentKind, TopicError> {
    match segment {
        [] => Err(TopicError::EmptySegment),
        b"*" => Ok(SegmentKind::One),
        b"**" => Ok(SegmentKind::Many),
        _ if segment.len() > SEGMENT_LEN_MAX => Err(TopicError::SegmentTooLong),
        _ => {
            for &b in segment {
                if b == b'*' {
                    return Err(TopicError::PartialWildcard);
                }
                if !is_segment_byte(b) {
                    return Err(TopicError::InvalidByte(b));
                }
            }
            Ok(SegmentKind::Literal)
        }
    }
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Bytes);

        impl $name {
            /// The validated bytes.
            #[inline]
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// The validated text (always ASCII).
            #[inline]
            pub fn as_str(&self) -> &str {
                // SAFETY-free: validation admits ASCII only.
                std::str::from_utf8(&self.0).expect("validated ASCII")
            }

            /// The underlying buffer (a slice of the frame it was decoded from).
            #[inline]
            pub fn as_inner(&self) -> &Bytes {
                &self.0
            }

            /// The same text in an allocation of its own. A decoded value is a slice of the
            /// frame's receive buffer and keeps all of that buffer alive: copy what outlives
            /// the frame (a session's realm, a stored subscription pattern).
            pub fn detach(&self) -> Self {
                Self(Bytes::copy_from_slice(&self.0))
            }

            /// Validates a static string; panics when invalid (tests and constants).
            pub fn from_static(s: &'static str) -> Self {
                Self::new(Bytes::from_static(s.as_bytes())).expect("valid static text")
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = TopicError;
            fn from_str(s: &str) -> Result<Self, TopicError> {
                Self::new(Bytes::copy_from_slice(s.as_bytes()))
            }
        }
    };
}

text_type!(
    /// A concrete topic that messages are published to: no wildcards.
    Topic
);
text_type!(
    /// A subscription pattern: a topic that may contain `*` and `**` segments.
    Pattern
);
text_type!(
    /// An RPC procedure name: topic syntax, no wildcards.
    Name
);
text_type!(
    /// A realm (isolated tenant): one segment, 1..=64 bytes.
    Realm
);

impl Topic {
    /// Validates a topic.
    #[inline]
    pub fn new(bytes: Bytes) -> Result<Topic, TopicError> {
        Topic::with_depth(bytes).map(|(t, _)| t)
    }

    /// Validates a topic and returns its depth too (the decoder checks it against its limit
    /// without a second pass).
    #[inline]
    pub fn with_depth(bytes: Bytes) -> Result<(Topic, usize), TopicError> {
        let depth = checked_depth(&bytes, false)?;
        Ok((Topic(bytes), depth))
    }

    /// The segments, in order.
    #[inline]
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.0.split(|&b| b == b'.')
    }

    /// Number of segments.
    pub fn depth(&self) -> usize {
        self.0.iter().filter(|&&b| b == b'.').count() + 1
    }
}

impl Name {
    /// Validates a procedure name.
    #[inline]
    pub fn new(bytes: Bytes) -> Result<Name, TopicError> {
        Name::with_depth(bytes).map(|(n, _)| n)
    }

    /// Validates a procedure name and returns its depth too.
    #[inline]
    pub fn with_depth(bytes: Bytes) -> Result<(Name, usize), TopicError> {
        let depth = checked_depth(&bytes, false)?;
        Ok((Name(bytes), depth))
    }
}

impl Realm {
    /// Validates a realm: a single segment of at most 64 bytes.
    pub fn new(bytes: Bytes) -> Result<Realm, TopicError> {
        if bytes.is_empty() {
            return Err(TopicError::Empty);
        }
        if bytes.len() > REALM_LEN_MAX {
            return Err(TopicError::TooLong);
        }
        for &b in bytes.iter() {
            if b == b'*' {
                return Err(TopicError::WildcardNotAllowed);
            }
            if !is_segment_byte(b) {
                return Err(TopicError::InvalidByte(b));
            }
        }
        Ok(Realm(bytes))
    }
}

/// One segment of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatternSegment<'a> {
    /// Matches exactly this segment.
    Literal(&'a [u8]),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more segments.
    Many,
}

impl Pattern {
    /// Validates a pattern.
    #[inline]
    pub fn new(bytes: Bytes) -> Result<Pattern, TopicError> {
        Pattern::with_depth(bytes).map(|(p, _)| p)
    }

    /// Validates a pattern and returns its depth too.
    #[inline]
    pub fn with_depth(bytes: Bytes) -> Result<(Pattern, usize), TopicError> {
        let depth = checked_depth(&bytes, true)?;
        Ok((Pattern(bytes), depth))
    }

    /// The segments, in order.
    #[inline]
    pub fn segments(&self) -> impl Iterator<Item = PatternSegment<'_>> + Clone {
        self.0.split(|&b| b == b'.').map(|s| match s {
            b"*" => PatternSegment::One,
            b"**" => PatternSegment::Many,
            literal => PatternSegment::Literal(literal),
        })
    }

    /// Number of segments.
    pub fn depth(&self) -> usize {
        self.0.iter().filter(|&&b| b == b'.').count() + 1
    }

    /// True when the pattern has a `*` or `**` segment.
    pub fn has_wildcards(&self) -> bool {
        self.segments().any(|s| !matches!(s, PatternSegment::Literal(_)))
    }

    /// Reference matcher: does this pattern match `topic`? Written for obviousness, not speed
    /// (the trie is the fast path); tests use it as the brute-force oracle.
    pub fn matches(&self, topic: &Topic) -> bool {
        let pattern: Vec<PatternSegment<'_>> = self.segments().collect();
        let topic: Vec<&[u8]> = topic.segments().collect();
        // reachable[j]: the pattern prefix processed so far can consume exactly topic[..j].
        let mut reachable = vec![false; topic.len() + 1];
        reachable[0] = true;
        for segment in pattern {
            let mut next = vec![false; topic.len() + 1];
            for j in 0..=topic.len() {
                if !reachable[j] {
                    continue;
                }
                match segment {
                    PatternSegment::Literal(l) => {
                        if j < topic.len() && topic[j] == l {
                            next[j + 1] = true;
                        }
                    }
                    PatternSegment::One => {
                        if j < topic.len() {
                            next[j + 1] = true;
                        }
                    }
                    PatternSegment::Many => {
                        for slot in next.iter_mut().skip(j) {
                            *slot = true;
                        }
                    }
                }
            }
            reachable = next;
        }
        reachable[topic.len()]
    }
}

impl From<Topic> for Pattern {
    /// Every topic is a pattern that matches exactly itself.
    fn from(t: Topic) -> Pattern {
        Pattern(t.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> Result<Topic, TopicError> {
        s.parse()
    }
    fn pattern(s: &str) -> Result<Pattern, TopicError> {
        s.parse()
    }

    #[test]
    fn topics_accept_the_documented_alphabet() {
        assert!(topic("org.realm.sensor.temp").is_ok());
        assert!(topic("a-b_c:d@e=f~g!h.0").is_ok());
        assert_eq!(topic("").unwrap_err(), TopicError::Empty);
        assert_eq!(topic("a..b").unwrap_err(), TopicError::EmptySegment);
        assert_eq!(topic(".a").unwrap_err(), TopicError::EmptySegment);
        assert_eq!(topic("a.").unwrap_err(), TopicError::EmptySegment);
        assert_eq!(topic("a b").unwrap_err(), TopicError::InvalidByte(b' '));
        assert_eq!(topic("a/b").unwrap_err(), TopicError::InvalidByte(b'/'));
        assert_eq!(topic("a.#").unwrap_err(), TopicError::InvalidByte(b'#'));
        assert_eq!(topic("a.+").unwrap_err(), TopicError::InvalidByte(b'+'));
        assert_eq!(topic("a.>").unwrap_err(), TopicError::InvalidByte(b'>'));
        assert_eq!(topic("a.*").unwrap_err(), TopicError::WildcardNotAllowed);
        assert_eq!(topic("é").unwrap_err(), TopicError::InvalidByte(0xc3));
    }

    #[test]
    fn topic_limits_are_enforced_at_their_bounds() {
        let deepest = vec!["a"; TOPIC_DEPTH_MAX].join(".");
        assert!(topic(&deepest).is_ok());
        assert_eq!(topic(&format!("{deepest}.a")).unwrap_err(), TopicError::TooDeep);
        let seg = "x".repeat(SEGMENT_LEN_MAX);
        assert!(topic(&seg).is_ok());
        assert_eq!(topic(&format!("{seg}x")).unwrap_err(), TopicError::SegmentTooLong);
        let longest =
            [seg.as_str(), seg.as_str(), seg.as_str(), &"y".repeat(TOPIC_LEN_MAX - 3 * 65)]
                .join(".");
        assert_eq!(longest.len(), TOPIC_LEN_MAX);
        assert!(topic(&longest).is_ok());
        assert_eq!(topic(&format!("{longest}z")).unwrap_err(), TopicError::TooLong);
    }

    #[test]
    fn patterns_take_whole_segment_wildcards_only() {
        assert!(pattern("a.*.c").is_ok());
        assert!(pattern("**").is_ok());
        assert!(pattern("**.a.**").is_ok());
        assert_eq!(pattern("a*").unwrap_err(), TopicError::PartialWildcard);
        assert_eq!(pattern("***").unwrap_err(), TopicError::PartialWildcard);
        assert_eq!(pattern("a.**.**").unwrap_err(), TopicError::AdjacentMany);
        assert!(pattern("**.*.**").is_ok());
        assert_eq!(pattern("a.#").unwrap_err(), TopicError::InvalidByte(b'#'));
    }

    #[test]
    fn reference_matcher_follows_the_documented_semantics() {
        let m = |p: &str, t: &str| pattern(p).unwrap().matches(&topic(t).unwrap());
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("a.**", "a"));
        assert!(m("a.**", "a.b.c"));
        assert!(m("**.c", "c"));
        assert!(m("**.c", "a.b.c"));
        assert!(m("a.**.c", "a.c"));
        assert!(m("a.**.c", "a.x.y.c"));
        assert!(!m("a.**.c", "a.x.y"));
        assert!(m("**.b.**", "b.b"));
        assert!(m("*.*", "x.y"));
        assert!(!m("ab", "a"));
        assert!(!m("a", "ab"));
    }

    /// Every string over `alphabet` of up to `max_len` bytes.
    fn all_strings(alphabet: &[u8], max_len: usize) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..max_len {
            last = last
                .iter()
                .flat_map(|s| {
                    alphabet.iter().map(move |&b| {
                        let mut t = s.clone();
                        t.push(b);
                        t
                    })
                })
                .collect();
            out.extend(last.iter().cloned());
        }
        out
    }

    #[test]
    fn fast_check_accepts_exactly_the_valid_wildcard_free_topics_of_up_to_7_bytes() {
        // `plain_depth` is the decoder's path; `validate` states the rules. They must agree on
        // every input, and the fast one may only accept what the rules accept.
        for s in all_strings(b"a.*#Z", 7) {
            let rules = validate(&s, false, TOPIC_LEN_MAX).ok();
            assert_eq!(plain_depth(&s), rules, "{:?}", String::from_utf8_lossy(&s));
        }
    }

    #[test]
    fn fast_check_agrees_with_the_rules_at_the_length_and_depth_bounds() {
        let seg = "x".repeat(SEGMENT_LEN_MAX);
        let cases = [
            seg.clone(),
            format!("{seg}x"),
            format!("a.{seg}"),
            format!("a.{seg}x"),
            format!("{seg}x.a"),
            vec!["a"; TOPIC_DEPTH_MAX].join("."),
            vec!["a"; TOPIC_DEPTH_MAX + 1].join("."),
            [seg.as_str(), &seg, &seg, &"y".repeat(TOPIC_LEN_MAX - 3 * 65)].join("."),
            [seg.as_str(), &seg, &seg, &"y".repeat(TOPIC_LEN_MAX - 3 * 65 + 1)].join("."),
            "sensors.kitchen.temp".into(),
            "sensors.kitchen.é".into(),
            "sensors..temp".into(),
        ];
        for c in cases {
            let rules = validate(c.as_bytes(), false, TOPIC_LEN_MAX).ok();
            assert_eq!(plain_depth(c.as_bytes()), rules, "{c:?}");
        }
    }

    #[test]
    fn detach_copies_out_of_the_buffer_it_was_sliced_from() {
        let frame = Bytes::from(b"xxacme.roomsyy".to_vec());
        let realm = Realm::new(frame.slice(2..6)).unwrap();
        let pattern = Pattern::new(frame.slice(2..11)).unwrap();
        let (r, p) = (realm.detach(), pattern.detach());
        assert_eq!((r.as_str(), p.as_str()), ("acme", "acme.room"));
        let inside = |b: &[u8]| frame.as_ptr_range().contains(&b.as_ptr());
        assert!(inside(realm.as_bytes()) && inside(pattern.as_bytes()), "slices share the frame");
        assert!(!inside(r.as_bytes()) && !inside(p.as_bytes()), "detached copies do not");
    }

    #[test]
    fn with_depth_returns_the_number_of_segments() {
        let (t, depth) = Topic::with_depth(Bytes::from_static(b"a.b.c")).unwrap();
        assert_eq!((t.depth(), depth), (3, 3));
        let (p, depth) = Pattern::with_depth(Bytes::from_static(b"a.**.*")).unwrap();
        assert_eq!((p.depth(), depth), (3, 3));
    }

    #[test]
    fn realms_are_one_segment() {
        assert!("tenant-1".parse::<Realm>().is_ok());
        assert_eq!("a.b".parse::<Realm>().unwrap_err(), TopicError::InvalidByte(b'.'));
        assert_eq!("*".parse::<Realm>().unwrap_err(), TopicError::WildcardNotAllowed);
        assert_eq!("x".repeat(65).parse::<Realm>().unwrap_err(), TopicError::TooLong);
    }
}
