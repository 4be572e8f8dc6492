//! The registry's name indexes: proxy name to position in the proxy list.
//!
//! Why not a `HashMap<Arc<str>, u32>`: with 300,000 backends its slots
//! (a name pointer, a length and a position: 24 bytes, plus a control byte)
//! took 13 MB, and each insertion cloned an `Arc` and ran SipHash. The
//! names are already in the proxy list, so this index keeps positions only:
//! an open-addressed table of `u32` (linear probing, at most half full),
//! 4 to 8 bytes per name, that compares a candidate by reading its name
//! from the list.

/// A slot that holds no position.
const EMPTY: u32 = u32::MAX;

/// Positions in a list of names, by name.
#[derive(Default)]
pub(crate) struct NameIndex {
    /// Length a power of two (or zero), at least twice the number of
    /// positions held.
    slots: Box<[u32]>,
    len: usize,
}

use crate::name_hash::name_hash as hash;

impl NameIndex {
    /// An index with room for `n` names without growing.
    pub(crate) fn with_capacity(n: usize) -> NameIndex {
        let size = if n == 0 {
            0
        } else {
            (n.saturating_mul(2)).next_power_of_two()
        };
        NameIndex {
            slots: vec![EMPTY; size].into_boxed_slice(),
            len: 0,
        }
    }

    /// The slot holding `name`, or the empty slot where it would go;
    /// `name_at` gives the name at a position of the list. None when the
    /// table has no slot at all.
    fn probe<'a>(&self, name: &str, name_at: impl Fn(u32) -> Option<&'a str>) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = (hash(name) as usize) & mask;
        // At most half full: an empty slot is always found.
        loop {
            let at = *self.slots.get(i)?;
            if at == EMPTY || name_at(at) == Some(name) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The position of `name`.
    pub(crate) fn get<'a>(
        &self,
        name: &str,
        name_at: impl Fn(u32) -> Option<&'a str>,
    ) -> Option<u32> {
        let i = self.probe(name, name_at)?;
        self.slots.get(i).copied().filter(|&at| at != EMPTY)
    }

    /// An index of `positions`, built at once: the positions are placed in
    /// the order of their home slots, so that the table is written from one
    /// end to the other instead of at random (with 300,000 names, a random
    /// write per name was one cache miss per name, about 70 ms here). A
    /// later position replaces an earlier one of the same name, as a map's
    /// insert does.
    pub(crate) fn of<'a>(
        positions: impl Iterator<Item = u32>,
        name_at: impl Fn(u32) -> Option<&'a str>,
    ) -> NameIndex {
        let hashes: Vec<(u64, u32)> = positions
            .filter(|&at| at != EMPTY)
            .filter_map(|at| Some((hash(name_at(at)?), at)))
            .collect();
        let mut idx = NameIndex::with_capacity(hashes.len());
        let Some(mask) = idx.slots.len().checked_sub(1) else {
            return idx;
        };
        // (home slot, position), sorted: the names of one home slot keep
        // their order, so of two equal names the later is placed last.
        let mut homes: Vec<(u32, u32)> = hashes
            .iter()
            .map(|&(h, at)| ((h as usize & mask) as u32, at))
            .collect();
        drop(hashes);
        homes.sort_unstable();
        for (home, at) in homes {
            let Some(name) = name_at(at) else { continue };
            let mut i = home as usize;
            // At most half full: an empty slot is always found.
            while let Some(&here) = idx.slots.get(i) {
                if here == EMPTY || name_at(here) == Some(name) {
                    if here == EMPTY {
                        idx.len += 1;
                    }
                    if let Some(slot) = idx.slots.get_mut(i) {
                        *slot = at;
                    }
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::NameIndex;

    #[test]
    fn built_at_once_it_finds_the_same() {
        let names: Vec<String> = (0..5000).map(|i| format!("b{}", i % 4000)).collect();
        let name_at = |at: u32| names.get(at as usize).map(|s| s.as_str());
        let idx = NameIndex::of(0..names.len() as u32, name_at);
        for i in 0..4000u32 {
            // b0..b999 appear twice: the later position wins.
            let want = if i < 1000 { i + 4000 } else { i };
            assert_eq!(idx.get(&format!("b{i}"), name_at), Some(want), "b{i}");
        }
        assert_eq!(idx.get("b4000", name_at), None);
        let empty = NameIndex::of(std::iter::empty(), name_at);
        assert_eq!(empty.get("b1", name_at), None);
    }
}
