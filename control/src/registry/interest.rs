//! Remote interests: realm → pattern trie → origins with subscribers for that pattern.

use std::collections::HashMap;

use fovea_codec::{Id32, Pattern, Realm, Topic};
use fovea_trie::PatternTrie;
use smallvec::SmallVec;

/// The origins holding one pattern; usually one or two bootstraps.
type Origins = SmallVec<[Id32; 2]>;

/// Which bootstraps have subscribers for which patterns, per realm.
#[derive(Debug, Default)]
pub struct InterestIndex {
    realms: HashMap<Realm, PatternTrie<Origins>>,
    patterns: usize,
}

impl InterestIndex {
    /// An empty index.
    pub fn new() -> InterestIndex {
        InterestIndex::default()
    }

    /// `origin` has subscribers for `pattern`. True when the pattern had no origin before (the
    /// data plane's "some bootstrap wants this" bit turns on).
    pub fn add(&mut self, realm: &Realm, pattern: &Pattern, origin: Id32) -> bool {
        let trie = self.realms.entry(realm.clone()).or_default();
        let leaf = trie.entry(pattern);
        if leaf.contains(&origin) {
            return false;
        }
        leaf.push(origin);
        let first = leaf.len() == 1;
        if first {
            self.patterns += 1;
        }
        first
    }

    /// `origin` no longer has subscribers for `pattern`. True when no origin is left.
    pub fn remove(&mut self, realm: &Realm, pattern: &Pattern, origin: &Id32) -> bool {
        let Some(trie) = self.realms.get_mut(realm) else { return false };
        let gone = trie.remove_with(pattern, |leaf| {
            leaf.retain(|o| o != origin);
            leaf.is_empty()
        });
        if gone {
            self.patterns -= 1;
            if trie.is_empty() {
                self.realms.remove(realm);
            }
        }
        gone
    }

    /// The origins with a pattern matching `topic`, each once, in id order.
    pub fn origins_for(&self, realm: &Realm, topic: &Topic, out: &mut Vec<Id32>) {
        out.clear();
        let Some(trie) = self.realms.get(realm) else { return };
        trie.for_each_match(topic, |leaf| out.extend_from_slice(leaf));
        out.sort_unstable();
        out.dedup();
    }

    /// Distinct (realm, pattern) pairs with at least one origin.
    pub fn len(&self) -> usize {
        self.patterns
    }

    /// True when no remote interest is known.
    pub fn is_empty(&self) -> bool {
        self.patterns == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_origin_once_however_many_of_its_patterns_match() {
        let mut index = InterestIndex::new();
        let realm = Realm::from_static("acme");
        let (b, c) = ([2; 32], [3; 32]);
        assert!(index.add(&realm, &Pattern::from_static("sensors.*.temp"), b));
        assert!(index.add(&realm, &Pattern::from_static("sensors.**"), b));
        assert!(!index.add(&realm, &Pattern::from_static("sensors.**"), c));
        index.add(&realm, &Pattern::from_static("other.x"), c);
        let mut out = Vec::new();
        index.origins_for(&realm, &Topic::from_static("sensors.kitchen.temp"), &mut out);
        assert_eq!(out, vec![b, c]);
        index.origins_for(
            &Realm::from_static("other"),
            &Topic::from_static("sensors.a.temp"),
            &mut out,
        );
        assert!(out.is_empty());
        assert!(!index.remove(&realm, &Pattern::from_static("sensors.**"), &b));
        assert!(index.remove(&realm, &Pattern::from_static("sensors.**"), &c));
        index.origins_for(&realm, &Topic::from_static("sensors.kitchen.temp"), &mut out);
        assert_eq!(out, vec![b]);
        assert_eq!(index.len(), 2);
    }
}
