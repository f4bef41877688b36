//! Bytes from a client, as the sidecar's connection loop sees them: frames decoded, requests
//! handled against a real RocksDB store in a temporary directory, answers encoded. Checks that
//! nothing panics, that every answer is a frame a client can decode (and within the frame
//! limit), that a connection is closed only after a bad frame, and that what is left unanswered
//! is an incomplete frame.

#![no_main]

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use stator_core::frame::decode_frame;
use stator_core::keygroup::Layout;
use stator_core::limits::MAX_FRAME_BYTES;
use stator_core::proto::Response;
use stator_sidecar::metrics::Metrics;
use stator_sidecar::server::answer_burst;
use stator_sidecar::store::{
    Kind, OperatorStateDecl, Placement, Redistribution, RocksOptions, StateDecl, Store,
};

struct World {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

/// Inputs answered against one store before a fresh one replaces it. A store that only grows
/// makes every later input slower (more files to search, more state to scan) and the run crawl;
/// a few thousand inputs are plenty to mix the writes of some with the reads of others.
const INPUTS_PER_STORE: u64 = 20_000;

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Replica 0 of 2: half the keys are foreign, so WRONG_KEY_GROUP paths are reached too.
        let layout = Layout::new(2, 128).expect("a valid layout");
        let placement = Placement::new(layout, 0).expect("replica 0 exists");
        let decl = |name: &str, kind, ttl_ms| StateDecl {
            name: name.into(),
            kind,
            ttl_ms,
        };
        let states = [
            decl("v", Kind::Value, 0),
            decl("l", Kind::List, 0),
            decl("m", Kind::Map, 0),
            decl("t", Kind::Value, 1),
        ];
        let operator_states = [OperatorStateDecl {
            name: "o".into(),
            redistribution: Redistribution::Split,
        }];
        let rocks = RocksOptions {
            write_buffer_bytes: 4 << 20,
            ..Default::default()
        };
        let store = Store::open(dir.path(), placement, &rocks, &states, &operator_states)
            .expect("the store opens");
        World {
            _dir: dir,
            store,
            metrics: Metrics::new(),
        }
    }
}

static WORLD: Mutex<Option<(World, u64)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut slot = WORLD.lock().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_none_or(|(_, n)| *n >= INPUTS_PER_STORE) {
        // The old store is dropped (RocksDB closed, its directory removed) before the new opens.
        *slot = None;
        *slot = Some((World::new(), 0));
    }
    let (w, n) = slot.as_mut().expect("a world was just made");
    *n += 1;
    let w = &*w;
    let mut input = BytesMut::from(data);
    let mut output = BytesMut::new();
    let mut answers = BytesMut::new();
    let close = answer_burst(&w.store, &w.metrics, &mut input, &mut output, |out| {
        answers.extend_from_slice(out);
        Ok(())
    })
    .expect("answering into memory cannot fail");
    assert!(output.is_empty(), "every answer is handed to flush");
    let mut count = 0;
    while let Some(frame) = decode_frame(&mut answers, MAX_FRAME_BYTES).expect("answers are frames") {
        let response = Response::decode(frame).expect("answers decode as Responses");
        assert!(response.result.is_some(), "every answer says something");
        count += 1;
    }
    assert!(answers.is_empty(), "no partial answer");
    if close {
        assert!(count > 0, "a closed connection is told why");
    } else {
        // What is left is the start of a frame still to come, never a whole one.
        let mut rest = input.clone();
        assert!(matches!(decode_frame(&mut rest, MAX_FRAME_BYTES), Ok(None)));
    }
});
