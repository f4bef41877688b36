//! Malformed input, limits, pipelining and many connections, against a real sidecar process.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::BytesMut;
use prost::Message;
use stator_client::{Batch, Client, ErrorCode, proto};
use stator_core::frame::{decode_frame, encode_frame};
use stator_core::proto::{Request, Response, request::Op, response::Result as R};

/// Reads whatever the server sends until it closes the connection (or 10 s pass).
fn read_until_closed(stream: &mut UnixStream) -> Vec<Response> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .expect("server closes the connection instead of hanging");
    let mut bytes = BytesMut::from(&buf[..]);
    let mut out = vec![];
    while let Some(frame) = decode_frame(&mut bytes, u32::MAX).unwrap() {
        out.push(Response::decode(frame).unwrap());
    }
    out
}

fn error_code(r: &Response) -> ErrorCode {
    match &r.result {
        Some(R::Error(e)) => ErrorCode::try_from(e.code).unwrap(),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn assert_serving(client: &mut Client) {
    client.ping().await.expect("other connections keep working");
    let mut batch = Batch::new();
    batch.value_put("v", "k", "still here");
    client.write(batch).await.unwrap();
    assert_eq!(
        client.get("v", "k").await.unwrap().as_deref(),
        Some(&b"still here"[..])
    );
}

#[tokio::test]
async fn malformed_frames_get_an_error_or_a_clean_close_while_others_keep_working() {
    let sidecar = common::Sidecar::start(&["--state", "v:value"]);
    let mut healthy = Client::connect(&sidecar.socket).await.unwrap();

    // A huge length prefix: refused before the body is read.
    let mut s = UnixStream::connect(&sidecar.socket).unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap();
    let answers = read_until_closed(&mut s);
    assert_eq!(answers.len(), 1);
    assert_eq!(error_code(&answers[0]), ErrorCode::TooLarge);
    assert_serving(&mut healthy).await;

    // A varint that never ends.
    let mut s = UnixStream::connect(&sidecar.socket).unwrap();
    s.write_all(&[0x80; 12]).unwrap();
    assert_eq!(
        error_code(&read_until_closed(&mut s)[0]),
        ErrorCode::Malformed
    );

    // A well-framed body that is not a Request.
    let mut s = UnixStream::connect(&sidecar.socket).unwrap();
    s.write_all(&[4, 0xff, 0xff, 0xff, 0xff]).unwrap();
    assert_eq!(
        error_code(&read_until_closed(&mut s)[0]),
        ErrorCode::Malformed
    );

    // Random bytes, many times over: never a crash or a hang.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..50 {
        let mut junk = vec![0u8; 64];
        for b in junk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let mut s = UnixStream::connect(&sidecar.socket).unwrap();
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = read_until_closed(&mut s);
    }

    // A frame cut short, then the client goes away.
    let mut frame = BytesMut::new();
    encode_frame(
        &Request {
            id: 7,
            op: Some(Op::Ping(proto::PingRequest {})),
        },
        &mut frame,
    );
    let mut s = UnixStream::connect(&sidecar.socket).unwrap();
    s.write_all(&frame[..frame.len() - 1]).unwrap();
    drop(s);

    // A valid request then garbage on the same connection: the valid one is answered first.
    let mut s = UnixStream::connect(&sidecar.socket).unwrap();
    let mut bytes = frame.clone();
    bytes.extend_from_slice(&[0x80; 12]);
    s.write_all(&bytes).unwrap();
    let answers = read_until_closed(&mut s);
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].id, 7);
    assert!(matches!(answers[0].result, Some(R::Pong(_))));
    assert_eq!(error_code(&answers[1]), ErrorCode::Malformed);

    assert_serving(&mut healthy).await;
    let (code, metrics) = common::http_get(sidecar.admin, "/metrics", None).unwrap();
    assert_eq!(code, 200);
    let frame_errors: f64 = metrics
        .lines()
        .find(|l| l.starts_with("stator_sidecar_frame_errors_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .expect("frame error counter exported");
    assert!(frame_errors >= 4.0, "frame errors counted: {frame_errors}");
}

#[tokio::test]
async fn oversized_keys_values_and_batches_are_refused_with_too_large() {
    let sidecar = common::Sidecar::start(&["--state", "v:value", "--state", "m:map"]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let limits = client.hello().limits.unwrap();
    let big_key = vec![b'k'; limits.max_key_bytes as usize + 1];
    let err = client.get("v", big_key.clone()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge));
    assert!(err.to_string().contains("65537 bytes"), "{err}");
    let mut batch = Batch::new();
    batch.map_put("m", "k", big_key, "v");
    assert_eq!(
        client.write(batch).await.unwrap_err().code(),
        Some(ErrorCode::TooLarge)
    );
    let keys: Vec<Vec<u8>> = (0..=limits.max_batch_ops)
        .map(|i| i.to_be_bytes().to_vec())
        .collect();
    assert_eq!(
        client.multi_get("v", keys).await.unwrap_err().code(),
        Some(ErrorCode::TooLarge)
    );
    // A frame above the frame limit closes only that connection.
    let mut raw = UnixStream::connect(&sidecar.socket).unwrap();
    let mut prefix = BytesMut::new();
    prost::encode_length_delimiter(limits.max_frame_bytes as usize + 1, &mut prefix).unwrap();
    raw.write_all(&prefix).unwrap();
    assert_eq!(
        error_code(&read_until_closed(&mut raw)[0]),
        ErrorCode::TooLarge
    );
    client.ping().await.unwrap();
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let sidecar = common::Sidecar::start(&["--state", "v:value"]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let n = 2_000;
    let mut ops = vec![];
    for i in 0..n {
        ops.push(Op::Write(proto::WriteBatch {
            ops: Batch::new()
                .value_put("v", format!("k{i}"), format!("v{i}"))
                .ops
                .clone(),
        }));
        ops.push(Op::Get(proto::GetRequest {
            state: "v".into(),
            key: format!("k{i}").into(),
        }));
    }
    let answers = client.pipeline(ops).await.unwrap();
    assert_eq!(answers.len(), 2 * n);
    for (i, pair) in answers.chunks(2).enumerate() {
        assert!(matches!(&pair[0].result, Some(R::Write(w)) if w.applied == 1));
        match &pair[1].result {
            Some(R::Value(v)) => assert_eq!(v.value.as_deref(), Some(format!("v{i}").as_bytes())),
            other => panic!("answer {i}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn pipelined_gets_see_exactly_the_writes_sent_before_them() {
    // Gets and writes of a burst are answered together (one group commit, then the reads), so
    // this checks that a get never sees a write sent after it, nor misses one sent before it.
    let sidecar = common::Sidecar::start(&["--state", "v:value"]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let put = |k: &str, v: &str| {
        Op::Write(proto::WriteBatch {
            ops: Batch::new()
                .value_put("v", k.to_owned(), v.to_owned())
                .ops
                .clone(),
        })
    };
    let clear = |k: &str| {
        Op::Write(proto::WriteBatch {
            ops: Batch::new().value_clear("v", k.to_owned()).ops.clone(),
        })
    };
    let get = |k: &str| {
        Op::Get(proto::GetRequest {
            state: "v".into(),
            key: k.to_owned().into(),
        })
    };
    let mut ops = vec![];
    let mut expected: Vec<Option<&str>> = vec![];
    for _ in 0..50 {
        // The same key read and written in turn, another key written around the reads, a key
        // cleared between reads, and a get before any write of its key.
        ops.extend([
            get("fresh"),
            put("a", "1"),
            get("a"),
            put("b", "x"),
            put("a", "2"),
            get("a"),
            get("b"),
            clear("a"),
            get("a"),
            put("fresh", "f"),
            clear("fresh"),
        ]);
        expected.extend([
            Some("-"),
            None,
            Some("1"),
            None,
            None,
            Some("2"),
            Some("x"),
            None,
            Some("-"),
            None,
            None,
        ]);
    }
    let answers = client.pipeline(ops).await.unwrap();
    assert_eq!(answers.len(), expected.len());
    for (i, (answer, want)) in answers.iter().zip(&expected).enumerate() {
        match (want, &answer.result) {
            (None, Some(R::Write(w))) => assert_eq!(w.applied, 1, "answer {i}"),
            (Some("-"), Some(R::Value(v))) => assert_eq!(v.value, None, "answer {i}"),
            (Some(want), Some(R::Value(v))) => {
                assert_eq!(v.value.as_deref(), Some(want.as_bytes()), "answer {i}")
            }
            (want, other) => panic!("answer {i}: wanted {want:?}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn many_concurrent_connections_are_served() {
    let sidecar = common::Sidecar::start(&["--state", "v:value"]);
    let mut tasks = vec![];
    for c in 0..64 {
        let socket = sidecar.socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&socket).await.unwrap();
            for i in 0..50 {
                let key = format!("c{c}-{i}");
                let mut batch = Batch::new();
                batch.value_put("v", key.clone(), key.clone());
                client.write(batch).await.unwrap();
                assert_eq!(
                    client.get("v", key.clone()).await.unwrap().as_deref(),
                    Some(key.as_bytes())
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// The sidecar's peak resident memory (VmHWM), in bytes.
fn peak_rss(sidecar: &common::Sidecar) -> u64 {
    let pid = sidecar.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb * 1024
}

/// One frame of request `id` whose operation (field `op_field`) holds `n` empty entries of its
/// repeated field `entry_field`, after `prefix` (the operation's other fields): 2 bytes each.
fn frame_of_empty_entries(
    id: u64,
    op_field: u32,
    prefix: &[u8],
    entry_field: u32,
    n: usize,
) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let mut body = prefix.to_vec();
    let mut entry = Vec::new();
    encode_key(entry_field, WireType::LengthDelimited, &mut entry);
    entry.push(0);
    for _ in 0..n {
        body.extend_from_slice(&entry);
    }
    let mut request = Vec::new();
    encode_key(1, WireType::Varint, &mut request);
    encode_varint(id, &mut request);
    encode_key(op_field, WireType::LengthDelimited, &mut request);
    encode_varint(body.len() as u64, &mut request);
    request.extend_from_slice(&body);
    let mut frame = Vec::new();
    encode_varint(request.len() as u64, &mut frame);
    frame.extend_from_slice(&request);
    frame
}

#[tokio::test]
async fn a_frame_of_millions_of_empty_ops_or_keys_is_refused_without_decoding_it() {
    let sidecar = common::Sidecar::start(&["--state", "v:value"]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let max_frame = client.hello().limits.unwrap().max_frame_bytes as usize;
    let n = max_frame / 2 - 16;
    let mut state = Vec::new();
    prost::encoding::string::encode(1, &"v".to_owned(), &mut state);
    // Request.write = 6 (WriteBatch.ops = 1); Request.multi_get = 5 (MultiGetRequest.keys = 2).
    for (what, op_field, prefix, entry_field) in [
        ("write batch", 6, &[][..], 1),
        ("multi-get", 5, &state[..], 2),
    ] {
        let frame = frame_of_empty_entries(41, op_field, prefix, entry_field, n);
        assert!(frame.len() <= max_frame + 4);
        let before = peak_rss(&sidecar);
        let mut raw = UnixStream::connect(&sidecar.socket).unwrap();
        raw.write_all(&frame).unwrap();
        let ping = Request {
            id: 42,
            op: Some(Op::Ping(proto::PingRequest {})),
        };
        let mut more = BytesMut::new();
        encode_frame(&ping, &mut more);
        raw.write_all(&more).unwrap();
        raw.shutdown(std::net::Shutdown::Write).unwrap();
        let answers = read_until_closed(&mut raw);
        assert_eq!(
            answers.len(),
            2,
            "{what}: the refusal, then the ping's answer: {answers:?}"
        );
        assert_eq!(answers[0].id, 41);
        assert_eq!(error_code(&answers[0]), ErrorCode::TooLarge, "{what}");
        let Some(R::Error(e)) = &answers[0].result else {
            unreachable!()
        };
        assert_eq!(
            e.message,
            format!("{what} of {n} items exceeds the limit of 10000"),
        );
        assert_eq!(answers[1].id, 42, "{what}: the connection carries on");
        let grown = peak_rss(&sidecar).saturating_sub(before);
        assert!(
            grown < 100 << 20,
            "{what}: a {} MiB frame of {n} empty entries grew the sidecar's peak memory by {} MiB",
            frame.len() >> 20,
            grown >> 20
        );
    }
    assert_serving(&mut client).await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_unavailable_and_the_open_ones_carry_on() {
    let sidecar = common::Sidecar::start(&["--state", "v:value", "--max-connections", "2"]);
    let mut first = Client::connect(&sidecar.socket).await.unwrap();
    let mut second = Client::connect(&sidecar.socket).await.unwrap();
    let mut third = UnixStream::connect(&sidecar.socket).unwrap();
    let answers = read_until_closed(&mut third);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(error_code(&answers[0]), ErrorCode::Unavailable);
    let Some(R::Error(e)) = &answers[0].result else {
        unreachable!()
    };
    assert!(
        e.message
            .contains("already serves 2 connections (--max-connections)"),
        "{}",
        e.message
    );
    assert_eq!(
        sidecar.metric("stator_sidecar_refused_connections_total"),
        1.0
    );
    first.ping().await.unwrap();
    second.ping().await.unwrap();
    // A closed connection frees its place.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = Client::connect(&sidecar.socket).await
            && c.ping().await.is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no place freed in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.ping().await.unwrap();
}

#[tokio::test]
async fn a_connection_idle_past_the_timeout_is_told_and_closed_and_a_busy_one_is_not() {
    let sidecar = common::Sidecar::start(&["--state", "v:value", "--idle-timeout-secs", "1"]);
    let mut busy = Client::connect(&sidecar.socket).await.unwrap();
    let started = std::time::Instant::now();
    let mut idle = UnixStream::connect(&sidecar.socket).unwrap();
    let reader = std::thread::spawn(move || read_until_closed(&mut idle));
    while started.elapsed() < Duration::from_millis(2500) {
        busy.ping().await.expect("a connection in use stays open");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let answers = reader.join().unwrap();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(error_code(&answers[0]), ErrorCode::Unavailable);
    let Some(R::Error(e)) = &answers[0].result else {
        unreachable!()
    };
    assert_eq!(
        e.message,
        "closed after 1 s without a request (--idle-timeout-secs)"
    );
    assert_eq!(
        sidecar.metric("stator_sidecar_idle_connections_closed_total"),
        1.0
    );
    busy.ping().await.unwrap();
}

#[tokio::test]
async fn large_map_pages_stop_at_their_byte_bound_and_large_multi_gets_are_refused_readably() {
    let sidecar = common::Sidecar::start(&["--state", "v:value", "--state", "m:map"]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let limits = client.hello().limits.unwrap();
    let big = limits.max_value_bytes as usize;
    // 12 map entries of 1 MiB: a page of the default 1,000 entries would be 12 MiB.
    let mib = vec![b'x'; 1 << 20];
    for i in 0..12u8 {
        let mut batch = Batch::new();
        batch.map_put("m", "k", vec![i], mib.clone());
        client.write(batch).await.unwrap();
    }
    let page = client
        .map_page("m", "k", Vec::new(), false, 0)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 4, "about 4 MiB per page");
    assert!(page.has_more);
    let all = client.map_entries("m", "k").await.unwrap();
    assert_eq!(
        all.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(),
        (0..12).collect::<Vec<_>>()
    );
    // Three values of the largest size: one answer would exceed the frame limit.
    for k in ["a", "b", "c"] {
        let mut batch = Batch::new();
        batch.value_put("v", k, vec![b'y'; big]);
        client.write(batch).await.unwrap();
    }
    let err = client.multi_get("v", ["a", "b", "c"]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge), "{err}");
    assert!(
        err.to_string()
            .contains("multi-get answer (ask for fewer keys)"),
        "{err}"
    );
    // The connection carries on, and every value is readable in smaller requests.
    let mut batch = Batch::new();
    batch.value_put("v", "small", "s");
    client.write(batch).await.unwrap();
    let two = client.multi_get("v", ["a", "small"]).await.unwrap();
    assert_eq!(two[0].as_ref().map(|v| v.len()), Some(big));
    assert_eq!(two[1].as_deref(), Some(&b"s"[..]));
    for k in ["b", "c"] {
        assert_eq!(
            client.get("v", k).await.unwrap().map(|v| v.len()),
            Some(big)
        );
    }
}

#[tokio::test]
async fn a_list_larger_than_a_frame_is_read_in_pages_and_refused_whole() {
    let sidecar = common::Sidecar::start(&["--state", "l:list"]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let limits = client.hello().limits.unwrap();
    assert_eq!(limits.max_list_bytes, 64 << 20);
    let big = limits.max_value_bytes as usize;
    // Three appends of the largest element: 24 MiB, more than one frame can carry.
    for i in 0..3u8 {
        let mut batch = Batch::new();
        batch.list_append("l", "k", [vec![i; big]]);
        client.write(batch).await.unwrap();
    }
    let list = client.list_get("l", "k").await.unwrap();
    assert_eq!(list.len(), 3);
    for (i, element) in list.iter().enumerate() {
        assert!(element.len() == big && element.iter().all(|&b| b == i as u8));
    }
    // One page holds about 4 MiB, always at least one element.
    let page = client.list_page("l", "k", 0, 0).await.unwrap();
    assert_eq!(
        (page.values.len(), page.has_more, page.next_offset),
        (1, true, 1)
    );
    // Asked for whole (offset and limit 0, as an older client does), the list is refused with a
    // readable error instead of an answer no client could read.
    let mut raw = UnixStream::connect(&sidecar.socket).unwrap();
    let mut out = BytesMut::new();
    encode_frame(
        &Request {
            id: 7,
            op: Some(Op::ListGet(proto::ListGetRequest {
                state: "l".into(),
                key: "k".into(),
                ..Default::default()
            })),
        },
        &mut out,
    );
    raw.write_all(&out).unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    let answers = read_until_closed(&mut raw);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].id, 7);
    assert_eq!(error_code(&answers[0]), ErrorCode::TooLarge);
    let Some(R::Error(e)) = &answers[0].result else {
        unreachable!()
    };
    assert!(e.message.contains("read it in pages"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_reads_are_answered_while_writes_stall() {
    // No flush threads and a 1 MiB memtable budget: once it is spent, every write waits for a
    // flush that never comes, as it would behind a disk that stopped.
    let sidecar = common::Sidecar::start(&[
        "--state",
        "v:value",
        "--memtable-budget-mb",
        "1",
        "--write-buffer-mb",
        "1",
        "--fault-stop-background-work",
    ]);
    let mut reader = Client::connect(&sidecar.socket).await.unwrap();
    let mut batch = Batch::new();
    batch.value_put("v", "seen", "before the stall");
    reader.write(batch).await.unwrap();
    // More stalled connections than the sidecar has async workers (one per core).
    let writers = 4;
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (socket, acked) = (sidecar.socket.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&socket).await.unwrap();
            for i in 0u32.. {
                let mut batch = Batch::new();
                batch.value_put("v", format!("w{w}-{i}"), vec![b'x'; 256 << 10]);
                client.write(batch).await.unwrap();
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    // The writes stop being answered: wait until none is acknowledged for two seconds.
    let mut last = usize::MAX;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = acked.load(std::sync::atomic::Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    assert!(
        last < 64,
        "{last} writes of 256 KiB acknowledged: the writes never stalled"
    );
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "every writer is still waiting"
    );
    // Everything that does not write is answered at once.
    let admin = sidecar.admin;
    let started = std::time::Instant::now();
    let (health, metrics) = tokio::task::spawn_blocking(move || {
        (
            common::http_get(admin, "/healthz", None).unwrap(),
            common::http_get(admin, "/metrics", None).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(health, (200, "ok\n".to_owned()));
    assert_eq!(metrics.0, 200);
    assert!(
        metrics.1.contains("stator_sidecar_connections 5"),
        "{}",
        metrics.1
    );
    let value = tokio::time::timeout(Duration::from_secs(2), reader.get("v", "seen"))
        .await
        .expect("a read is answered during the write stall")
        .unwrap();
    assert_eq!(value.as_deref(), Some(&b"before the stall"[..]));
    let mut fresh = tokio::time::timeout(Duration::from_secs(2), Client::connect(&sidecar.socket))
        .await
        .expect("a new connection is accepted during the write stall")
        .unwrap();
    fresh.ping().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered in {:?}",
        started.elapsed()
    );
    for t in tasks {
        t.abort();
    }
    let mut sidecar = sidecar;
    sidecar.kill9();
}

#[tokio::test]
async fn a_burst_of_gets_of_large_values_is_answered_without_buffering_them_all() {
    let sidecar = common::Sidecar::start(&["--state", "v:value"]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let big = client.hello().limits.unwrap().max_value_bytes as usize;
    let mut batch = Batch::new();
    batch.value_put("v", "big", vec![b'x'; big]);
    client.write(batch).await.unwrap();
    // 48 gets of the 8 MiB value in one write: 384 MiB of answers to one small burst.
    let n = 48;
    let mut out = BytesMut::new();
    for id in 1..=n {
        let get = Op::Get(proto::GetRequest {
            state: "v".into(),
            key: "big".into(),
        });
        encode_frame(&Request { id, op: Some(get) }, &mut out);
    }
    let before = peak_rss(&sidecar);
    let mut raw = UnixStream::connect(&sidecar.socket).unwrap();
    raw.write_all(&out).unwrap();
    let mut input = BytesMut::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut answered = 0;
    while answered < n {
        let read = raw.read(&mut chunk).unwrap();
        assert!(
            read > 0,
            "the sidecar closed the connection after {answered} answers"
        );
        input.extend_from_slice(&chunk[..read]);
        while let Some(frame) = decode_frame(&mut input, u32::MAX).unwrap() {
            let answer = Response::decode(frame).unwrap();
            answered += 1;
            assert_eq!(answer.id, answered);
            assert!(
                matches!(&answer.result, Some(R::Value(v)) if v.value.as_ref().map(|b| b.len()) == Some(big))
            );
        }
    }
    let grown = peak_rss(&sidecar).saturating_sub(before);
    assert!(
        grown < 100 << 20,
        "the sidecar's peak RSS grew by {} MiB answering the burst",
        grown >> 20
    );
}

#[tokio::test]
async fn a_client_can_wait_for_a_sidecar_that_is_not_up_yet() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = common::Sidecar::new_in(dir.path(), &["--state", "v:value"]);
    let socket = sidecar.socket.clone();
    // Without waiting, a missing socket fails at once.
    let Err(err) = Client::connect(&socket).await else {
        panic!("connected to a socket that does not exist");
    };
    assert!(matches!(err, stator_client::Error::Connect { .. }), "{err}");
    let waiting = tokio::spawn({
        let socket = socket.clone();
        async move { Client::connect_waiting(&socket, Duration::from_secs(60)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "still waiting for the socket");
    sidecar.spawn();
    let mut client = waiting
        .await
        .unwrap()
        .expect("connected once the sidecar served");
    assert_serving(&mut client).await;
    // It gives up at its deadline with the connect error.
    let missing = dir.path().join("nothing.sock");
    let started = std::time::Instant::now();
    let Err(err) = Client::connect_waiting(&missing, Duration::from_millis(300)).await else {
        panic!("connected to a socket that does not exist");
    };
    assert!(matches!(err, stator_client::Error::Connect { .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}
