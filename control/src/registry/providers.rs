//! Remote providers: realm → procedure name → origins with at least one provider.

use std::collections::HashMap;

use bytes::Bytes;
use fovea_codec::{Id32, Realm};
use smallvec::SmallVec;

/// Which bootstraps have providers of which procedures, per realm.
#[derive(Debug, Default)]
pub struct ProviderIndex {
    realms: HashMap<Realm, HashMap<Bytes, SmallVec<[Id32; 2]>>>,
    procedures: usize,
}

impl ProviderIndex {
    /// An empty index.
    pub fn new() -> ProviderIndex {
        ProviderIndex::default()
    }

    /// `origin` has a provider of `name`. True when it is the procedure's first remote origin.
    pub fn add(&mut self, realm: &Realm, name: &Bytes, origin: Id32) -> bool {
        let names = self.realms.entry(realm.clone()).or_default();
        let origins = names.entry(name.clone()).or_default();
        if origins.contains(&origin) {
            return false;
        }
        // Kept sorted so that a rotation over them is the same on every call.
        let at = origins.partition_point(|o| *o < origin);
        origins.insert(at, origin);
        let first = origins.len() == 1;
        if first {
            self.procedures += 1;
        }
        first
    }

    /// `origin` no longer has a provider of `name`. True when no origin is left.
    pub fn remove(&mut self, realm: &Realm, name: &[u8], origin: &Id32) -> bool {
        let Some(names) = self.realms.get_mut(realm) else { return false };
        let Some(origins) = names.get_mut(name) else { return false };
        origins.retain(|o| o != origin);
        if !origins.is_empty() {
            return false;
        }
        names.remove(name);
        if names.is_empty() {
            self.realms.remove(realm);
        }
        self.procedures -= 1;
        true
    }

    /// The origins with providers of `name`, in id order.
    pub fn origins(&self, realm: &Realm, name: &[u8]) -> &[Id32] {
        self.realms.get(realm).and_then(|n| n.get(name)).map_or(&[], |o| o.as_slice())
    }

    /// Distinct (realm, procedure) pairs with a remote provider.
    pub fn len(&self) -> usize {
        self.procedures
    }

    /// True when no remote provider is known.
    pub fn is_empty(&self) -> bool {
        self.procedures == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_sorted_and_removed_one_by_one() {
        let mut index = ProviderIndex::new();
        let realm = Realm::from_static("acme");
        let name = Bytes::from_static(b"math.add");
        assert!(index.add(&realm, &name, [3; 32]));
        assert!(!index.add(&realm, &name, [1; 32]));
        assert!(!index.add(&realm, &name, [1; 32]));
        assert_eq!(index.origins(&realm, b"math.add"), &[[1; 32], [3; 32]]);
        assert!(!index.remove(&realm, b"math.add", &[3; 32]));
        assert!(index.remove(&realm, b"math.add", &[1; 32]));
        assert!(index.origins(&realm, b"math.add").is_empty());
        assert!(index.is_empty());
    }
}
