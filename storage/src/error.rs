use std::path::PathBuf;

/// A failed storage operation. [`StorageError::is_transient`] says whether retrying later may
/// help.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{url} does not exist")]
    NotFound { url: String },
    #[error("{url} already exists")]
    AlreadyExists { url: String },
    #[error("invalid location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },
    #[error("{op} {url}: {message}")]
    Remote {
        op: &'static str,
        url: String,
        message: String,
        transient: bool,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read credentials: {0}")]
    Credentials(String),
}

impl StorageError {
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Remote { transient, .. } => *transient,
            StorageError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StorageError::Io { what, path, source }
    }
}
