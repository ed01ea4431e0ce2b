//! The prefix (radix) cache: which token prefixes already sit in the KV pool.
//!
//! A compact stand-in for SGLang's radix tree: each inserted prompt is a node that owns the
//! tokens past the prefix it shares with its parent. Nodes are found through a hash index of
//! prefix positions (1, 16, 32, ...) and then extended token by token, so a lookup costs
//! O(prompt length). A node too short to own an index position of its own is listed as a tail
//! of its last shared position, and lookups try those tails too. Locked nodes (in use by a running request) and inner nodes are never
//! evicted; leaves go least-recently-used first, as in the real tree.

use std::collections::{BTreeSet, HashMap};

const KEY_STRIDE: usize = 16;
/// Tails kept per index position; older ones lose only their last few tokens' reachability.
const MAX_TAILS: usize = 16;
const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

fn is_key(position: usize) -> bool {
    position == 1 || position.is_multiple_of(KEY_STRIDE)
}

fn hash_step(hash: u64, token: u32) -> u64 {
    (hash ^ token as u64).wrapping_mul(FNV_PRIME)
}

#[derive(Debug)]
struct Node {
    tokens: Vec<u32>,
    /// Tokens shared with the parent at insertion (not owned by this node).
    shared: u32,
    parent: Option<u32>,
    children: u32,
    locks: u32,
    last_use: u64,
    alive: bool,
    /// The shared index position this node is listed under as a tail (it owns none).
    tail_key: Option<usize>,
}

impl Node {
    fn owned(&self) -> u64 {
        (self.tokens.len() as u32 - self.shared) as u64
    }
}

/// Result of a lookup: how many leading tokens are cached, and in which node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PrefixMatch {
    pub(crate) len: u32,
    pub(crate) node: Option<u32>,
}

#[derive(Debug, Default)]
pub(crate) struct PrefixCache {
    nodes: Vec<Node>,
    free_slots: Vec<u32>,
    index: HashMap<u64, u32>,
    tails: HashMap<u64, Vec<u32>>,
    /// Evictable leaves by last use.
    lru: BTreeSet<(u64, u32)>,
    clock: u64,
    /// Tokens owned by all live nodes.
    tokens: u64,
    /// Tokens owned by nodes some running request holds.
    locked_tokens: u64,
}

impl PrefixCache {
    pub(crate) fn tokens(&self) -> u64 {
        self.tokens
    }

    pub(crate) fn evictable_tokens(&self) -> u64 {
        self.tokens - self.locked_tokens
    }

    /// Longest cached prefix of `prompt`.
    pub(crate) fn lookup(&self, prompt: &[u32]) -> PrefixMatch {
        let mut hash = FNV_OFFSET;
        let mut best: Option<(usize, u32, u64)> = None;
        for (i, &token) in prompt.iter().enumerate() {
            hash = hash_step(hash, token);
            let position = i + 1;
            if is_key(position) {
                match self.index.get(&hash) {
                    Some(&node) => best = Some((position, node, hash)),
                    None => break,
                }
            }
        }
        let Some((position, node, key)) = best else {
            return PrefixMatch::default();
        };
        let mut found = self.extend(prompt, position, node);
        for &tail in self.tails.get(&key).map(Vec::as_slice).unwrap_or_default() {
            let candidate = self.extend(prompt, position, tail);
            if candidate.len > found.len {
                found = candidate;
            }
        }
        found
    }

    fn extend(&self, prompt: &[u32], mut len: usize, node: u32) -> PrefixMatch {
        let tokens = &self.nodes[node as usize].tokens;
        if tokens.len() < len || tokens[..len] != prompt[..len] {
            return PrefixMatch::default(); // a hash collision, not a match
        }
        while len < prompt.len() && len < tokens.len() && tokens[len] == prompt[len] {
            len += 1;
        }
        PrefixMatch { len: len as u32, node: Some(node) }
    }

    /// Records `prompt` as cached, given what `lookup` found; returns the node that now holds
    /// the whole prompt and the number of tokens newly added to the cache.
    pub(crate) fn insert(&mut self, prompt: &[u32], found: PrefixMatch) -> (u32, u64) {
        if let (Some(node), true) = (found.node, found.len as usize == prompt.len()) {
            self.touch(node);
            return (node, 0);
        }
        let shared = found.len as usize;
        let node = Node {
            tokens: prompt.to_vec(),
            shared: shared as u32,
            parent: found.node,
            children: 0,
            locks: 0,
            last_use: 0,
            alive: true,
            tail_key: None,
        };
        let id = match self.free_slots.pop() {
            Some(slot) => {
                self.nodes[slot as usize] = node;
                slot
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        if let Some(parent) = found.node {
            self.set_child_count(parent, 1);
        }
        let mut hash = FNV_OFFSET;
        let mut own_key = false;
        let mut last_shared_key: Option<(usize, u64)> = None;
        for (i, &token) in prompt.iter().enumerate() {
            hash = hash_step(hash, token);
            let position = i + 1;
            if is_key(position) {
                if position > shared {
                    self.index.insert(hash, id);
                    own_key = true;
                } else {
                    last_shared_key = Some((position, hash));
                }
            }
        }
        if let (false, Some((position, key))) = (own_key, last_shared_key) {
            let tails = self.tails.entry(key).or_default();
            if tails.len() == MAX_TAILS {
                let dropped = tails.remove(0);
                self.nodes[dropped as usize].tail_key = None;
            }
            tails.push(id);
            self.nodes[id as usize].tail_key = Some(position);
        }
        let added = self.nodes[id as usize].owned();
        self.tokens += added;
        self.touch(id);
        (id, added)
    }

    /// Pins `node` and its ancestors while a request uses them.
    pub(crate) fn lock(&mut self, node: u32) {
        let mut current = Some(node);
        while let Some(id) = current {
            let entry = &mut self.nodes[id as usize];
            entry.locks += 1;
            if entry.locks == 1 {
                self.locked_tokens += entry.owned();
                self.lru.remove(&(entry.last_use, id));
            }
            current = entry.parent;
        }
    }

    pub(crate) fn unlock(&mut self, node: u32) {
        let mut current = Some(node);
        while let Some(id) = current {
            let entry = &mut self.nodes[id as usize];
            entry.locks = entry.locks.saturating_sub(1);
            if entry.locks == 0 {
                self.locked_tokens -= entry.owned();
            }
            current = entry.parent;
            self.refresh_lru(id);
        }
    }

    /// Evicts least-recently-used unlocked leaves until `needed` tokens are freed or nothing
    /// evictable is left; returns the tokens freed.
    pub(crate) fn evict(&mut self, needed: u64) -> u64 {
        let mut freed = 0;
        while freed < needed {
            let Some((_, id)) = self.lru.pop_first() else {
                break;
            };
            freed += self.remove(id);
        }
        freed
    }

    fn remove(&mut self, id: u32) -> u64 {
        let (parent, shared, tail_key, owned) = {
            let node = &self.nodes[id as usize];
            (node.parent, node.shared as usize, node.tail_key, node.owned())
        };
        let mut hash = FNV_OFFSET;
        let tokens = std::mem::take(&mut self.nodes[id as usize].tokens);
        for (i, &token) in tokens.iter().enumerate() {
            hash = hash_step(hash, token);
            let position = i + 1;
            if !is_key(position) {
                continue;
            }
            if position > shared && self.index.get(&hash) == Some(&id) {
                self.index.remove(&hash);
            } else if tail_key == Some(position)
                && let Some(tails) = self.tails.get_mut(&hash)
            {
                tails.retain(|&tail| tail != id);
                if tails.is_empty() {
                    self.tails.remove(&hash);
                }
            }
        }
        let node = &mut self.nodes[id as usize];
        node.alive = false;
        node.tokens = tokens;
        node.tokens.clear();
        self.tokens -= owned;
        self.free_slots.push(id);
        if let Some(parent) = parent {
            self.set_child_count(parent, -1);
        }
        owned
    }

    fn set_child_count(&mut self, id: u32, delta: i32) {
        let node = &mut self.nodes[id as usize];
        node.children = node.children.saturating_add_signed(delta);
        self.refresh_lru(id);
    }

    fn touch(&mut self, id: u32) {
        self.clock += 1;
        let clock = self.clock;
        let node = &mut self.nodes[id as usize];
        self.lru.remove(&(node.last_use, id));
        node.last_use = clock;
        self.refresh_lru(id);
    }

    fn refresh_lru(&mut self, id: u32) {
        let node = &self.nodes[id as usize];
        let key = (node.last_use, id);
        if node.alive && node.locks == 0 && node.children == 0 {
            self.lru.insert(key);
        } else {
            self.lru.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(start: u32, len: u32) -> Vec<u32> {
        (start..start + len).collect()
    }

    #[test]
    fn finds_the_longest_shared_prefix_at_token_granularity() {
        let mut cache = PrefixCache::default();
        let first = seq(1, 40);
        let found = cache.lookup(&first);
        assert_eq!(found.len, 0);
        let (_, added) = cache.insert(&first, found);
        assert_eq!(added, 40);
        let mut second = seq(1, 37);
        second.extend([900, 901]);
        let hit = cache.lookup(&second);
        assert_eq!(hit.len, 37);
        let (_, added) = cache.insert(&second, hit);
        assert_eq!(added, 2);
        assert_eq!(cache.tokens(), 42);
        assert_eq!(cache.lookup(&second).len, 39);
        assert_eq!(cache.lookup(&first).len, 40);
        assert_eq!(cache.lookup(&[5, 6, 7]).len, 0);
    }

    #[test]
    fn locked_and_inner_nodes_survive_eviction_leaves_go_first() {
        let mut cache = PrefixCache::default();
        let base = seq(1, 32);
        let (root, _) = cache.insert(&base, cache.lookup(&base));
        let mut child = base.clone();
        child.extend(seq(500, 20));
        let (leaf, _) = cache.insert(&child, cache.lookup(&child));
        cache.lock(leaf);
        assert_eq!(cache.evict(1000), 0, "everything is pinned by the lock on the leaf");
        cache.unlock(leaf);
        assert_eq!(cache.evictable_tokens(), 52);
        assert_eq!(cache.evict(1), 20, "the leaf goes first");
        assert_eq!(cache.lookup(&child).len, 32, "its parent still answers");
        assert_eq!(cache.lookup(&base).node, Some(root));
        assert_eq!(cache.evict(1), 32);
        assert_eq!(cache.tokens(), 0);
        assert_eq!(cache.lookup(&base).len, 0);
    }

    #[test]
    fn a_short_extension_without_own_keys_is_found_as_a_tail() {
        let mut cache = PrefixCache::default();
        let base = seq(1, 20);
        cache.insert(&base, cache.lookup(&base));
        let mut ext = seq(1, 18);
        ext.push(777);
        let (leaf, _) = cache.insert(&ext, cache.lookup(&ext));
        assert_eq!(cache.lookup(&ext).len, 19);
        cache.lock(leaf);
        cache.unlock(leaf);
        assert_eq!(cache.lookup(&base).len, 20, "the parent's tail stays reachable");
        cache.evict(1);
        assert_eq!(cache.lookup(&ext).len, 18);
        assert!(cache.tails.is_empty());
    }
}
