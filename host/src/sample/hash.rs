//! The 32-bit hash functions of HAProxy's hash converters (and of its
//! hash-based load balancing): djb2, sdbm, wt6, crc32, crc32c, and the
//! optional full avalanche applied to their output.

/// DJB2: h = h * 33 + c, starting at 5381.
pub fn djb2(data: &[u8]) -> u32 {
    data.iter()
        .fold(5381u32, |h, &c| h.wrapping_mul(33).wrapping_add(c as u32))
}

/// SDBM: h = c + (h << 6) + (h << 16) - h, starting at 0.
pub fn sdbm(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |h, &c| {
        (c as u32)
            .wrapping_add(h << 6)
            .wrapping_add(h << 16)
            .wrapping_sub(h)
    })
}

/// WT6: two 32-bit states mixed with complements and data-dependent
/// rotations (Willy Tarreau's hash used by HAProxy).
pub fn wt6(data: &[u8]) -> u32 {
    let mut h0: u32 = 0xa53c_965a;
    let mut h1: u32 = 0x5ca6_953a;
    let mut step0: u32 = 6;
    let mut step1: u32 = 18;
    for &c in data {
        let t = c as u32;
        h0 = !(h0 ^ t);
        h1 = !(h1.wrapping_add(t));
        let rotated = h1.rotate_left(step0);
        h1 = h0.rotate_left(step1);
        h0 = rotated;
        let mix = ((h0 >> 16) ^ h1) & 0xffff;
        step0 = mix & 0x1f;
        step1 = mix >> 11;
    }
    h0 ^ h1
}

/// CRC32 as in Ethernet, gzip and PNG.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// CRC32C (Castagnoli, RFC 4960 appendix B), bitwise: it is only used by a
/// converter, where a table-driven version would not pay off.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82f6_3b78 & mask);
        }
    }
    !crc
}

/// Full avalanche (Bob Jenkins' 32-bit integer hash), followed by a
/// multiplication by a large prime as HAProxy does to spread the values.
pub fn full_hash(mut a: u32) -> u32 {
    a = a.wrapping_add(0x7ed5_5d16).wrapping_add(a << 12);
    a = (a ^ 0xc761_c23c) ^ (a >> 19);
    a = a.wrapping_add(0x1656_67b1).wrapping_add(a << 5);
    a = a.wrapping_add(0xd3a2_646c) ^ (a << 9);
    a = a.wrapping_add(0xfd70_46c5).wrapping_add(a << 3);
    a = (a ^ 0xb55a_4f09) ^ (a >> 16);
    a.wrapping_mul(3_221_225_473)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values: the well-known check values of the CRCs, and what
    // HAProxy 2.6 prints for `str(abc),<hash>` and `str(abc),<hash>(1)`.
    #[test]
    fn known_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32(b"abc"), 891_568_578);
        assert_eq!(full_hash(crc32(b"abc")), 930_845_320);
        assert_eq!(djb2(b"abc"), 193_485_963);
        assert_eq!(full_hash(djb2(b"abc")), 2_235_766_107);
        assert_eq!(sdbm(b"abc"), 807_794_786);
        assert_eq!(full_hash(sdbm(b"abc")), 659_243_622);
        assert_eq!(wt6(b"abc"), 2_483_038_440);
        assert_eq!(full_hash(wt6(b"abc")), 266_135_527);
        assert_eq!(wt6(b"hello-world-0123456789"), 2_507_778_388);
        assert_eq!(wt6(b""), 4_187_620_192);
    }

    // Hand-computed from the definitions.
    #[test]
    fn by_hand() {
        assert_eq!(djb2(b""), 5381);
        assert_eq!(djb2(b"a"), 5381 * 33 + 97);
        assert_eq!(djb2(b"ab"), (5381 * 33 + 97) * 33 + 98);
        assert_eq!(sdbm(b""), 0);
        assert_eq!(sdbm(b"a"), 97);
        // h=97: 98 + 97*64 + 97*65536 - 97
        assert_eq!(sdbm(b"ab"), 98 + 97 * 64 + 97 * 65536 - 97);
    }
}
