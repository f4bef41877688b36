//! How state is laid out in RocksDB. This layout is part of the checkpoint format: changing it
//! changes the format version.
//!
//! Every stored key starts with its key group as a 2-byte big-endian prefix, so a key-group range
//! is one contiguous byte range (restore with rescale is a range delete plus file ingest).
//!
//! - value state: `[group][key]` -> `[expiry][value]`
//! - list state: `[group][key]` -> a sequence of elements `[expiry][len u32 BE][bytes]`, appended
//!   with a RocksDB merge operator (concatenation), so an append never reads.
//! - map state: `[group][key len u32 BE][key][map key]` -> `[expiry][value]`; one map is one prefix,
//!   iterated in map-key byte order.
//!
//! `expiry` is 8 bytes big-endian: milliseconds since the Unix epoch after which the entry is dead,
//! or 0 for never. Reads hide dead entries; the compaction filter drops them.

use std::time::{SystemTime, UNIX_EPOCH};

pub const GROUP_BYTES: usize = 2;
pub const EXPIRY_BYTES: usize = 8;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The expiry for a write at `now` with `ttl_ms` (0: never expires).
pub fn expiry_for(now: u64, ttl_ms: u64) -> u64 {
    if ttl_ms == 0 {
        0
    } else {
        now.saturating_add(ttl_ms)
    }
}

pub fn is_live(expiry: u64, now: u64) -> bool {
    expiry == 0 || expiry > now
}

pub fn group_prefix(group: u32) -> [u8; GROUP_BYTES] {
    (group as u16).to_be_bytes()
}

/// The key of a value or list entry.
pub fn plain_key(group: u32, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(GROUP_BYTES + key.len());
    out.extend_from_slice(&group_prefix(group));
    out.extend_from_slice(key);
    out
}

/// The prefix shared by every entry of one map.
pub fn map_prefix(group: u32, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(GROUP_BYTES + 4 + key.len());
    out.extend_from_slice(&group_prefix(group));
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

pub fn map_entry_key(group: u32, key: &[u8], map_key: &[u8]) -> Vec<u8> {
    let mut out = map_prefix(group, key);
    out.extend_from_slice(map_key);
    out
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` if there
/// is none (the prefix is all 0xff).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// `[expiry][value]`.
pub fn encode_value(expiry: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(EXPIRY_BYTES + value.len());
    out.extend_from_slice(&expiry.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Splits a stored value into its expiry and payload; `None` if it is too short to be ours.
pub fn decode_value(stored: &[u8]) -> Option<(u64, &[u8])> {
    let (head, payload) = stored.split_at_checked(EXPIRY_BYTES)?;
    Some((u64::from_be_bytes(head.try_into().ok()?), payload))
}

/// Appends list elements, each `[expiry][len][bytes]`.
pub fn encode_list<'a>(expiry: u64, values: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for v in values {
        out.extend_from_slice(&expiry.to_be_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
}

/// Iterates the elements of a stored list as `(expiry, bytes)`; stops at the first malformed
/// element (which only a foreign writer could produce).
pub fn list_elements(stored: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut rest = stored;
    std::iter::from_fn(move || {
        let (expiry, tail) = rest.split_at_checked(EXPIRY_BYTES)?;
        let (len, tail) = tail.split_at_checked(4)?;
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        let (value, tail) = tail.split_at_checked(len)?;
        rest = tail;
        Some((u64::from_be_bytes(expiry.try_into().ok()?), value))
    })
}

/// Operator-state lists carry no expiry: `[len u32 BE][bytes]` repeated.
pub fn encode_operator_list(values: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        let v = v.as_ref();
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

pub fn decode_operator_list(stored: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = stored;
    while let Some((len, tail)) = rest.split_at_checked(4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some((value, tail)) = tail.split_at_checked(len) else {
            break;
        };
        out.push(value.to_vec());
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_prefixes_of_distinct_keys_never_nest() {
        // "ab" + map key "c" must not fall under the prefix of key "abc".
        let a = map_entry_key(1, b"ab", b"c");
        assert!(!a.starts_with(&map_prefix(1, b"abc")));
        assert!(a.starts_with(&map_prefix(1, b"ab")));
    }

    #[test]
    fn group_prefix_orders_groups() {
        assert!(plain_key(1, b"zzz") < plain_key(2, b""));
        assert!(map_prefix(255, b"z") < map_prefix(256, b""));
    }

    #[test]
    fn prefix_successor_bounds_the_prefix() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
    }

    #[test]
    fn list_round_trip() {
        let mut out = Vec::new();
        encode_list(5, [&b"a"[..], b"", b"ccc"], &mut out);
        encode_list(0, [&b"d"[..]], &mut out);
        let got: Vec<_> = list_elements(&out).collect();
        assert_eq!(got, vec![(5, &b"a"[..]), (5, b""), (5, b"ccc"), (0, b"d")]);
    }

    #[test]
    fn expiry_rules() {
        assert!(is_live(0, u64::MAX));
        assert!(is_live(11, 10));
        assert!(!is_live(10, 10));
        assert_eq!(expiry_for(100, 0), 0);
        assert_eq!(expiry_for(100, 5), 105);
    }
}
