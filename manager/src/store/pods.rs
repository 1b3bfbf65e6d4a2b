//! The store's pods, by id, each held once.
//!
//! Pods are most of a manager's store: tens of thousands of them, each a
//! `Pod` of 312 bytes inline plus its strings. A `BTreeMap<String, Pod>`
//! held each pod inline in its tree nodes, which are partly empty, so a pod
//! took about 500 bytes of node, plus its id a second time as the key.
//! Here the tree holds only a pointer to a shared pod, ordered and looked
//! up by the pod's own id: a store held 549 bytes per running pod instead
//! of 725 (`shoal-bench sim`, 1000 nodes and 20,000 pods; docs/BENCHMARKS.md
//! "Manager memory per pod, counted"), and cloning the collection (or a
//! pod's `Arc`) copies no pod.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use shoal_proto::Pod;

/// A stored pod, ordered (and found, through `Borrow<str>`) by its id.
#[derive(Debug, Clone)]
struct ById(Arc<Pod>);

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    // The same order as the ids' (`str`'s), as `Borrow` requires.
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.id.cmp(&other.0.id)
    }
}

/// Pods by id, in id order (as the `BTreeMap` they replace iterated).
/// Written only through [`super::StoreData::put_pod`] and
/// [`super::StoreData::remove_pod`], which keep the store's index by node.
#[derive(Debug, Clone, Default)]
pub struct Pods(BTreeSet<ById>);

impl Pods {
    pub fn get(&self, id: &str) -> Option<&Pod> {
        self.0.get(id).map(|p| &*p.0)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.0.contains(id)
    }

    /// Every pod, in id order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Pod> + ExactSizeIterator {
        self.0.iter().map(|p| &*p.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds or replaces the pod with `pod.id`.
    pub(super) fn insert(&mut self, pod: Pod) {
        self.0.replace(ById(Arc::new(pod)));
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Pod> {
        self.0.take(id).map(|p| Arc::unwrap_or_clone(p.0))
    }
}

impl std::ops::Index<&str> for Pods {
    type Output = Pod;

    /// The pod with this id; panics if there is none (as a map's index does).
    fn index(&self, id: &str) -> &Pod {
        self.get(id)
            .unwrap_or_else(|| panic!("no pod {id:?} in the store"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(id: &str, node: &str) -> Pod {
        Pod {
            id: id.into(),
            node_id: node.into(),
            ..Default::default()
        }
    }

    #[test]
    fn pods_are_found_replaced_and_removed_by_id_and_listed_in_id_order() {
        let mut pods = Pods::default();
        pods.insert(pod("b", "n1"));
        pods.insert(pod("a", "n1"));
        pods.insert(pod("b", "n2"));
        assert_eq!(pods.len(), 2);
        assert_eq!(pods["b"].node_id, "n2", "replaced, not added");
        assert!(pods.contains_key("a") && !pods.contains_key("c"));
        let ids: Vec<&str> = pods.values().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(pods.remove("a").map(|p| p.id), Some("a".into()));
        assert!(pods.remove("a").is_none() && pods.get("a").is_none());
        assert_eq!(pods.len(), 1);
    }

    #[test]
    fn a_clone_shares_the_pods_and_a_write_to_it_leaves_the_original_alone() {
        let mut pods = Pods::default();
        pods.insert(pod("a", "n1"));
        let mut copy = pods.clone();
        assert!(std::ptr::eq(copy.get("a").unwrap(), pods.get("a").unwrap()));
        copy.insert(pod("a", "n2"));
        assert_eq!(
            (pods["a"].node_id.as_str(), copy["a"].node_id.as_str()),
            ("n1", "n2")
        );
        assert_eq!(copy.remove("a").unwrap().node_id, "n2");
        assert_eq!(pods["a"].node_id, "n1");
    }
}
