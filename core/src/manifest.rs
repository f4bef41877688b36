//! The manifest of a checkpoint or savepoint: the commit point of one replica's snapshot.
//!
//! A snapshot is complete exactly when its `manifest.json` exists; it is written last, with a
//! conditional put. It lists every file the snapshot needs with its size and SHA-256, so a
//! restore can verify everything it reads. JSON, camelCase; readers refuse a `formatVersion`
//! they do not know.
//!
//! Layout under a job's state location (see docs/checkpoints.md):
//!
//! - `checkpoints/replica-{i}-of-{P}/chk-{id:020}/manifest.json`, with files (shared between
//!   checkpoints of that replica, named by content) under `checkpoints/replica-{i}-of-{P}/shared/`.
//! - a savepoint directory `<dir>/replica-{i}-of-{P}/manifest.json` with its own copies of every
//!   file under `<dir>/replica-{i}-of-{P}/files/`. A savepoint is complete when all P replica
//!   manifests exist.
//! - a savepoint taken in two phases first references the files its replica's last checkpoint
//!   already uploaded (`source` on those entries: the URL of the checkpoint's object) and names
//!   a hold (`hold`) that keeps them from garbage collection; the server-side copies into
//!   `files/` follow, then the manifest is written again without `source` and `hold` and the
//!   hold is deleted. A reader takes `object` and, while it is missing, `source`.

use serde::{Deserialize, Serialize};

use crate::keygroup::KeyGroupRange;

/// The version this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    pub kind: SnapshotKind,
    /// The checkpoint id (increasing per replica directory); for a savepoint, the id of the
    /// checkpoint sequence at the time it was taken.
    pub checkpoint_id: u64,
    /// The savepoint's id, for savepoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_id: Option<String>,
    /// The operation (upgrade, rescale, suspend...) a savepoint was taken for, as the operator
    /// named it: a savepoint request is idempotent per operation, and a location holding another
    /// operation's savepoint is refused. Absent in checkpoints and in savepoints taken without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// The incarnation of the job (its StreamJob UID) whose sidecar wrote the snapshot, when the
    /// sidecar was told (`--job-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub replica_index: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub key_groups: KeyGroupRange,
    /// Milliseconds since the Unix epoch when the snapshot was cut.
    pub created_at_ms: u64,
    pub states: Vec<StateDeclaration>,
    pub operator_states: Vec<OperatorStateDeclaration>,
    /// Every operator-state list at the cut, values hex-encoded. Kept in the manifest (it is
    /// small: source positions and the like) so a rescaled replica can redistribute the lists of
    /// every old replica without downloading their keyed state.
    #[serde(default)]
    pub operator_state: std::collections::BTreeMap<String, Vec<String>>,
    pub files: Vec<FileEntry>,
    /// A savepoint that still references its checkpoint's objects (see `FileEntry::source`):
    /// the URL of the hold object that keeps them from garbage collection until the copies are
    /// made. Absent once the savepoint is self-contained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDeclaration {
    pub name: String,
    /// `value`, `list` or `map`.
    pub kind: String,
    #[serde(default)]
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorStateDeclaration {
    pub name: String,
    /// `split` or `union`.
    pub redistribution: String,
}

/// One file of the RocksDB snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// The file's name in the RocksDB directory.
    pub name: String,
    /// Where the object is, relative to the replica's directory (`shared/...` or `files/...`).
    pub object: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// Savepoints not yet self-contained: the URL of an object in the same store (a checkpoint's
    /// shared file) that holds these bytes until `object` is copied from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a manifest: {0}")]
    Parse(#[from] serde_json::Error),
    #[error(
        "manifest format version {found} is not supported (this build reads version {FORMAT_VERSION})"
    )]
    Version { found: u32 },
    /// A file name or object key that would leave the directory it is joined to.
    #[error("file entry {index} has an unsafe {field} {value:?}: {reason}")]
    UnsafePath {
        index: usize,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("file name {name:?} is listed twice")]
    DuplicateFile { name: String },
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            format_version: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes)?;
        if probe.format_version != FORMAT_VERSION {
            return Err(ManifestError::Version {
                found: probe.format_version,
            });
        }
        let manifest: Manifest = serde_json::from_slice(bytes)?;
        manifest.check_paths()?;
        Ok(manifest)
    }

    /// Every file name must be one plain path component (it is joined to a local directory) and
    /// every object key a relative key of plain components (it is joined to the replica's
    /// directory, which on `file://` is a local path too), so that no manifest can make a reader
    /// write or read outside the directories it means.
    fn check_paths(&self) -> Result<(), ManifestError> {
        let mut names = std::collections::BTreeSet::new();
        for (index, f) in self.files.iter().enumerate() {
            let unsafe_path = |field, value: &str, reason| ManifestError::UnsafePath {
                index,
                field,
                value: value.to_owned(),
                reason,
            };
            if f.name.contains('/') {
                return Err(unsafe_path("name", &f.name, "it contains a separator"));
            }
            if let Some(reason) = unsafe_component(&f.name) {
                return Err(unsafe_path("name", &f.name, reason));
            }
            if f.object.starts_with('/') {
                return Err(unsafe_path("object", &f.object, "it is absolute"));
            }
            if let Some(reason) = f.object.split('/').find_map(unsafe_component) {
                return Err(unsafe_path("object", &f.object, reason));
            }
            if let Some(source) = &f.source
                && let Some(reason) = unsafe_url(source, "shared")
            {
                return Err(unsafe_path("source", source, reason));
            }
            // Readers name cached downloads by it.
            if f.sha256.len() != 64
                || !f
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(unsafe_path(
                    "sha256",
                    &f.sha256,
                    "it is not 64 lowercase hex digits",
                ));
            }
            if !names.insert(f.name.as_str()) {
                return Err(ManifestError::DuplicateFile {
                    name: f.name.clone(),
                });
            }
        }
        if let Some(hold) = &self.hold
            && let Some(reason) = unsafe_url(hold, HOLDS_DIR)
        {
            return Err(ManifestError::UnsafePath {
                index: self.files.len(),
                field: "hold",
                value: hold.clone(),
                reason,
            });
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data to a Vec cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Whether every file is in the snapshot's own directory (no `source` left).
    pub fn is_self_contained(&self) -> bool {
        self.hold.is_none() && self.files.iter().all(|f| f.source.is_none())
    }
}

/// Under a replica's checkpoint directory: one hold per savepoint that still references that
/// directory's shared objects. Garbage collection keeps every object a hold names.
pub const HOLDS_DIR: &str = "holds";

/// Keeps a checkpoint directory's shared objects that a savepoint references until the
/// savepoint has copied them into its own directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    /// The savepoint replica directory's URL.
    pub savepoint: String,
    /// Keys relative to the checkpoint directory (`shared/...`).
    pub objects: Vec<String>,
    /// When the hold was written (ms since the epoch; 0 in holds written before this field).
    /// Retention drops a hold this old whose savepoint has no manifest: its sidecar died before
    /// the savepoint completed, and nothing else would ever release it.
    #[serde(default)]
    pub created_ms: u64,
}

impl Hold {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// Why `url` is not a URL of a stored object a manifest may point to, if it is not: `s3://` or
/// `file:///`, plain components after the bucket or root, and an object directly in a directory
/// named `dir` (`shared` for sources, `holds` for holds), so that a manifest cannot make a
/// reader copy or delete anything else.
fn unsafe_url(url: &str, dir: &str) -> Option<&'static str> {
    let path = if let Some(rest) = url.strip_prefix("s3://") {
        rest
    } else if let Some(rest) = url.strip_prefix("file:///") {
        rest
    } else {
        return Some("it is not an s3:// or file:/// URL");
    };
    if let Some(reason) = path.split('/').find_map(unsafe_component) {
        return Some(reason);
    }
    let mut parts = path.rsplit('/');
    let (_, parent) = (parts.next(), parts.next());
    (parent != Some(dir))
        .then_some("it is not an object of a checkpoint directory's shared files or holds")
}

/// Why `part` is not a safe path component, if it is not.
fn unsafe_component(part: &str) -> Option<&'static str> {
    match part {
        "" => Some("it has an empty component"),
        "." | ".." => Some("it has a `.` or `..` component"),
        _ if part.contains('\\') => Some("it contains a backslash"),
        _ if part.contains('\0') => Some("it contains a NUL byte"),
        _ => None,
    }
}

pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `replica-{i}-of-{P}`.
pub fn replica_dir(replica: u32, parallelism: u32) -> String {
    format!("replica-{replica}-of-{parallelism}")
}

/// Parses `replica-{i}-of-{P}`.
pub fn parse_replica_dir(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("replica-")?;
    let (i, p) = rest.split_once("-of-")?;
    Some((i.parse().ok()?, p.parse().ok()?))
}

/// `chk-{id:020}`: zero-padded so names sort by id.
pub fn checkpoint_dir(id: u64) -> String {
    format!("chk-{id:020}")
}

pub fn parse_checkpoint_dir(name: &str) -> Option<u64> {
    name.strip_prefix("chk-")?.parse().ok()
}

/// RFC 3339 (UTC, milliseconds) for epoch milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_id() {
        assert_eq!(parse_replica_dir(&replica_dir(2, 5)), Some((2, 5)));
        assert_eq!(parse_checkpoint_dir(&checkpoint_dir(42)), Some(42));
        assert!(checkpoint_dir(9) < checkpoint_dir(10));
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_251_200_123), "2024-03-01T00:00:00.123Z");
    }

    fn manifest(files: &[(&str, &str)]) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            kind: SnapshotKind::Checkpoint,
            checkpoint_id: 1,
            savepoint_id: None,
            operation_id: None,
            job_id: None,
            replica_index: 0,
            parallelism: 1,
            max_parallelism: 128,
            key_groups: KeyGroupRange { start: 0, end: 127 },
            created_at_ms: 1,
            states: vec![],
            operator_states: vec![],
            operator_state: Default::default(),
            files: files
                .iter()
                .map(|(name, object)| FileEntry {
                    name: (*name).into(),
                    object: (*object).into(),
                    size: 1,
                    sha256: "ab".repeat(32),
                    source: None,
                })
                .collect(),
            hold: None,
        }
    }

    #[test]
    fn refuses_unknown_versions() {
        let m = manifest(&[]);
        let json = String::from_utf8(m.to_json()).unwrap();
        assert!(json.contains("\"formatVersion\": 1"));
        assert_eq!(Manifest::parse(json.as_bytes()).unwrap(), m);
        let newer = json.replace("\"formatVersion\": 1", "\"formatVersion\": 2");
        assert!(matches!(
            Manifest::parse(newer.as_bytes()),
            Err(ManifestError::Version { found: 2 })
        ));
    }

    #[test]
    fn accepts_the_names_snapshots_write() {
        let m = manifest(&[
            ("000012.sst", "shared/9f2c-000012.sst"),
            ("MANIFEST-000005", "files/MANIFEST-000005"),
            ("CURRENT", "shared/ab-CURRENT"),
        ]);
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn refuses_file_names_and_objects_that_leave_their_directory() {
        let cases = [
            ("../../run/state.sock", "shared/x", "name"),
            ("..", "shared/x", "name"),
            (".", "shared/x", "name"),
            ("", "shared/x", "name"),
            ("/etc/passwd", "shared/x", "name"),
            ("sub/000012.sst", "shared/x", "name"),
            ("a\\..\\b", "shared/x", "name"),
            ("000012.sst", "/etc/passwd", "object"),
            ("000012.sst", "../other-job/shared/x", "object"),
            ("000012.sst", "shared/../../x", "object"),
            ("000012.sst", "shared//x", "object"),
            ("000012.sst", "", "object"),
        ];
        let mut bad_sha = manifest(&[("CURRENT", "shared/x")]);
        bad_sha.files[0].sha256 = "../../escaped".into();
        assert!(matches!(
            Manifest::parse(&bad_sha.to_json()),
            Err(ManifestError::UnsafePath {
                field: "sha256",
                ..
            })
        ));
        for (name, object, field) in cases {
            let json = manifest(&[(name, object)]).to_json();
            match Manifest::parse(&json) {
                Err(e @ ManifestError::UnsafePath { field: f, .. }) => {
                    assert_eq!(f, field, "{name:?} {object:?}: {e}");
                    let shown = if field == "name" { name } else { object };
                    assert!(e.to_string().contains(&format!("{shown:?}")), "{e}");
                }
                other => panic!("{name:?} {object:?} was accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_a_file_listed_twice() {
        let json = manifest(&[
            ("CURRENT", "shared/a-CURRENT"),
            ("CURRENT", "shared/b-CURRENT"),
        ])
        .to_json();
        assert!(matches!(
            Manifest::parse(&json),
            Err(ManifestError::DuplicateFile { .. })
        ));
    }
}
