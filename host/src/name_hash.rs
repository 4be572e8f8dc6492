//! The hash of proxy names, shared by the parser's duplicate-name check and
//! the registry's name indexes (both hold 300,000 names at start-up).

/// FNV-1a over the name, with a final mix so that names differing only in
/// their last characters spread over every bit (the indexes use the low
/// bits, the parser's sort the high ones). Fast for short names; the names
/// come from the configuration, not from clients, and equal hashes are
/// always confirmed by comparing the names.
pub fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::name_hash;
    use std::collections::HashSet;

    #[test]
    fn similar_names_spread_over_high_and_low_bits() {
        let top: HashSet<u64> = (0..1000)
            .map(|i| name_hash(&format!("be_{i}")) >> 57)
            .collect();
        // All 128 values of the top 7 bits should occur for 1000 names.
        assert!(top.len() > 100, "{}", top.len());
        let low: HashSet<u64> = (0..1000)
            .map(|i| name_hash(&format!("be_{i}")) & 127)
            .collect();
        assert!(low.len() > 100, "{}", low.len());
        let all: HashSet<u64> = (0..100_000).map(|i| name_hash(&format!("b{i}"))).collect();
        assert_eq!(all.len(), 100_000);
    }
}
