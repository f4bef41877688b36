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
