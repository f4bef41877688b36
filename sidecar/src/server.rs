//! The state protocol server on a Unix socket.
//!
//! Each connection has a thread of its own. It reads what is available, answers every complete
//! frame in it in order, then writes all answers at once: pipelined requests cost one read and
//! one write per burst. A frame that cannot be decoded gets one error answer (id 0) and that
//! connection is closed; every other connection carries on.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use stator_core::frame::{FrameError, decode_frame, encode_frame};
use stator_core::limits::MAX_FRAME_BYTES;
use stator_core::proto::{
    ErrorCode, GetRequest, Request, Response, WriteBatch, request::Op, response::Result as R,
    write_op,
};
use tokio::io::AsyncWriteExt;
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
///
/// Each connection is served by a thread of its own with blocking reads and writes, and RocksDB
/// is called on that thread: a request that waits on RocksDB (a write stall, a slow disk) holds
/// up only its own connection, never the async workers that accept connections and serve
/// health, readiness, metrics and the admin API. `--max-connections` bounds the threads.
pub async fn serve(
    listener: UnixListener,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(OpenConnections::default());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracker.spawn(refuse(stream, limits.max_connections, metrics.clone()));
                        continue;
                    };
                    let stream = match stream.into_std().and_then(|s| {
                        s.set_nonblocking(false)?;
                        Ok(s)
                    }) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot serve a state connection");
                            continue;
                        }
                    };
                    let Some(id) = open.add(&stream) else {
                        tracing::warn!("cannot serve a state connection: its socket cannot be shared");
                        continue;
                    };
                    let (store, metrics, conns) = (store.clone(), metrics.clone(), open.clone());
                    let spawned = std::thread::Builder::new()
                        .name("stator-conn".into())
                        .spawn(move || {
                            metrics.connections.inc();
                            let idle = limits.idle_timeout;
                            if let Err(e) = connection(stream, &store, &metrics, idle) {
                                tracing::debug!(error = %e, "state connection ended with an I/O error");
                            }
                            metrics.connections.dec();
                            conns.remove(id);
                            drop(slot);
                        });
                    if let Err(e) = spawned {
                        open.remove(id);
                        tracing::warn!(error = %e, "cannot start a thread for a state connection");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a state connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
    // Every connection sees the end of its input after what it has already received, answers
    // that, and closes.
    open.end_input();
    tracker.close();
    tracker.wait().await;
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// The open connections, so that shutdown can end their input.
#[derive(Default)]
struct OpenConnections {
    streams: std::sync::Mutex<(u64, HashMap<u64, StdUnixStream>)>,
}

impl OpenConnections {
    fn add(&self, stream: &StdUnixStream) -> Option<u64> {
        let clone = stream.try_clone().ok()?;
        let mut guard = self.streams.lock().ok()?;
        let (next, streams) = &mut *guard;
        *next += 1;
        streams.insert(*next, clone);
        Some(*next)
    }

    fn remove(&self, id: u64) {
        if let Ok(mut guard) = self.streams.lock() {
            guard.1.remove(&id);
        }
    }

    fn end_input(&self) {
        if let Ok(guard) = self.streams.lock() {
            for stream in guard.1.values() {
                let _ = stream.shutdown(std::net::Shutdown::Read);
            }
        }
    }
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

/// Bytes read from the socket per call.
const READ_CHUNK: usize = 64 * 1024;

fn connection(
    mut stream: StdUnixStream,
    store: &Store,
    metrics: &Metrics,
    idle_timeout: Option<Duration>,
) -> io::Result<()> {
    stream.set_read_timeout(idle_timeout)?;
    // A client that stops reading its answers is treated as idle too.
    stream.set_write_timeout(idle_timeout)?;
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(READ_CHUNK);
    loop {
        let read = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let t = idle_timeout.unwrap_or_default();
                metrics.idle_closed.inc();
                tracing::info!(seconds = t.as_secs(), "closing an idle state connection");
                let message = format!(
                    "closed after {} s without a request (--idle-timeout-secs)",
                    t.as_secs()
                );
                closing_answer(&mut output, error(ErrorCode::Unavailable, message));
                stream.write_all(&output)?;
                stream.shutdown(std::net::Shutdown::Both)?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if read == 0 {
            if !input.is_empty() {
                metrics.frame_errors.inc();
                tracing::warn!(
                    bytes = input.len(),
                    "state connection closed in the middle of a frame"
                );
            }
            return Ok(());
        }
        input.extend_from_slice(&chunk[..read]);
        let close = answer_burst(store, metrics, &mut input, &mut output, |answers| {
            stream.write_all(answers)
        })?;
        if close {
            stream.shutdown(std::net::Shutdown::Both)?;
            return Ok(());
        }
    }
}

/// Answers every complete frame in `input`, in order, into `output`, and leaves an incomplete
/// frame in `input`. `flush` is given the answers each time [`MAX_BUFFERED_OUTPUT`] is reached
/// and at the end, and `output` is emptied after it. Returns true when the connection must be
/// closed after its answers (a bad frame).
///
/// Consecutive writes and value gets form a segment: its writes are group-committed with one
/// RocksDB write, then its gets are read, and the answers go out in request order. A get may be
/// read after writes that came later in the segment only when none of them writes its key, so
/// every answer is what in-order execution gives; a write of a key a pending get reads closes
/// the segment first. Any other request closes it too.
pub fn answer_burst(
    store: &Store,
    metrics: &Metrics,
    input: &mut BytesMut,
    output: &mut BytesMut,
    mut flush: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<bool> {
    let mut close = false;
    let mut segment = Segment::default();
    loop {
        match decode_frame(input, MAX_FRAME_BYTES) {
            Ok(Some(frame)) => match (frame.len(), decode(frame)) {
                (
                    len,
                    Ok(Decoded::Request(Request {
                        id,
                        op: Some(Op::Write(batch)),
                    })),
                ) => {
                    if segment.read_by_pending_gets(&batch) {
                        segment.answer(store, metrics, output, &mut flush)?;
                    }
                    segment.push_write(id, batch, len);
                }
                (
                    len,
                    Ok(Decoded::Request(Request {
                        id,
                        op: Some(Op::Get(get)),
                    })),
                ) => segment.push_get(id, get, len),
                (_, Ok(Decoded::Request(request))) => {
                    segment.answer(store, metrics, output, &mut flush)?;
                    encode_frame(&handle_request(store, metrics, request), output);
                }
                (_, Ok(Decoded::Refused(answer))) => {
                    segment.answer(store, metrics, output, &mut flush)?;
                    metrics.error(ErrorCode::TooLarge);
                    encode_frame(&answer, output);
                }
                (_, Err(e)) => {
                    segment.answer(store, metrics, output, &mut flush)?;
                    reject(output, e, metrics);
                    close = true;
                    break;
                }
            },
            Ok(None) => break,
            Err(e) => {
                segment.answer(store, metrics, output, &mut flush)?;
                let code = match e {
                    FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                    FrameError::BadLength => ErrorCode::Malformed,
                };
                reject(output, error(code, e.to_string()), metrics);
                close = true;
                break;
            }
        }
        // Bound what one burst of pipelined requests can make us buffer.
        if output.len() + segment.pending_bytes >= MAX_BUFFERED_OUTPUT {
            segment.answer(store, metrics, output, &mut flush)?;
            if !output.is_empty() {
                flush(&output[..])?;
                output.clear();
            }
        }
    }
    segment.answer(store, metrics, output, &mut flush)?;
    if !output.is_empty() {
        flush(&output[..])?;
        output.clear();
    }
    Ok(close)
}

/// Writes and value gets collected to be answered together (see [`answer_burst`]).
#[derive(Default)]
struct Segment {
    writes: Vec<(u64, WriteBatch)>,
    gets: Vec<(u64, GetRequest)>,
    /// Request order: true for a write, false for a get.
    order: Vec<bool>,
    /// The keys the pending gets read (of any state: a write of the same key in another state
    /// closes the segment too, which is never wrong, only a smaller group commit).
    read: HashSet<Bytes>,
    /// Request bytes held (their frames' lengths): what the segment may add to the output once
    /// answered is bounded with the output itself.
    pending_bytes: usize,
}

impl Segment {
    fn push_write(&mut self, id: u64, batch: WriteBatch, frame_len: usize) {
        self.pending_bytes += frame_len;
        self.writes.push((id, batch));
        self.order.push(true);
    }

    fn push_get(&mut self, id: u64, get: GetRequest, frame_len: usize) {
        self.pending_bytes += frame_len;
        self.read.insert(get.key.clone());
        self.gets.push((id, get));
        self.order.push(false);
    }

    /// Whether `batch` writes a value under a key a pending get reads.
    fn read_by_pending_gets(&self, batch: &WriteBatch) -> bool {
        !self.read.is_empty()
            && batch.ops.iter().any(|op| match &op.op {
                Some(write_op::Op::ValuePut(p)) => self.read.contains(&p.key),
                Some(write_op::Op::ValueClear(c)) => self.read.contains(&c.key),
                _ => false,
            })
    }

    /// Commits the writes, reads the gets one at a time, and appends the answers in request
    /// order, handing `output` to `flush` whenever it reaches [`MAX_BUFFERED_OUTPUT`]: a segment
    /// of gets of large values never holds more than one answer beyond that.
    fn answer<F: FnMut(&[u8]) -> io::Result<()>>(
        &mut self,
        store: &Store,
        metrics: &Metrics,
        output: &mut BytesMut,
        flush: &mut F,
    ) -> io::Result<()> {
        if self.order.is_empty() {
            return Ok(());
        }
        let mut write_answers = Vec::with_capacity(self.writes.len());
        if !self.writes.is_empty() {
            let writes = std::mem::take(&mut self.writes);
            handle_writes(store, metrics, writes, &mut write_answers);
        }
        let mut writes = write_answers.into_iter();
        let mut gets = std::mem::take(&mut self.gets).into_iter();
        for is_write in std::mem::take(&mut self.order) {
            let answer = if is_write {
                writes.next()
            } else {
                gets.next().map(|(id, get)| {
                    let request = Request {
                        id,
                        op: Some(Op::Get(get)),
                    };
                    handle_request(store, metrics, request)
                })
            };
            if let Some(answer) = answer {
                encode_frame(&answer, output);
            }
            if output.len() >= MAX_BUFFERED_OUTPUT {
                flush(&output[..])?;
                output.clear();
            }
        }
        self.read.clear();
        self.pending_bytes = 0;
        Ok(())
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
