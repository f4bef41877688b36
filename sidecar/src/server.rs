//! The state protocol server on a Unix socket.
//!
//! Each connection reads what is available, answers every complete frame in it in order, then
//! writes all answers at once: pipelined requests cost one read and one write per burst. A frame
//! that cannot be decoded gets one error answer (id 0) and that connection is closed; every other
//! connection carries on.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use stator_core::frame::{FrameError, decode_frame, encode_frame};
use stator_core::limits::MAX_FRAME_BYTES;
use stator_core::proto::{
    ErrorCode, Request, Response, WriteBatch, request::Op, response::Result as R,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::protocol::{decode, error, handle_request, handle_writes};
use crate::store::Store;

/// Answers buffered beyond this are written before more requests of the burst are handled.
const MAX_BUFFERED_OUTPUT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("socket {0} is in use by a live process; refusing to replace it")]
    InUse(PathBuf),
    #[error("cannot bind the state socket at {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds `path` with mode 0660. A stale socket file (nobody accepting) is replaced; a live one is
/// left alone.
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let bind_err = |source| ServeError::Bind {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    Ok(listener)
}

/// Accepts connections until `shutdown` fires, then lets every connection finish the requests
/// it has already read and returns when all are closed.
pub async fn serve(
    listener: UnixListener,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (store, metrics, shutdown) = (store.clone(), metrics.clone(), shutdown.clone());
                    tracker.spawn(async move {
                        metrics.connections.inc();
                        if let Err(e) = connection(stream, &store, &metrics, shutdown).await {
                            tracing::debug!(error = %e, "state connection ended with an I/O error");
                        }
                        metrics.connections.dec();
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a state connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(
    mut stream: UnixStream,
    store: &Store,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut output = BytesMut::with_capacity(64 * 1024);
    loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.cancelled() => 0,
            read = stream.read_buf(&mut input) => read?,
        };
        if read == 0 {
            if !input.is_empty() && !shutdown.is_cancelled() {
                metrics.frame_errors.inc();
                tracing::warn!(
                    bytes = input.len(),
                    "state connection closed in the middle of a frame"
                );
            }
            return Ok(());
        }
        let mut close = false;
        let mut writes = Vec::new();
        loop {
            match decode_frame(&mut input, MAX_FRAME_BYTES) {
                Ok(Some(frame)) => match decode(frame) {
                    Ok(Request {
                        id,
                        op: Some(Op::Write(batch)),
                    }) => writes.push((id, batch)),
                    Ok(request) => {
                        answer_writes(store, metrics, &mut writes, &mut output);
                        encode_frame(&handle_request(store, metrics, request), &mut output);
                    }
                    Err(e) => {
                        answer_writes(store, metrics, &mut writes, &mut output);
                        reject(&mut output, e, metrics);
                        close = true;
                        break;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    answer_writes(store, metrics, &mut writes, &mut output);
                    let code = match e {
                        FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                        FrameError::BadLength => ErrorCode::Malformed,
                    };
                    reject(&mut output, error(code, e.to_string()), metrics);
                    close = true;
                    break;
                }
            }
            // Bound what one burst of pipelined requests can make us buffer.
            if output.len() >= MAX_BUFFERED_OUTPUT {
                answer_writes(store, metrics, &mut writes, &mut output);
                stream.write_all(&output).await?;
                output.clear();
            }
        }
        answer_writes(store, metrics, &mut writes, &mut output);
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if close {
            stream.shutdown().await?;
            return Ok(());
        }
    }
}

/// Group-commits the write requests collected so far and appends their answers, keeping every
/// answer in request order.
fn answer_writes(
    store: &Store,
    metrics: &Metrics,
    writes: &mut Vec<(u64, WriteBatch)>,
    output: &mut BytesMut,
) {
    if writes.is_empty() {
        return;
    }
    let mut answers = Vec::with_capacity(writes.len());
    handle_writes(store, metrics, std::mem::take(writes), &mut answers);
    for answer in &answers {
        encode_frame(answer, output);
    }
}

fn reject(output: &mut BytesMut, e: stator_core::proto::Error, metrics: &Metrics) {
    metrics.frame_errors.inc();
    metrics.error(ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Malformed));
    tracing::warn!(error = %e.message, "closing a state connection after a bad frame");
    encode_frame(
        &Response {
            id: 0,
            result: Some(R::Error(e)),
        },
        output,
    );
}
