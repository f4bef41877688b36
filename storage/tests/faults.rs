//! The S3 store through a flaky network: a fault-injecting proxy in front of a real S3 server
//! (moto) breaks bodies off, resets connections, answers 503 and loses replies.

mod common;

use bytes::Bytes;
use common::faults::{Fault, FaultProxy, Rule};
use stator_storage::{Location, S3Options, StorageError};

/// Data that is the same on every call and compresses poorly.
fn data(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

async fn through_proxy() -> (common::Server, FaultProxy, Location, Location) {
    let server = common::moto_with_bucket("bucket");
    let proxy = FaultProxy::start(server.port);
    let direct = Location::parse("s3://bucket/faults", &server.options())
        .await
        .unwrap();
    let options = S3Options {
        endpoint: Some(proxy.endpoint()),
        ..server.options()
    };
    let flaky = Location::parse("s3://bucket/faults", &options)
        .await
        .unwrap();
    (server, proxy, direct, flaky)
}

#[tokio::test]
async fn a_body_that_breaks_off_after_the_headers_is_downloaded_again() {
    let (_server, proxy, direct, flaky) = through_proxy().await;
    let bytes = data(3 << 20);
    direct
        .put("object", Bytes::from(bytes.clone()))
        .await
        .unwrap();

    proxy.add(Rule::new("GET", "/faults/object", Fault::TruncateBody(100_000)).times(1));
    assert_eq!(
        flaky.get("object").await.unwrap(),
        Bytes::from(bytes.clone())
    );
    proxy.add(Rule::new("GET", "/faults/object", Fault::ResetBody(1_000_000)).times(1));
    assert_eq!(
        flaky.get("object").await.unwrap(),
        Bytes::from(bytes.clone())
    );

    let target = tempfile::NamedTempFile::new().unwrap();
    proxy.add(Rule::new("GET", "/faults/object", Fault::ResetBody(500_000)).times(1));
    proxy.add(Rule::new("GET", "/faults/object", Fault::TruncateBody(10)).times(1));
    let (size, sha) = flaky.get_to_file("object", target.path()).await.unwrap();
    assert_eq!(
        (size, sha),
        (bytes.len() as u64, stator_storage::sha256_bytes(&bytes))
    );
    assert_eq!(std::fs::read(target.path()).unwrap(), bytes);
    assert_eq!(proxy.faults(), 4, "{:?}", proxy.seen());
}

#[tokio::test]
async fn a_body_that_always_breaks_off_fails_as_transient_after_the_attempts() {
    let (_server, proxy, direct, flaky) = through_proxy().await;
    direct
        .put("object", Bytes::from(data(1 << 20)))
        .await
        .unwrap();
    proxy.add(Rule::new(
        "GET",
        "/faults/object",
        Fault::TruncateBody(1000),
    ));
    let target = tempfile::NamedTempFile::new().unwrap();
    let err = flaky
        .get_to_file("object", target.path())
        .await
        .expect_err("every attempt breaks off");
    assert!(err.is_transient(), "{err}");
    assert_eq!(
        proxy.count("GET", "/faults/object"),
        S3Options::default().max_attempts as usize
    );
}

#[tokio::test]
async fn a_conditional_put_whose_reply_was_lost_is_committed_once() {
    let (_server, proxy, direct, flaky) = through_proxy().await;
    let manifest = Bytes::from_static(b"{\"checkpointId\": 7}");
    // The server applies the put; the reply never arrives; the retry finds the object there.
    proxy.add(
        Rule::new("PUT", "/faults/chk-7/manifest.json", Fault::LoseReply)
            .with_header("if-none-match")
            .times(1),
    );
    flaky
        .put_if_absent("chk-7/manifest.json", manifest.clone())
        .await
        .unwrap();
    assert_eq!(proxy.faults(), 1);
    assert!(
        proxy.count("PUT", "/faults/chk-7/manifest.json") >= 2,
        "{:?}",
        proxy.seen()
    );
    assert_eq!(direct.get("chk-7/manifest.json").await.unwrap(), manifest);

    // Another writer's manifest is still refused, and stays.
    let other = flaky
        .put_if_absent("chk-7/manifest.json", Bytes::from_static(b"{\"other\": 1}"))
        .await;
    assert!(
        matches!(other, Err(StorageError::AlreadyExists { .. })),
        "{other:?}"
    );
    assert_eq!(direct.get("chk-7/manifest.json").await.unwrap(), manifest);
}

#[tokio::test]
async fn uploads_survive_503s_and_lost_replies() {
    let (_server, proxy, direct, flaky) = through_proxy().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    // Above the multipart threshold of 6 MiB (5 MiB parts): three parts.
    let bytes = data(13 << 20);
    std::fs::write(file.path(), &bytes).unwrap();
    let sha = stator_storage::sha256_bytes(&bytes);
    proxy.add(Rule::new("PUT", "partNumber=2", Fault::Unavailable).times(1));
    proxy.add(Rule::new("PUT", "partNumber=3", Fault::LoseReply).times(1));
    proxy.add(Rule::new("POST", "/faults/big?uploadId", Fault::LoseReply).times(1));
    flaky
        .put_file("big", file.path(), Some(&sha))
        .await
        .unwrap();
    assert_eq!(proxy.faults(), 3, "{:?}", proxy.seen());
    assert_eq!(direct.get("big").await.unwrap(), Bytes::from(bytes));

    // A single-part upload whose reply is lost is sent again.
    let small = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(small.path(), b"small").unwrap();
    proxy.add(Rule::new("PUT", "/faults/small", Fault::LoseReply).times(1));
    flaky.put_file("small", small.path(), None).await.unwrap();
    assert_eq!(
        direct.get("small").await.unwrap(),
        Bytes::from_static(b"small")
    );
}
