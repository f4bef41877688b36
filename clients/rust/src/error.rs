use stator_core::proto::{self, ErrorCode};

/// An error answer from the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ServerError {
    pub code: ErrorCode,
    pub message: String,
    /// For `WrongKeyGroup`: the key's group and the replica that owns it.
    pub key_group: u32,
    pub owner: u32,
    /// For errors in a write batch: the index of the failing op.
    pub op_index: u32,
}

impl From<proto::Error> for ServerError {
    fn from(e: proto::Error) -> Self {
        Self {
            code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
            message: e.message,
            key_group: e.key_group,
            owner: e.owner,
            op_index: e.op_index,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the sidecar socket {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O on the sidecar connection failed")]
    Io(#[from] std::io::Error),
    #[error("the sidecar closed the connection")]
    Closed,
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("the sidecar uses key-group hash {0:?}; this client implements murmur3_x86_32/seed0")]
    HashMismatch(String),
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl Error {
    /// The server's error code, if the sidecar answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server(e) => Some(e.code),
            _ => None,
        }
    }

    /// The sidecar's socket is missing or refuses connections: it is not up yet (it creates
    /// the socket once the state is restored) and a later connect may succeed.
    pub fn is_not_up_yet(&self) -> bool {
        matches!(self, Error::Connect { source, .. } if matches!(
            source.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ))
    }
}
