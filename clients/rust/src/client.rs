use std::path::Path;

use bytes::{Bytes, BytesMut};
use prost::Message;
use stator_core::frame::{decode_frame, encode_frame};
use stator_core::keygroup::{HASH_NAME, owner};
use stator_core::limits::{DEFAULT_PAGE_ENTRIES, MAX_PAGE_ENTRIES};
use stator_core::proto::{self, Request, Response, request::Op, response::Result as R};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::{Batch, Error, ServerError};

/// One page of a map, in map-key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapPage {
    pub entries: Vec<(Bytes, Bytes)>,
    pub has_more: bool,
    pub next_after: Bytes,
}

/// One page of a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub values: Vec<Bytes>,
    pub has_more: bool,
    /// Where the next page starts.
    pub next_offset: u32,
}

/// A connection to the sidecar.
pub struct Client {
    stream: UnixStream,
    input: BytesMut,
    output: BytesMut,
    next_id: u64,
    /// Ids sent and not yet answered, oldest first.
    pending: std::collections::VecDeque<u64>,
    hello: proto::HelloResponse,
    max_frame: u32,
}

impl Client {
    /// Connects and checks that the sidecar uses this client's key-group hash.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| Error::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let mut client = Self {
            stream,
            input: BytesMut::with_capacity(64 * 1024),
            output: BytesMut::with_capacity(64 * 1024),
            next_id: 1,
            pending: Default::default(),
            hello: Default::default(),
            max_frame: stator_core::limits::MAX_FRAME_BYTES,
        };
        let hello = match client.call(Op::Hello(proto::HelloRequest {})).await? {
            R::Hello(h) => h,
            other => return Err(unexpected("hello", &other)),
        };
        if hello.key_group_hash != HASH_NAME {
            return Err(Error::HashMismatch(hello.key_group_hash));
        }
        if let Some(limits) = &hello.limits {
            client.max_frame = limits.max_frame_bytes;
        }
        client.hello = hello;
        Ok(client)
    }

    /// [`Client::connect`], waiting up to `max_wait` for the sidecar's socket to appear and
    /// accept: a sidecar creates it only once its state is restored (a warm handover's standby
    /// only once it is promoted), and the app container usually starts before. Retries every
    /// 100 ms while the socket is missing or refuses; any other error, or the last one at the
    /// deadline, is returned.
    pub async fn connect_waiting(
        path: impl AsRef<Path>,
        max_wait: std::time::Duration,
    ) -> Result<Self, Error> {
        let path = path.as_ref();
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            match Self::connect(path).await {
                Err(e) if e.is_not_up_yet() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Where this sidecar sits: replica index, parallelism, key-group range, declared states.
    pub fn hello(&self) -> &proto::HelloResponse {
        &self.hello
    }

    /// The replica that owns `key` in this job.
    pub fn owner(&self, key: &[u8]) -> u32 {
        owner(key, self.hello.parallelism, self.hello.max_parallelism)
    }

    /// Queues a request without sending it; returns its id. Send with [`Client::flush`].
    pub fn send(&mut self, op: Op) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        encode_frame(&Request { id, op: Some(op) }, &mut self.output);
        self.pending.push_back(id);
        id
    }

    /// Sends every queued request.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Reads the answer to the oldest unanswered request. Error answers are returned as `Ok`
    /// responses here; the typed calls turn them into [`Error::Server`].
    pub async fn recv(&mut self) -> Result<Response, Error> {
        let expected = self
            .pending
            .pop_front()
            .ok_or_else(|| Error::Protocol("recv with no request in flight".into()))?;
        loop {
            match decode_frame(&mut self.input, self.max_frame) {
                Ok(Some(frame)) => {
                    let response = Response::decode(frame)
                        .map_err(|e| Error::Protocol(format!("cannot decode a response: {e}")))?;
                    if response.id != expected {
                        // The server answers id 0 when it cannot read a frame, then closes.
                        if let Some(R::Error(e)) = response.result {
                            return Err(Error::Server(e.into()));
                        }
                        return Err(Error::Protocol(format!(
                            "answer for request {} arrived while expecting {expected}",
                            response.id
                        )));
                    }
                    return Ok(response);
                }
                Ok(None) => {
                    if self.stream.read_buf(&mut self.input).await? == 0 {
                        return Err(Error::Closed);
                    }
                }
                Err(e) => return Err(Error::Protocol(e.to_string())),
            }
        }
    }

    /// Sends all `ops` at once and returns their answers in order.
    pub async fn pipeline(&mut self, ops: Vec<Op>) -> Result<Vec<Response>, Error> {
        let n = ops.len();
        for op in ops {
            self.send(op);
        }
        self.flush().await?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.recv().await?);
        }
        Ok(out)
    }

    pub(crate) async fn call(&mut self, op: Op) -> Result<R, Error> {
        if !self.pending.is_empty() {
            return Err(Error::Protocol(
                "a typed call while pipelined requests are unanswered".into(),
            ));
        }
        self.send(op);
        self.flush().await?;
        result(self.recv().await?)
    }

    pub async fn ping(&mut self) -> Result<(), Error> {
        match self.call(Op::Ping(proto::PingRequest {})).await? {
            R::Pong(_) => Ok(()),
            other => Err(unexpected("ping", &other)),
        }
    }

    pub async fn declare(
        &mut self,
        states: Vec<proto::StateDecl>,
        operator_states: Vec<proto::OperatorStateDecl>,
    ) -> Result<(), Error> {
        match self
            .call(Op::Declare(proto::DeclareRequest {
                states,
                operator_states,
            }))
            .await?
        {
            R::Declare(_) => Ok(()),
            other => Err(unexpected("declare", &other)),
        }
    }

    pub async fn get(
        &mut self,
        state: &str,
        key: impl Into<Bytes>,
    ) -> Result<Option<Bytes>, Error> {
        match self
            .call(Op::Get(proto::GetRequest {
                state: state.into(),
                key: key.into(),
            }))
            .await?
        {
            R::Value(v) => Ok(v.value),
            other => Err(unexpected("get", &other)),
        }
    }

    pub async fn multi_get<I, K>(
        &mut self,
        state: &str,
        keys: I,
    ) -> Result<Vec<Option<Bytes>>, Error>
    where
        I: IntoIterator<Item = K>,
        K: Into<Bytes>,
    {
        let keys = keys.into_iter().map(Into::into).collect();
        match self
            .call(Op::MultiGet(proto::MultiGetRequest {
                state: state.into(),
                keys,
            }))
            .await?
        {
            R::MultiGet(v) => Ok(v.values.into_iter().map(|v| v.value).collect()),
            other => Err(unexpected("multi_get", &other)),
        }
    }

    /// The whole list of `key`, read a page at a time (one request for a list of up to about
    /// 4 MiB). Pages are not one snapshot: see [`Client::list_page`].
    pub async fn list_get(
        &mut self,
        state: &str,
        key: impl Into<Bytes>,
    ) -> Result<Vec<Bytes>, Error> {
        let key = key.into();
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let mut page = self
                .list_page(state, key.clone(), offset, MAX_PAGE_ENTRIES)
                .await?;
            out.append(&mut page.values);
            if !page.has_more {
                return Ok(out);
            }
            if page.next_offset <= offset {
                return Err(Error::Protocol(
                    "the sidecar said has_more but its list page made no progress".into(),
                ));
            }
            offset = page.next_offset;
        }
    }

    /// At most `limit` elements of the list of `key` from index `offset` (`limit` 0: the
    /// sidecar's default), and at most about 4 MiB of them. Appends between pages are seen at
    /// the end; elements that expire between pages shift the later offsets.
    pub async fn list_page(
        &mut self,
        state: &str,
        key: impl Into<Bytes>,
        offset: u32,
        limit: u32,
    ) -> Result<ListPage, Error> {
        // Offset and limit 0 ask for the whole list at once; a page always has a limit.
        let limit = if limit == 0 {
            DEFAULT_PAGE_ENTRIES
        } else {
            limit
        };
        let req = proto::ListGetRequest {
            state: state.into(),
            key: key.into(),
            offset,
            limit,
        };
        match self.call(Op::ListGet(req)).await? {
            R::List(l) => Ok(ListPage {
                values: l.values,
                has_more: l.has_more,
                next_offset: l.next_offset,
            }),
            other => Err(unexpected("list_get", &other)),
        }
    }

    pub async fn map_get(
        &mut self,
        state: &str,
        key: impl Into<Bytes>,
        map_key: impl Into<Bytes>,
    ) -> Result<Option<Bytes>, Error> {
        let req = proto::MapGetRequest {
            state: state.into(),
            key: key.into(),
            map_key: map_key.into(),
        };
        match self.call(Op::MapGet(req)).await? {
            R::Value(v) => Ok(v.value),
            other => Err(unexpected("map_get", &other)),
        }
    }

    pub async fn map_contains(
        &mut self,
        state: &str,
        key: impl Into<Bytes>,
        map_key: impl Into<Bytes>,
    ) -> Result<bool, Error> {
        let req = proto::MapContainsRequest {
            state: state.into(),
            key: key.into(),
            map_key: map_key.into(),
        };
        match self.call(Op::MapContains(req)).await? {
            R::Contains(b) => Ok(b.value),
            other => Err(unexpected("map_contains", &other)),
        }
    }

    /// One page of entries with map keys after `after` (from it, if `inclusive`); `limit` 0 means
    /// the server's default page size.
    pub async fn map_page(
        &mut self,
        state: &str,
        key: impl Into<Bytes>,
        after: impl Into<Bytes>,
        inclusive: bool,
        limit: u32,
    ) -> Result<MapPage, Error> {
        let req = proto::MapIterRequest {
            state: state.into(),
            key: key.into(),
            after: after.into(),
            start_inclusive: inclusive,
            limit,
        };
        match self.call(Op::MapIter(req)).await? {
            R::MapIter(p) => Ok(MapPage {
                entries: p
                    .entries
                    .into_iter()
                    .map(|e| (e.map_key, e.value))
                    .collect(),
                has_more: p.has_more,
                next_after: p.next_after,
            }),
            other => Err(unexpected("map_iter", &other)),
        }
    }

    /// Every entry of one map, page by page.
    pub async fn map_entries(
        &mut self,
        state: &str,
        key: impl Into<Bytes>,
    ) -> Result<Vec<(Bytes, Bytes)>, Error> {
        let key = key.into();
        let mut out = Vec::new();
        let mut page = self
            .map_page(state, key.clone(), Bytes::new(), false, 0)
            .await?;
        loop {
            out.append(&mut page.entries);
            if !page.has_more {
                return Ok(out);
            }
            page = self
                .map_page(state, key.clone(), page.next_after, false, 0)
                .await?;
        }
    }

    pub async fn operator_state_get(&mut self, name: &str) -> Result<Vec<Bytes>, Error> {
        match self
            .call(Op::OperatorStateGet(proto::OperatorStateGetRequest {
                name: name.into(),
            }))
            .await?
        {
            R::List(l) => Ok(l.values),
            other => Err(unexpected("operator_state_get", &other)),
        }
    }

    /// Applies `batch` atomically; returns the number of ops applied.
    pub async fn write(&mut self, batch: Batch) -> Result<u32, Error> {
        match self
            .call(Op::Write(proto::WriteBatch { ops: batch.ops }))
            .await?
        {
            R::Write(w) => Ok(w.applied),
            other => Err(unexpected("write", &other)),
        }
    }
}

/// The result of a response, with error answers turned into [`Error::Server`].
pub fn result(response: Response) -> Result<R, Error> {
    match response.result {
        Some(R::Error(e)) => Err(Error::Server(ServerError::from(e))),
        Some(r) => Ok(r),
        None => Err(Error::Protocol("response without a result".into())),
    }
}

pub(crate) fn unexpected(call: &str, got: &R) -> Error {
    Error::Protocol(format!("unexpected answer to {call}: {got:?}"))
}
