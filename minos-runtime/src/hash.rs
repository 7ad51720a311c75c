//! A stable hash for partitioning keys and lock names.

/// FNV-1a: the same value in every process, platform and release (unlike the std hasher).
pub(crate) fn stable_hash(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
