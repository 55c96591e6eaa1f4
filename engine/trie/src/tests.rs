//! Unit tests of the trie and the match cache.
//! Goal: each wildcard rule, dedup, pruning and cache invalidation, on hand-picked cases.
//! Method: leaves hold their pattern's text, so a match result is a sorted list of patterns.

use fovea_codec::topic::{Pattern, Topic};

use crate::{Lookup, MatchCache, PatternTrie};

fn pattern(text: &str) -> Pattern {
    text.parse().unwrap_or_else(|e| panic!("pattern {text:?} rejected: {e:?}"))
}

fn topic(text: &str) -> Topic {
    text.parse().unwrap_or_else(|e| panic!("topic {text:?} rejected: {e:?}"))
}

/// A trie whose leaves hold their own pattern text and a visit counter.
fn trie_of(patterns: &[&str]) -> PatternTrie<String> {
    let mut trie = PatternTrie::new();
    for &p in patterns {
        *trie.entry(&pattern(p)) = p.to_owned();
    }
    trie.check_invariants();
    trie
}

fn matches(trie: &PatternTrie<String>, t: &str) -> Vec<String> {
    let mut found = Vec::new();
    trie.for_each_match(&topic(t), |leaf| found.push(leaf.clone()));
    found.sort();
    found
}

fn matches_of(patterns: &[&str], t: &str) -> Vec<String> {
    matches(&trie_of(patterns), t)
}

fn strings(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn literal_pattern_matches_only_the_same_topic() {
    let trie = trie_of(&["a.b.c"]);
    assert_eq!(matches(&trie, "a.b.c"), strings(&["a.b.c"]));
    assert!(matches(&trie, "a.b").is_empty());
    assert!(matches(&trie, "a.b.c.d").is_empty());
    assert!(matches(&trie, "a.b.x").is_empty());
    assert!(matches(&trie, "x").is_empty());
}

#[test]
fn literal_segments_match_whole_segments_only() {
    // "ab" and "a.b" share bytes but not segments.
    let trie = trie_of(&["ab.c", "a.bc"]);
    assert_eq!(matches(&trie, "ab.c"), strings(&["ab.c"]));
    assert_eq!(matches(&trie, "a.bc"), strings(&["a.bc"]));
    assert!(matches(&trie, "a.b.c").is_empty());
    assert!(matches(&trie, "abc").is_empty());
}

#[test]
fn star_matches_exactly_one_segment_at_start_middle_end() {
    assert_eq!(matches_of(&["*.b.c"], "a.b.c"), strings(&["*.b.c"]));
    assert!(matches_of(&["*.b.c"], "b.c").is_empty());
    assert!(matches_of(&["*.b.c"], "x.a.b.c").is_empty());

    assert_eq!(matches_of(&["a.*.c"], "a.b.c"), strings(&["a.*.c"]));
    assert!(matches_of(&["a.*.c"], "a.c").is_empty());
    assert!(matches_of(&["a.*.c"], "a.b.b.c").is_empty());

    assert_eq!(matches_of(&["a.*"], "a.b"), strings(&["a.*"]));
    assert!(matches_of(&["a.*"], "a").is_empty());
    assert!(matches_of(&["a.*"], "a.b.c").is_empty());

    assert_eq!(matches_of(&["*"], "a"), strings(&["*"]));
    assert!(matches_of(&["*"], "a.b").is_empty());
}

#[test]
fn double_star_at_end_matches_zero_or_more_segments() {
    let trie = trie_of(&["a.**"]);
    for t in ["a", "a.b", "a.b.c", "a.b.c.d.e.f"] {
        assert_eq!(matches(&trie, t), strings(&["a.**"]), "topic {t}");
    }
    assert!(matches(&trie, "b").is_empty());
    assert!(matches(&trie, "b.a").is_empty());
}

#[test]
fn double_star_at_start_matches_zero_or_more_segments() {
    let trie = trie_of(&["**.z"]);
    for t in ["z", "a.z", "a.b.c.z"] {
        assert_eq!(matches(&trie, t), strings(&["**.z"]), "topic {t}");
    }
    assert!(matches(&trie, "z.a").is_empty());
    assert!(matches(&trie, "a").is_empty());
}

#[test]
fn double_star_in_middle_matches_zero_or_more_segments() {
    let trie = trie_of(&["a.**.z"]);
    for t in ["a.z", "a.b.z", "a.b.c.d.z", "a.z.z"] {
        assert_eq!(matches(&trie, t), strings(&["a.**.z"]), "topic {t}");
    }
    for t in ["a", "z", "a.z.b", "b.a.z"] {
        assert!(matches(&trie, t).is_empty(), "topic {t}");
    }
}

#[test]
fn lone_double_star_matches_every_topic() {
    let trie = trie_of(&["**"]);
    for t in ["a", "a.b", "a.b.c.d.e.f.g.h"] {
        assert_eq!(matches(&trie, t), strings(&["**"]), "topic {t}");
    }
}

#[test]
fn several_double_stars_report_each_leaf_once() {
    // Two ways to split "b.b" over `**.b.**`, and three over `**.b.**.b.**` with "b.b.b".
    let trie = trie_of(&["**.b.**", "**.b.**.b.**", "**.*.**"]);
    let mut visits = Vec::new();
    trie.for_each_match(&topic("b.b.b"), |leaf| visits.push(leaf.clone()));
    visits.sort();
    assert_eq!(visits, strings(&["**.b.**", "**.b.**.b.**", "**.*.**"]));
    assert_eq!(matches(&trie, "b.b"), strings(&["**.b.**", "**.b.**.b.**", "**.*.**"]));
    assert_eq!(matches(&trie, "a.b"), strings(&["**.b.**", "**.*.**"]));
    assert_eq!(matches(&trie, "a"), strings(&["**.*.**"]));
}

#[test]
fn star_and_double_star_combine() {
    let trie = trie_of(&["*.**", "**.*", "*.*.**", "a.*.**.c"]);
    assert_eq!(matches(&trie, "a"), strings(&["*.**", "**.*"]));
    assert_eq!(matches(&trie, "a.b"), strings(&["*.**", "**.*", "*.*.**"]));
    assert_eq!(matches(&trie, "a.b.c"), strings(&["*.**", "**.*", "*.*.**", "a.*.**.c"]));
    assert_eq!(matches(&trie, "a.c"), strings(&["*.**", "**.*", "*.*.**"]));
}

#[test]
fn exact_and_wildcard_overlap_are_both_reported() {
    let trie = trie_of(&["a.b.c", "a.*.c", "a.**", "**", "*.b.*", "a.b.d"]);
    assert_eq!(matches(&trie, "a.b.c"), strings(&["a.b.c", "a.*.c", "a.**", "**", "*.b.*"]));
}

#[test]
fn entry_returns_the_same_leaf_for_the_same_pattern() {
    let mut trie: PatternTrie<u32> = PatternTrie::new();
    *trie.entry(&pattern("a.*.c")) += 1;
    *trie.entry(&pattern("a.*.c")) += 1;
    assert_eq!(trie.len(), 1);
    assert_eq!(trie.get_mut(&pattern("a.*.c")).copied(), Some(2));
    assert_eq!(trie.get_mut(&pattern("a.*")), None);
    assert_eq!(trie.get_mut(&pattern("a.b.c")), None);
}

#[test]
fn remove_prunes_every_node_back_to_the_root() {
    let patterns = ["a.b.c", "a.b", "a.*.c", "a.**", "**.c", "*.b.**.d", "x.y.z.w"];
    let mut trie = trie_of(&patterns);
    assert_eq!(trie.len(), patterns.len());
    assert!(trie.node_count() > patterns.len());
    for (removed, p) in patterns.iter().enumerate() {
        assert!(trie.remove_with(&pattern(p), |_| true), "pattern {p}");
        assert!(!trie.remove_with(&pattern(p), |_| true), "pattern {p} removed twice");
        trie.check_invariants();
        assert_eq!(trie.len(), patterns.len() - removed - 1);
        assert!(matches(&trie, "a.b.c").iter().all(|m| m != p));
    }
    assert!(trie.is_empty());
    assert_eq!(trie.node_count(), 1, "only the root is left");
    assert_eq!(trie.segments.len(), 0, "no segment stays interned");
}

#[test]
fn remove_keeps_prefixes_that_other_patterns_still_use() {
    let mut trie = trie_of(&["a.b.c", "a.b"]);
    assert!(trie.remove_with(&pattern("a.b.c"), |_| true));
    trie.check_invariants();
    assert_eq!(matches(&trie, "a.b"), strings(&["a.b"]));
    assert_eq!(trie.node_count(), 3);
}

#[test]
fn remove_with_false_keeps_the_leaf() {
    let mut trie: PatternTrie<u32> = PatternTrie::new();
    *trie.entry(&pattern("a.**")) = 2;
    let decrement = |count: &mut u32| {
        *count -= 1;
        *count == 0
    };
    assert!(!trie.remove_with(&pattern("a.**"), decrement));
    assert_eq!(trie.len(), 1);
    assert!(trie.remove_with(&pattern("a.**"), decrement));
    assert!(trie.is_empty());
    assert_eq!(trie.node_count(), 1);
}

#[test]
fn remove_of_an_absent_pattern_does_not_call_the_closure() {
    let mut trie = trie_of(&["a.b"]);
    let mut called = false;
    assert!(!trie.remove_with(&pattern("a"), |_| {
        called = true;
        true
    }));
    assert!(!trie.remove_with(&pattern("a.b.c"), |_| {
        called = true;
        true
    }));
    assert!(!called);
    assert_eq!(trie.remove(&pattern("a.b")), Some("a.b".to_owned()));
    assert_eq!(trie.node_count(), 1);
}

#[test]
fn freed_slots_are_reused() {
    let mut trie = trie_of(&["a.b.c.d"]);
    let slots = trie.nodes.capacity();
    for _ in 0..10 {
        trie.remove(&pattern("a.b.c.d"));
        *trie.entry(&pattern("x.y.z.w")) = "x.y.z.w".into();
        trie.remove(&pattern("x.y.z.w"));
        *trie.entry(&pattern("a.b.c.d")) = "a.b.c.d".into();
    }
    assert_eq!(trie.nodes.capacity(), slots);
    trie.check_invariants();
}

#[test]
fn generation_moves_on_insert_and_remove_only() {
    let mut trie: PatternTrie<u32> = PatternTrie::new();
    let g0 = trie.generation();
    trie.entry(&pattern("a"));
    let g1 = trie.generation();
    assert_ne!(g0, g1);
    *trie.entry(&pattern("a")) += 1;
    *trie.get_mut(&pattern("a")).unwrap() += 1;
    assert_eq!(trie.generation(), g1, "editing a leaf is not a pattern change");
    trie.remove(&pattern("a"));
    assert_ne!(trie.generation(), g1);
}

#[test]
fn match_may_reenter_the_trie() {
    let trie = trie_of(&["a.*", "*.b"]);
    let mut inner = 0;
    trie.for_each_match(&topic("a.b"), |_| {
        trie.for_each_match(&topic("a.b"), |_| inner += 1);
    });
    assert_eq!(inner, 4);
}

#[test]
fn cache_hits_after_a_miss_and_agrees_with_the_trie() {
    let trie = trie_of(&["a.*", "a.b", "**"]);
    let mut cache = MatchCache::new(8, 8);
    let mut first = Vec::new();
    assert_eq!(cache.for_each_match(&trie, &topic("a.b"), |l| first.push(l.clone())), Lookup::Miss);
    let mut second = Vec::new();
    assert_eq!(cache.for_each_match(&trie, &topic("a.b"), |l| second.push(l.clone())), Lookup::Hit);
    first.sort();
    second.sort();
    assert_eq!(first, matches(&trie, "a.b"));
    assert_eq!(second, first);
    assert_eq!((cache.hits(), cache.misses()), (1, 1));
}

#[test]
fn cache_is_invalidated_by_insert_and_remove() {
    let mut trie = trie_of(&["a.*"]);
    let mut cache = MatchCache::new(8, 8);
    let collect = |cache: &mut MatchCache, trie: &PatternTrie<String>| {
        let mut found = Vec::new();
        let lookup = cache.for_each_match(trie, &topic("a.b"), |l| found.push(l.clone()));
        found.sort();
        (lookup, found)
    };
    assert_eq!(collect(&mut cache, &trie), (Lookup::Miss, strings(&["a.*"])));
    *trie.entry(&pattern("a.b")) = "a.b".into();
    assert_eq!(collect(&mut cache, &trie), (Lookup::Miss, strings(&["a.*", "a.b"])));
    assert_eq!(collect(&mut cache, &trie), (Lookup::Hit, strings(&["a.*", "a.b"])));
    trie.remove(&pattern("a.*"));
    assert_eq!(collect(&mut cache, &trie), (Lookup::Miss, strings(&["a.b"])));
}

#[test]
fn cache_evicts_to_stay_within_its_bound() {
    let trie = trie_of(&["**"]);
    let mut cache = MatchCache::new(4, 8);
    for i in 0..100 {
        cache.for_each_match(&trie, &topic(&format!("t{i}")), |_| {});
        assert!(cache.len() <= 4);
    }
    // A topic hit repeatedly keeps its second chance while others stream past.
    cache.for_each_match(&trie, &topic("hot"), |_| {});
    for i in 0..20 {
        assert_eq!(cache.for_each_match(&trie, &topic("hot"), |_| {}), Lookup::Hit, "round {i}");
        cache.for_each_match(&trie, &topic(&format!("cold{i}")), |_| {});
    }
}

#[test]
fn cache_skips_topics_with_too_many_matches() {
    let trie = trie_of(&["**", "a.**", "*.b", "a.b"]);
    let mut cache = MatchCache::new(4, 3);
    let mut count = 0;
    assert_eq!(cache.for_each_match(&trie, &topic("a.b"), |_| count += 1), Lookup::Miss);
    assert_eq!(count, 4, "all matches are still reported");
    assert_eq!(cache.for_each_match(&trie, &topic("a.b"), |_| {}), Lookup::Miss);
    assert!(cache.is_empty());
}

#[test]
fn cache_used_with_another_trie_starts_over() {
    let one = trie_of(&["a"]);
    let two = trie_of(&["a", "*"]);
    let mut cache = MatchCache::new(4, 4);
    cache.for_each_match(&one, &topic("a"), |_| {});
    let mut count = 0;
    assert_eq!(cache.for_each_match(&two, &topic("a"), |_| count += 1), Lookup::Miss);
    assert_eq!(count, 2);
}

#[test]
fn word_at_a_time_split_agrees_with_split_at_dots() {
    let samples = [
        "a",
        ".",
        "..",
        "a.b",
        "abcdefgh.i",
        "abcdefg.hi",
        "abcdefgh",
        "abcdefghi",
        ".abcdefgh.",
        "org3.realm17.site2040.device11.kind9",
        "x.y.z.aaaaaaaaaaaaaaaaaaaaaaaaa.b",
        "a.",
        ".a",
    ];
    for sample in samples {
        let ours: Vec<&[u8]> = crate::walk::Segments::new(sample.as_bytes()).collect();
        let reference: Vec<&[u8]> = sample.as_bytes().split(|&b| b == b'.').collect();
        assert_eq!(ours, reference, "{sample:?}");
    }
    // Every position of a dot in and around a word boundary.
    for len in 1..20 {
        for dot in 0..len {
            let mut bytes = vec![b'x'; len];
            bytes[dot] = b'.';
            let ours: Vec<&[u8]> = crate::walk::Segments::new(&bytes).collect();
            let reference: Vec<&[u8]> = bytes.split(|&b| b == b'.').collect();
            assert_eq!(ours, reference, "len {len} dot {dot}");
        }
    }
}

#[test]
fn short_segment_compare_agrees_with_slice_equality() {
    let base: Vec<u8> = (0..24u8).map(|i| b'a' + i).collect();
    for len in 0..=24 {
        let a = &base[..len];
        assert!(crate::segment::same_bytes(a, a), "len {len}");
        for at in 0..len {
            let mut b = a.to_vec();
            b[at] = b'Z';
            assert!(!crate::segment::same_bytes(a, &b), "len {len}, differs at {at}");
        }
        if len > 0 {
            assert!(!crate::segment::same_bytes(a, &base[..len - 1]), "len {len} vs shorter");
        }
    }
}

#[test]
fn fuzz_bytes_decode_into_valid_operations_only() {
    use crate::model::Op;
    // subscribe "a.*", unsubscribe "a." (invalid), publish "a.b", publish "a.*" (a topic may
    // not hold a wildcard), publish "tail" whose length byte overshoots the input.
    let data = b"\x00\x03a.*\x01\x02a.\x02\x03a.b\x05\x03a.*\x02\x09tail";
    let texts: Vec<String> = Op::parse_all(data)
        .iter()
        .map(|op| match op {
            Op::Subscribe(p) => format!("sub {}", p.as_str()),
            Op::Unsubscribe(p) => format!("unsub {}", p.as_str()),
            Op::Publish(t) => format!("pub {}", t.as_str()),
        })
        .collect();
    assert_eq!(texts, ["sub a.*", "pub a.b", "pub tail"]);
    let mut harness = crate::model::Differential::new();
    for op in Op::parse_all(data) {
        harness.apply(&op);
    }
}
