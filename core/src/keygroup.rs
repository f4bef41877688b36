//! Key groups: the unit of state partitioning and redistribution.
//!
//! `key_group(key, M) = murmur3_x86_32(key bytes, seed 0) mod M`. The hash is computed over the raw
//! key bytes, so every language computes the same group; it never changes for the life of a job's
//! state. Replica `i` of `P` owns the contiguous, inclusive range given by [`range_for_replica`]
//! (Flink's `computeKeyGroupRangeForOperatorIndex`), and [`owner_of_group`] is its inverse.

use std::fmt;
use std::io::Cursor;
use std::ops::RangeInclusive;

/// The name of the key-group hash, sent in the protocol's hello so mismatched clients fail fast.
pub const HASH_NAME: &str = "murmur3_x86_32/seed0";

/// The largest maxParallelism: key groups are stored as a 2-byte big-endian prefix.
pub const MAX_MAX_PARALLELISM: u32 = 32_768;

/// The default number of key groups.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// Why a parallelism/maxParallelism pair is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("maxParallelism must be between 1 and {MAX_MAX_PARALLELISM}, got {0}")]
    MaxParallelism(u32),
    #[error("parallelism must be between 1 and maxParallelism ({max}), got {parallelism}")]
    Parallelism { parallelism: u32, max: u32 },
    #[error("replica index {index} is out of range for parallelism {parallelism}")]
    ReplicaIndex { index: u32, parallelism: u32 },
}

/// A job's partitioning: P replicas over M key groups. Constructed only when valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    parallelism: u32,
    max_parallelism: u32,
}

impl Layout {
    pub fn new(parallelism: u32, max_parallelism: u32) -> Result<Self, LayoutError> {
        if max_parallelism == 0 || max_parallelism > MAX_MAX_PARALLELISM {
            return Err(LayoutError::MaxParallelism(max_parallelism));
        }
        if parallelism == 0 || parallelism > max_parallelism {
            return Err(LayoutError::Parallelism {
                parallelism,
                max: max_parallelism,
            });
        }
        Ok(Self {
            parallelism,
            max_parallelism,
        })
    }

    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The key groups replica `index` owns.
    pub fn range(&self, index: u32) -> Result<KeyGroupRange, LayoutError> {
        if index >= self.parallelism {
            return Err(LayoutError::ReplicaIndex {
                index,
                parallelism: self.parallelism,
            });
        }
        Ok(range_for_replica(
            index,
            self.parallelism,
            self.max_parallelism,
        ))
    }

    pub fn key_group(&self, key: &[u8]) -> u32 {
        key_group(key, self.max_parallelism)
    }

    /// The replica that owns `key`.
    pub fn owner(&self, key: &[u8]) -> u32 {
        owner_of_group(self.key_group(key), self.parallelism, self.max_parallelism)
    }
}

/// An inclusive range of key groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KeyGroupRange {
    pub start: u32,
    pub end: u32,
}

impl KeyGroupRange {
    pub fn contains(&self, group: u32) -> bool {
        self.start <= group && group <= self.end
    }

    pub fn len(&self) -> u32 {
        self.end + 1 - self.start
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn iter(&self) -> RangeInclusive<u32> {
        self.start..=self.end
    }

    /// The groups both ranges hold, if any.
    pub fn intersect(&self, other: &KeyGroupRange) -> Option<KeyGroupRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start <= end).then_some(KeyGroupRange { start, end })
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.start, self.end)
    }
}

/// MurmurHash3 x86 32-bit, seed 0, of the key bytes.
pub fn hash(key: &[u8]) -> u32 {
    // Reading from an in-memory cursor cannot fail.
    murmur3::murmur3_32(&mut Cursor::new(key), 0).unwrap_or_default()
}

/// The key group of `key` among `max_parallelism` groups. `max_parallelism` must be at least 1.
pub fn key_group(key: &[u8], max_parallelism: u32) -> u32 {
    hash(key) % max_parallelism.max(1)
}

/// The inclusive key-group range of replica `index` (Flink's formula):
/// `start = ceil(index * M / P)`, `end = ceil((index + 1) * M / P) - 1`.
pub fn range_for_replica(index: u32, parallelism: u32, max_parallelism: u32) -> KeyGroupRange {
    let (i, p, m) = (
        u64::from(index),
        u64::from(parallelism),
        u64::from(max_parallelism),
    );
    let start = (i * m).div_ceil(p);
    let end = ((i + 1) * m).div_ceil(p) - 1;
    // Both are at most M - 1, which fits in u32.
    KeyGroupRange {
        start: start as u32,
        end: end as u32,
    }
}

/// The replica that owns key group `group`: `group * P / M`.
pub fn owner_of_group(group: u32, parallelism: u32, max_parallelism: u32) -> u32 {
    (u64::from(group) * u64::from(parallelism) / u64::from(max_parallelism.max(1))) as u32
}

/// The replica that owns `key`.
pub fn owner(key: &[u8], parallelism: u32, max_parallelism: u32) -> u32 {
    owner_of_group(
        key_group(key, max_parallelism),
        parallelism,
        max_parallelism,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published vectors (docs/protocol.md and testdata/keygroup_vectors.json).
    #[test]
    fn hash_matches_published_vectors() {
        let vectors = include_str!("../../testdata/keygroup_vectors.json");
        let doc: Vectors = parse_vectors(vectors);
        for v in doc.hashes {
            assert_eq!(hash(&v.key), v.hash, "hash of {:?}", v.key);
        }
        for v in doc.owners {
            assert_eq!(key_group(&v.key, v.max_parallelism), v.key_group, "{v:?}");
            assert_eq!(
                owner(&v.key, v.parallelism, v.max_parallelism),
                v.owner,
                "{v:?}"
            );
        }
        for v in doc.ranges {
            let r = range_for_replica(v.index, v.parallelism, v.max_parallelism);
            assert_eq!((r.start, r.end), (v.start, v.end), "{v:?}");
        }
    }

    #[test]
    fn ranges_partition_all_groups_and_agree_with_owner() {
        for m in [1u32, 2, 7, 128, 1000, 32_768] {
            for p in [1u32, 2, 3, 4, 5, 7, 16, 128, 1000] {
                if p > m {
                    continue;
                }
                let mut next = 0;
                for i in 0..p {
                    let r = range_for_replica(i, p, m);
                    assert_eq!(r.start, next, "gap or overlap at m={m} p={p} i={i}");
                    assert!(r.end >= r.start, "empty range at m={m} p={p} i={i}");
                    assert_eq!(owner_of_group(r.start, p, m), i);
                    assert_eq!(owner_of_group(r.end, p, m), i);
                    next = r.end + 1;
                }
                assert_eq!(next, m, "ranges must cover every group, m={m} p={p}");
            }
        }
    }

    #[test]
    fn layout_rejects_bad_parallelism() {
        assert_eq!(
            Layout::new(0, 128),
            Err(LayoutError::Parallelism {
                parallelism: 0,
                max: 128
            })
        );
        assert_eq!(
            Layout::new(129, 128),
            Err(LayoutError::Parallelism {
                parallelism: 129,
                max: 128
            })
        );
        assert_eq!(Layout::new(1, 0), Err(LayoutError::MaxParallelism(0)));
        assert_eq!(
            Layout::new(1, 40_000),
            Err(LayoutError::MaxParallelism(40_000))
        );
        let layout = Layout::new(3, 128).unwrap();
        assert!(layout.range(3).is_err());
        assert_eq!(
            layout.range(2).unwrap(),
            KeyGroupRange {
                start: 86,
                end: 127
            }
        );
    }

    // A tiny reader for the vectors file, so the core crate needs no JSON dependency.
    #[derive(Debug)]
    struct HashVector {
        key: Vec<u8>,
        hash: u32,
    }
    #[derive(Debug)]
    struct OwnerVector {
        key: Vec<u8>,
        max_parallelism: u32,
        parallelism: u32,
        key_group: u32,
        owner: u32,
    }
    #[derive(Debug)]
    struct RangeVector {
        index: u32,
        parallelism: u32,
        max_parallelism: u32,
        start: u32,
        end: u32,
    }
    struct Vectors {
        hashes: Vec<HashVector>,
        owners: Vec<OwnerVector>,
        ranges: Vec<RangeVector>,
    }

    fn field<'a>(line: &'a str, name: &str) -> &'a str {
        let pat = format!("\"{name}\": ");
        let start = line
            .find(&pat)
            .map(|i| i + pat.len())
            .unwrap_or_else(|| panic!("{name} in {line}"));
        let rest = &line[start..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end].trim().trim_matches('"')
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn parse_vectors(text: &str) -> Vectors {
        let mut v = Vectors {
            hashes: vec![],
            owners: vec![],
            ranges: vec![],
        };
        for line in text.lines().map(str::trim) {
            if line.starts_with("{\"key_hex\"") && line.contains("\"hash\"") {
                v.hashes.push(HashVector {
                    key: hex(field(line, "key_hex")),
                    hash: field(line, "hash").parse().unwrap(),
                });
            } else if line.starts_with("{\"key_hex\"") {
                v.owners.push(OwnerVector {
                    key: hex(field(line, "key_hex")),
                    max_parallelism: field(line, "max_parallelism").parse().unwrap(),
                    parallelism: field(line, "parallelism").parse().unwrap(),
                    key_group: field(line, "key_group").parse().unwrap(),
                    owner: field(line, "owner").parse().unwrap(),
                });
            } else if line.starts_with("{\"index\"") {
                v.ranges.push(RangeVector {
                    index: field(line, "index").parse().unwrap(),
                    parallelism: field(line, "parallelism").parse().unwrap(),
                    max_parallelism: field(line, "max_parallelism").parse().unwrap(),
                    start: field(line, "start").parse().unwrap(),
                    end: field(line, "end").parse().unwrap(),
                });
            }
        }
        assert!(
            !v.hashes.is_empty() && !v.owners.is_empty() && !v.ranges.is_empty(),
            "vectors file parsed empty"
        );
        v
    }
}
