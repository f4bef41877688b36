//! The protocol edge: turns one decoded `Request` into store calls and one `Response`.
//! Bad input becomes a typed error response here; nothing below sees protobuf.

use bytes::Bytes;
use prost::Message;
use stator_core::keygroup::HASH_NAME;
use stator_core::proto::{
    self, ErrorCode, Request, Response, request::Op, response::Result as R, write_op,
};

use crate::metrics::{Metrics, OpKind};
use crate::store::{
    BatchError, Domain, Kind, OperatorStateDecl, Redistribution, StateDecl, Store, StoreError,
    Timer, WriteOp,
};

pub fn error(code: ErrorCode, message: impl Into<String>) -> proto::Error {
    proto::Error {
        code: code as i32,
        message: message.into(),
        ..Default::default()
    }
}

fn store_error(e: &StoreError) -> proto::Error {
    let mut out = error(e.code(), e.to_string());
    if let StoreError::WrongKeyGroup { group, owner, .. } = e {
        out.key_group = *group;
        out.owner = *owner;
    }
    out
}

fn batch_error(e: &BatchError) -> proto::Error {
    let mut out = store_error(&e.source);
    if let Some(i) = e.index {
        out.op_index = i as u32;
        out.message = format!("op {i}: {}", out.message);
    }
    out
}

/// A decoded frame: a request to handle, or a request refused from its wire form alone (its
/// answer, carrying its id; the connection carries on).
#[derive(Debug)]
pub enum Decoded {
    Request(Request),
    Refused(Response),
}

/// Decodes one frame. `Err` means the frame was not a valid request: the caller sends the error
/// and closes the connection.
///
/// A write batch or multi-get with more elements than the batch limit is refused before it is
/// decoded: an empty write op or key is 2 bytes on the wire but a struct of 32 to 130 bytes once
/// decoded, so a 16 MiB frame of them would otherwise take a gigabyte before the limit is checked.
pub fn decode(frame: Bytes) -> Result<Decoded, proto::Error> {
    if let Some(refused) = refuse_oversized(&frame) {
        return Ok(Decoded::Refused(refused));
    }
    Request::decode(frame)
        .map(Decoded::Request)
        .map_err(|e| error(ErrorCode::Malformed, format!("cannot decode request: {e}")))
}

/// The refusal of a request whose write ops or multi-get keys, counted on the wire, exceed
/// `MAX_BATCH_OPS`. `None` when within the limits or when the wire form cannot be read (prost's
/// decoding then reports why).
fn refuse_oversized(frame: &[u8]) -> Option<Response> {
    use stator_core::limits::MAX_BATCH_OPS;
    // Request: id = 1, multi_get = 5 (keys = 2), write = 6 (ops = 1).
    // A message field given twice is merged, its repeated fields concatenated: sum them.
    let (mut id, mut keys, mut ops) = (0, 0, 0);
    for field in wire_fields(frame) {
        match field? {
            (1, Field::Varint(v)) => id = v,
            (5, Field::Bytes(body)) => keys += count(body, 2)?,
            (6, Field::Bytes(body)) => ops += count(body, 1)?,
            _ => {}
        }
    }
    let (what, len) = if ops > keys {
        ("write batch", ops)
    } else {
        ("multi-get", keys)
    };
    (len > u64::from(MAX_BATCH_OPS)).then(|| Response {
        id,
        result: Some(R::Error(store_error(&StoreError::TooMany {
            what,
            len: len as usize,
            max: MAX_BATCH_OPS,
        }))),
    })
}

/// How many times field `number` occurs in a message's wire form; `None` if it is unreadable.
fn count(message: &[u8], number: u32) -> Option<u64> {
    let mut n = 0;
    for field in wire_fields(message) {
        if field?.0 == number {
            n += 1;
        }
    }
    Some(n)
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

/// The top-level fields of a protobuf message's wire form, read without allocating; an item is
/// `None` where the form is unreadable (the iteration then ends).
fn wire_fields(mut buf: &[u8]) -> impl Iterator<Item = Option<(u32, Field<'_>)>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let field = next_field(&mut buf);
        if field.is_none() {
            buf = &[];
        }
        Some(field)
    })
}

fn next_field<'a>(buf: &mut &'a [u8]) -> Option<(u32, Field<'a>)> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let (number, wire_type) = decode_key(buf).ok()?;
    let field = match wire_type {
        WireType::Varint => Field::Varint(decode_varint(buf).ok()?),
        WireType::LengthDelimited => {
            let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
            let (body, rest) = buf.split_at_checked(len)?;
            *buf = rest;
            Field::Bytes(body)
        }
        WireType::ThirtyTwoBit => {
            *buf = buf.get(4..)?;
            Field::Other
        }
        WireType::SixtyFourBit => {
            *buf = buf.get(8..)?;
            Field::Other
        }
        // Groups: none in our messages; leave them to prost.
        WireType::StartGroup | WireType::EndGroup => return None,
    };
    Some((number, field))
}

/// Answers one request that is not a write.
pub fn handle_request(store: &Store, metrics: &Metrics, request: Request) -> Response {
    let id = request.id;
    let Some(op) = request.op else {
        metrics.error(ErrorCode::InvalidArgument);
        return Response {
            id,
            result: Some(R::Error(error(
                ErrorCode::InvalidArgument,
                "request has no operation",
            ))),
        };
    };
    if let Op::Write(batch) = op {
        let mut out = Vec::with_capacity(1);
        handle_writes(store, metrics, vec![(id, batch)], &mut out);
        return out.pop().unwrap_or(Response {
            id,
            result: Some(R::Error(error(ErrorCode::Internal, "write result missing"))),
        });
    }
    let kind = OpKind::of(&op);
    let started = std::time::Instant::now();
    let result = match handle(store, op) {
        Ok(r) => r,
        Err(e) => {
            metrics.error(ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal));
            R::Error(e)
        }
    };
    metrics.observe(kind, started.elapsed());
    Response {
        id,
        result: Some(result),
    }
}

/// Answers consecutive write requests of one connection with one group commit; each request is
/// still its own atomic batch.
pub fn handle_writes(
    store: &Store,
    metrics: &Metrics,
    writes: Vec<(u64, proto::WriteBatch)>,
    out: &mut Vec<Response>,
) {
    let started = std::time::Instant::now();
    let mut converted: Vec<Result<Vec<WriteOp>, proto::Error>> = Vec::with_capacity(writes.len());
    let mut ids = Vec::with_capacity(writes.len());
    for (id, batch) in writes {
        ids.push(id);
        converted.push(
            batch
                .ops
                .into_iter()
                .enumerate()
                .map(|(i, op)| {
                    write_op(op).map_err(|mut e| {
                        e.op_index = i as u32;
                        e
                    })
                })
                .collect(),
        );
    }
    let valid: Vec<&[WriteOp]> = converted.iter().filter_map(|c| c.as_deref().ok()).collect();
    let mut committed = store.write_many(&valid).into_iter();
    let per_request = started.elapsed() / ids.len().max(1) as u32;
    for (id, c) in ids.into_iter().zip(converted) {
        let result = match c {
            Err(e) => Err(e),
            Ok(_) => match committed.next() {
                Some(Ok(applied)) => Ok(R::Write(proto::WriteResponse {
                    applied: applied as u32,
                })),
                Some(Err(e)) => Err(batch_error(&e)),
                None => Err(error(ErrorCode::Internal, "write result missing")),
            },
        };
        let result = result.unwrap_or_else(|e| {
            metrics.error(ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal));
            R::Error(e)
        });
        metrics.observe(OpKind::Write, per_request);
        out.push(Response {
            id,
            result: Some(result),
        });
    }
}

fn handle(store: &Store, op: Op) -> Result<R, proto::Error> {
    let se = |e: StoreError| store_error(&e);
    Ok(match op {
        Op::Hello(_) => R::Hello(hello(store)),
        Op::Ping(_) => R::Pong(proto::PongResponse {}),
        Op::Declare(d) => {
            let states = d
                .states
                .into_iter()
                .map(state_decl)
                .collect::<Result<Vec<_>, _>>()?;
            let ops = d
                .operator_states
                .into_iter()
                .map(operator_decl)
                .collect::<Result<Vec<_>, _>>()?;
            store.declare(&states, &ops).map_err(se)?;
            R::Declare(proto::DeclareResponse {})
        }
        Op::Get(g) => R::Value(optional(store.get(&g.state, &g.key).map_err(se)?)),
        Op::MultiGet(g) => R::MultiGet(proto::MultiGetResponse {
            values: store
                .multi_get(&g.state, &g.keys)
                .map_err(se)?
                .into_iter()
                .map(optional)
                .collect(),
        }),
        Op::ListGet(g) if g.limit == 0 && g.offset == 0 => {
            R::List(list(store.list_get(&g.state, &g.key).map_err(se)?))
        }
        Op::ListGet(g) => {
            let page = store
                .list_page(&g.state, &g.key, g.offset, g.limit)
                .map_err(se)?;
            R::List(proto::ListValue {
                values: page.values.into_iter().map(Bytes::from).collect(),
                has_more: page.has_more,
                next_offset: page.next_offset,
            })
        }
        Op::MapGet(g) => R::Value(optional(
            store.map_get(&g.state, &g.key, &g.map_key).map_err(se)?,
        )),
        Op::MapContains(g) => R::Contains(proto::BoolValue {
            value: store
                .map_contains(&g.state, &g.key, &g.map_key)
                .map_err(se)?,
        }),
        Op::MapIter(g) => {
            let page = store
                .map_iter(&g.state, &g.key, &g.after, g.start_inclusive, g.limit)
                .map_err(se)?;
            R::MapIter(proto::MapIterResponse {
                entries: page
                    .entries
                    .into_iter()
                    .map(|(k, v)| proto::MapEntry {
                        map_key: k.into(),
                        value: v.into(),
                    })
                    .collect(),
                has_more: page.has_more,
                next_after: page.next_after.into(),
            })
        }
        Op::OperatorStateGet(g) => R::List(list(store.operator_state_get(&g.name).map_err(se)?)),
        Op::TimersDue(t) => {
            let page = store.timers_due(domain(t.domain)?, t.limit).map_err(se)?;
            R::TimersDue(proto::TimersDueResponse {
                timers: page.timers.into_iter().map(to_proto_timer).collect(),
                has_more: page.has_more,
                up_to: page.up_to,
                next_time: page.next_time,
            })
        }
        Op::TimerStatus(_) => {
            let status = store.timer_status().map_err(se)?;
            R::TimerStatus(proto::TimerStatusResponse {
                watermark: status.watermark,
                next_event_time: status.next_event_time,
                next_processing_time: status.next_processing_time,
                now_ms: status.now_ms,
            })
        }
        Op::Write(_) => unreachable!("handle_request routes writes to handle_writes"),
    })
}

pub fn hello(store: &Store) -> proto::HelloResponse {
    let p = store.placement();
    proto::HelloResponse {
        replica_index: p.replica,
        parallelism: p.layout.parallelism(),
        max_parallelism: p.layout.max_parallelism(),
        key_group_start: p.range.start,
        key_group_end: p.range.end,
        states: store.states().iter().map(to_proto_decl).collect(),
        operator_states: store
            .operator_states()
            .iter()
            .map(|d| proto::OperatorStateDecl {
                name: d.name.clone(),
                redistribution: match d.redistribution {
                    Redistribution::Split => proto::Redistribution::Split,
                    Redistribution::Union => proto::Redistribution::Union,
                } as i32,
            })
            .collect(),
        limits: Some(stator_core::limits::limits()),
        key_group_hash: HASH_NAME.to_owned(),
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

fn to_proto_decl(d: &StateDecl) -> proto::StateDecl {
    proto::StateDecl {
        name: d.name.clone(),
        kind: match d.kind {
            Kind::Value => proto::StateKind::Value,
            Kind::List => proto::StateKind::List,
            Kind::Map => proto::StateKind::Map,
        } as i32,
        ttl_ms: d.ttl_ms,
    }
}

fn state_decl(d: proto::StateDecl) -> Result<StateDecl, proto::Error> {
    let kind = match proto::StateKind::try_from(d.kind) {
        Ok(proto::StateKind::Value) => Kind::Value,
        Ok(proto::StateKind::List) => Kind::List,
        Ok(proto::StateKind::Map) => Kind::Map,
        _ => {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!("state {:?}: kind must be VALUE, LIST or MAP", d.name),
            ));
        }
    };
    Ok(StateDecl {
        name: d.name,
        kind,
        ttl_ms: d.ttl_ms,
    })
}

fn operator_decl(d: proto::OperatorStateDecl) -> Result<OperatorStateDecl, proto::Error> {
    let redistribution = match proto::Redistribution::try_from(d.redistribution) {
        Ok(proto::Redistribution::Split) => Redistribution::Split,
        Ok(proto::Redistribution::Union) => Redistribution::Union,
        _ => {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!(
                    "operator state {:?}: redistribution must be SPLIT or UNION",
                    d.name
                ),
            ));
        }
    };
    Ok(OperatorStateDecl {
        name: d.name,
        redistribution,
    })
}

fn domain(d: i32) -> Result<Domain, proto::Error> {
    match proto::TimeDomain::try_from(d) {
        Ok(proto::TimeDomain::Event) => Ok(Domain::Event),
        Ok(proto::TimeDomain::Processing) => Ok(Domain::Processing),
        _ => Err(error(
            ErrorCode::InvalidArgument,
            "a timer's domain must be TIME_DOMAIN_EVENT or TIME_DOMAIN_PROCESSING",
        )),
    }
}

fn to_proto_timer(t: Timer) -> proto::Timer {
    proto::Timer {
        domain: match t.domain {
            Domain::Event => proto::TimeDomain::Event,
            Domain::Processing => proto::TimeDomain::Processing,
        } as i32,
        key: t.key.into(),
        name: t.name.into(),
        time: t.time,
        key_group: t.key_group,
    }
}

fn write_op(op: proto::WriteOp) -> Result<WriteOp, proto::Error> {
    use write_op::Op as W;
    Ok(match op.op {
        Some(W::ValuePut(o)) => WriteOp::ValuePut {
            state: o.state,
            key: o.key,
            value: o.value,
        },
        Some(W::ValueClear(o)) => WriteOp::ValueClear {
            state: o.state,
            key: o.key,
        },
        Some(W::ListAppend(o)) => WriteOp::ListAppend {
            state: o.state,
            key: o.key,
            values: o.values,
        },
        Some(W::ListSet(o)) => WriteOp::ListSet {
            state: o.state,
            key: o.key,
            values: o.values,
        },
        Some(W::ListClear(o)) => WriteOp::ListClear {
            state: o.state,
            key: o.key,
        },
        Some(W::MapPut(o)) => WriteOp::MapPut {
            state: o.state,
            key: o.key,
            map_key: o.map_key,
            value: o.value,
        },
        Some(W::MapRemove(o)) => WriteOp::MapRemove {
            state: o.state,
            key: o.key,
            map_key: o.map_key,
        },
        Some(W::MapClear(o)) => WriteOp::MapClear {
            state: o.state,
            key: o.key,
        },
        Some(W::OperatorStateSet(o)) => WriteOp::OperatorStateSet {
            name: o.name,
            values: o.values,
        },
        Some(W::TimerRegister(o)) => WriteOp::TimerRegister {
            domain: domain(o.domain)?,
            key: o.key,
            name: o.name,
            time: o.time,
        },
        Some(W::TimerDelete(o)) => WriteOp::TimerDelete {
            domain: domain(o.domain)?,
            key: o.key,
            name: o.name,
            time: o.time,
        },
        Some(W::WatermarkAdvance(o)) => WriteOp::WatermarkAdvance {
            watermark: o.watermark,
        },
        None => {
            return Err(error(
                ErrorCode::InvalidArgument,
                "write op has no operation",
            ));
        }
    })
}

fn optional(value: Option<Vec<u8>>) -> proto::OptionalValue {
    proto::OptionalValue {
        value: value.map(Bytes::from),
    }
}

fn list(values: Vec<Vec<u8>>) -> proto::ListValue {
    proto::ListValue {
        next_offset: values.len() as u32,
        values: values.into_iter().map(Bytes::from).collect(),
        has_more: false,
    }
}
