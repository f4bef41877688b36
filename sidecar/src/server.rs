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
use std::time::Duration;

use bytes::BytesMut;
use stator_core::frame::{FrameError, decode_frame, encode_frame};
use stator_core::limits::MAX_FRAME_BYTES;
use stator_core::proto::{
    ErrorCode, Request, Response, WriteBatch, request::Op, response::Result as R,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::protocol::{Decoded, decode, error, handle_request, handle_writes};
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

/// Bounds on the connections themselves (`--max-connections`, `--idle-timeout-secs`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Option<Duration>,
}

/// Accepts connections until `shutdown` fires, then lets every connection finish the requests
/// it has already read and returns when all are closed.
pub async fn serve(
    listener: UnixListener,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (store, metrics, shutdown) = (store.clone(), metrics.clone(), shutdown.clone());
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracker.spawn(refuse(stream, limits.max_connections, metrics));
                        continue;
                    };
                    tracker.spawn(async move {
                        metrics.connections.inc();
                        let idle = limits.idle_timeout;
                        if let Err(e) = connection(stream, &store, &metrics, idle, shutdown).await {
                            tracing::debug!(error = %e, "state connection ended with an I/O error");
                        }
                        metrics.connections.dec();
                        drop(slot);
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

/// Answers a connection over the limit with one UNAVAILABLE error and closes it.
async fn refuse(mut stream: UnixStream, max: usize, metrics: Arc<Metrics>) {
    metrics.refused_connections.inc();
    metrics.error(ErrorCode::Unavailable);
    tracing::warn!(
        max,
        "refusing a state connection: the connection limit is reached"
    );
    let mut output = BytesMut::new();
    closing_answer(
        &mut output,
        error(
            ErrorCode::Unavailable,
            format!(
                "the sidecar already serves {max} connections (--max-connections); close one \
                 or raise the limit"
            ),
        ),
    );
    // A client that went away first is no concern.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&output).await?;
        stream.shutdown().await
    })
    .await;
}

async fn connection(
    mut stream: UnixStream,
    store: &Store,
    metrics: &Metrics,
    idle_timeout: Option<Duration>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut output = BytesMut::with_capacity(64 * 1024);
    loop {
        let idle = async {
            match idle_timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            biased;
            _ = shutdown.cancelled() => 0,
            read = stream.read_buf(&mut input) => read?,
            _ = idle => {
                let t = idle_timeout.unwrap_or_default();
                metrics.idle_closed.inc();
                tracing::info!(seconds = t.as_secs(), "closing an idle state connection");
                let message = format!(
                    "closed after {} s without a request (--idle-timeout-secs)",
                    t.as_secs()
                );
                closing_answer(&mut output, error(ErrorCode::Unavailable, message));
                stream.write_all(&output).await?;
                stream.shutdown().await?;
                return Ok(());
            }
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
                    Ok(Decoded::Request(Request {
                        id,
                        op: Some(Op::Write(batch)),
                    })) => writes.push((id, batch)),
                    Ok(Decoded::Request(request)) => {
                        answer_writes(store, metrics, &mut writes, &mut output);
                        encode_frame(&handle_request(store, metrics, request), &mut output);
                    }
                    Ok(Decoded::Refused(answer)) => {
                        answer_writes(store, metrics, &mut writes, &mut output);
                        metrics.error(ErrorCode::TooLarge);
                        encode_frame(&answer, &mut output);
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
    closing_answer(output, e);
}

/// The last answer on a connection about to be closed: an error with id 0, since it answers no
/// one request.
fn closing_answer(output: &mut BytesMut, e: stator_core::proto::Error) {
    encode_frame(
        &Response {
            id: 0,
            result: Some(R::Error(e)),
        },
        output,
    );
}
