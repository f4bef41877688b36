use std::path::PathBuf;

use stator_core::keygroup::KeyGroupRange;
use stator_core::proto::ErrorCode;

/// Why a state operation failed. Every variant maps to one protocol error code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state {0:?} is not declared")]
    UnknownState(String),
    #[error("state {name:?} is a {actual} state; this operation needs a {expected} state")]
    WrongKind {
        name: String,
        actual: super::Kind,
        expected: super::Kind,
    },
    #[error(
        "key group {group} belongs to replica {owner}; this is replica {replica} with key groups {range}"
    )]
    WrongKeyGroup {
        group: u32,
        owner: u32,
        replica: u32,
        range: KeyGroupRange,
    },
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: u32,
    },
    #[error("{what} of {len} items exceeds the limit of {max}")]
    TooMany {
        what: &'static str,
        len: usize,
        max: u32,
    },
    #[error("state {name:?} is declared as {existing}; it cannot be redeclared as {requested}")]
    Conflict {
        name: String,
        existing: String,
        requested: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("writes are fenced: a stop-with-savepoint is under way and this replica is stopping")]
    Suspended,
    #[error("the write failed and was not applied: {0}")]
    WriteFailed(String),
    #[error("stored state is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot create the data directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a thread panicked while holding the state catalog lock")]
    Poisoned,
    #[error("RocksDB failed")]
    Rocks(#[from] rocksdb::Error),
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::UnknownState(_) => ErrorCode::UnknownState,
            StoreError::WrongKind { .. } => ErrorCode::WrongKind,
            StoreError::WrongKeyGroup { .. } => ErrorCode::WrongKeyGroup,
            StoreError::TooLarge { .. } | StoreError::TooMany { .. } => ErrorCode::TooLarge,
            StoreError::Conflict { .. } => ErrorCode::StateConflict,
            StoreError::Invalid(_) => ErrorCode::InvalidArgument,
            StoreError::Suspended => ErrorCode::Suspended,
            StoreError::Corrupt(_)
            | StoreError::WriteFailed(_)
            | StoreError::Io { .. }
            | StoreError::Poisoned
            | StoreError::Rocks(_) => ErrorCode::Internal,
        }
    }
}
