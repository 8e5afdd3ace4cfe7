//! Java compatibility helpers: RocketMQ stores some values as Java would compute them.

/// Java's `String.hashCode()`, which RocketMQ stores as the consume-queue tags code.
pub fn string_hash_code(s: &str) -> i32 {
    let mut h: i32 = 0;
    for unit in s.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    h
}

/// RocketMQ's `UtilAll.crc32`: CRC-32/IEEE with bit 31 cleared.
pub fn masked_crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data) & 0x7FFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_code_matches_java() {
        assert_eq!(string_hash_code(""), 0);
        assert_eq!(string_hash_code("TagA"), 2598919);
        assert_eq!(string_hash_code("hello world"), 1794106052);
    }
}
