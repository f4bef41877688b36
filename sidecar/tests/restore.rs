//! Restore safety on real processes and real stores: which evidence falls back to an older
//! snapshot and which fails the start, manifests that point outside their directories, savepoint
//! locations that belong to one operation, and restores through a flaky network.

mod common;

use std::path::Path;

use common::Sidecar;
use common::faults::{Fault, FaultProxy, Rule};
use common::s3::S3Server;
use common::snapshots::{
    args, assert_values, checkpoint, copy_tree, json, prepare, request_savepoint, savepoint, start,
    start_logged, write_values,
};
use serde_json::Value;
use stator_client::Client;
use stator_core::manifest::Manifest;
use stator_storage::Location;

fn chk(id: u64) -> String {
    format!("chk-{id:020}")
}

fn read_json(path: &Path) -> Value {
    json(&std::fs::read_to_string(path).unwrap())
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn run_to_exit(dir: &Path, args: &[String]) -> (bool, String) {
    let (status, stderr) = prepare(dir, args).run_to_exit();
    (status.success(), stderr)
}

#[tokio::test]
async fn an_unreadable_newest_own_manifest_never_restores_the_older_restore_location() {
    let s3 = S3Server::moto("stator");
    let proxy = FaultProxy::start(s3.port);
    let savepoint_url = "s3://stator/job/savepoints/upgrade-1";
    let l2 = "s3://stator/job/l2";

    // Version 1 writes round 0 and is savepointed; version 2 restores it and checkpoints round 1.
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), "s3://stator/job/l1", &[]);
    a.extend(s3.sidecar_args(None));
    let v1 = start(dir.path(), &a);
    let mut client = Client::connect(&v1.socket).await.unwrap();
    write_values(&mut client, 0..500, 0, 100).await;
    savepoint(&v1, savepoint_url, Some("job-op1"));
    drop(client);
    drop(v1);

    let v2_args = |dir: &Path| {
        let mut a = args(dir, l2, &["--restore-from", savepoint_url]);
        a.extend(s3.sidecar_args(Some(&proxy.endpoint())));
        a
    };
    let dir = tempfile::tempdir().unwrap();
    let v2 = start(dir.path(), &v2_args(dir.path()));
    let mut client = Client::connect(&v2.socket).await.unwrap();
    write_values(&mut client, 0..500, 1, 100).await;
    checkpoint(&v2);
    write_values(&mut client, 0..500, 2, 100).await;
    checkpoint(&v2);
    drop(client);
    drop(v2);

    // S3 fails every read of the newest manifest, through all retries: the start fails.
    let newest = format!(
        "/job/l2/checkpoints/replica-0-of-1/{}/manifest.json",
        chk(2)
    );
    proxy.add(Rule::new("GET", &newest, Fault::Unavailable));
    let fresh = tempfile::tempdir().unwrap();
    let (ok, stderr) = run_to_exit(fresh.path(), &v2_args(fresh.path()));
    assert!(
        !ok,
        "started although the newest checkpoint could not be read"
    );
    assert!(
        stderr.contains(&format!("{}/manifest.json", chk(2))),
        "{stderr}"
    );
    assert!(!stderr.contains("falling back"), "{stderr}");
    proxy.clear();

    // A proven-corrupt newest manifest falls back to the previous checkpoint of the lineage.
    let location = Location::parse(l2, &s3.options()).await.unwrap();
    let key = |id| format!("checkpoints/replica-0-of-1/{}/manifest.json", chk(id));
    location
        .put(&key(2), bytes::Bytes::from_static(b"{ not json"))
        .await
        .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let v2 = start(fresh.path(), &v2_args(fresh.path()));
    let mut client = Client::connect(&v2.socket).await.unwrap();
    assert_values(&mut client, 0..500, 1, 100).await;
    assert_eq!(v2.metric("stator_sidecar_restore_fallbacks_total"), 1.0);
    assert_eq!(
        v2.metric("stator_sidecar_restores_total{source=\"fallback\"}"),
        1.0
    );
    drop(client);
    drop(v2);

    // Every checkpoint of the lineage corrupt: back to where the lineage started, and it says so.
    location
        .put(&key(1), bytes::Bytes::from_static(b"{ not json"))
        .await
        .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let v2 = start(fresh.path(), &v2_args(fresh.path()));
    let mut client = Client::connect(&v2.socket).await.unwrap();
    assert_values(&mut client, 0..500, 0, 100).await;
    assert_eq!(v2.metric("stator_sidecar_restore_fallbacks_total"), 2.0);
    assert_eq!(
        v2.metric("stator_sidecar_restores_total{source=\"fallback\"}"),
        1.0
    );
}

/// Two checkpoints (rounds 0 and 1 of keys 0..n, values of `len` bytes) on a file:// store.
async fn two_checkpoints(store: &Path, n: u32, len: usize, extra: &[&str]) -> String {
    let url = format!("file://{}/job", store.display());
    let dir = tempfile::tempdir().unwrap();
    let sidecar = start(dir.path(), &args(dir.path(), &url, extra));
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    write_values(&mut client, 0..n, 0, len).await;
    checkpoint(&sidecar);
    write_values(&mut client, 0..n, 1, len).await;
    // A last small batch, so that the live WAL the checkpoint copies is not empty after a flush.
    write_values(&mut client, n..n + 10, 1, 100).await;
    checkpoint(&sidecar);
    url
}

#[tokio::test]
async fn local_errors_fail_the_start_instead_of_falling_back() {
    let store = tempfile::tempdir().unwrap();
    let url = two_checkpoints(store.path(), 2000, 1000, &[]).await;

    // A disk that takes no file over 64 KiB (EFBIG, as ENOSPC when full).
    let fresh = tempfile::tempdir().unwrap();
    let mut sidecar = prepare(fresh.path(), &args(fresh.path(), &url, &[]));
    sidecar.file_size_limit = Some(64 << 10);
    let (status, stderr) = sidecar.run_to_exit();
    assert!(!status.success());
    assert!(stderr.contains("File too large"), "{stderr}");
    assert!(
        stderr.contains("a problem of this machine") && !stderr.contains("falling back"),
        "{stderr}"
    );

    // RocksDB refuses to open the verified files as configured (a state redeclared as a list).
    let fresh = tempfile::tempdir().unwrap();
    let mut a = args(fresh.path(), &url, &[]);
    a[1] = "v:list".into();
    let (ok, stderr) = run_to_exit(fresh.path(), &a);
    assert!(!ok);
    assert!(
        stderr.contains("opening the store failed") && stderr.contains("cannot be redeclared"),
        "{stderr}"
    );
    assert!(!stderr.contains("falling back"), "{stderr}");
}

#[tokio::test]
async fn manifest_paths_that_leave_their_directory_are_refused() {
    let store = tempfile::tempdir().unwrap();
    let url = two_checkpoints(store.path(), 500, 100, &[]).await;
    let replica = store.path().join("job/checkpoints/replica-0-of-1");

    // The newest checkpoint names a file outside the data directory, in the socket's volume.
    let path = replica.join(chk(2)).join("manifest.json");
    let mut m = read_json(&path);
    let current = m["files"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "CURRENT")
        .unwrap();
    current["name"] = "../../../run/escaped".into();
    write_json(&path, &m);
    let fresh = tempfile::tempdir().unwrap();
    let sidecar = start_logged(fresh.path(), &args(fresh.path(), &url, &[]));
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    assert_values(&mut client, 0..500, 0, 100).await;
    assert!(!fresh.path().join("run/escaped").exists());
    assert!(!fresh.path().join("escaped").exists());
    let log = sidecar.log_text();
    assert!(
        log.contains("unsafe name") && log.contains("../../../run/escaped"),
        "{log}"
    );
    drop(client);

    // A savepoint whose object key climbs out of its directory: refused, never read.
    let sp = format!("{url}/savepoints/sp");
    savepoint(&sidecar, &sp, Some("op-1"));
    drop(sidecar);
    let sp_replica = store.path().join("job/savepoints/sp/replica-0-of-1");
    std::fs::create_dir_all(store.path().join("job/savepoints/elsewhere")).unwrap();
    std::fs::rename(
        sp_replica.join("files/CURRENT"),
        store.path().join("job/savepoints/elsewhere/CURRENT"),
    )
    .unwrap();
    let path = sp_replica.join("manifest.json");
    let mut m = read_json(&path);
    let current = m["files"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "CURRENT")
        .unwrap();
    current["object"] = "../../elsewhere/CURRENT".into();
    write_json(&path, &m);
    let fresh = tempfile::tempdir().unwrap();
    let next = format!("file://{}/next", store.path().display());
    let (ok, stderr) = run_to_exit(
        fresh.path(),
        &args(fresh.path(), &next, &["--restore-from", sp.as_str()]),
    );
    assert!(!ok, "restored from a savepoint that reads outside itself");
    assert!(
        stderr.contains("unsafe object") && stderr.contains("../../elsewhere/CURRENT"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_savepoint_location_belongs_to_one_operation() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}/job-a/l1", store.path().display());
    let location = format!(
        "file://{}/job-a/savepoints/upgrade-1",
        store.path().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let a = args(dir.path(), &url, &["--job-id", "job-a"]);
    let mut sidecar = start(dir.path(), &a);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    write_values(&mut client, 0..100, 0, 100).await;
    drop(client);
    let done = savepoint(&sidecar, &location, Some("job-a-op1"));
    assert_eq!(done["operationId"], "job-a-op1");
    let manifest_path = store
        .path()
        .join("job-a/savepoints/upgrade-1/replica-0-of-1/manifest.json");
    let m = read_json(&manifest_path);
    assert_eq!(m["operationId"], "job-a-op1");
    assert_eq!(m["jobId"], "job-a");

    let refused = |sidecar: &Sidecar, op: Option<&str>| {
        let (code, body) = request_savepoint(sidecar, &location, op);
        assert_eq!(code, 409, "{op:?}: {body}");
        json(&body)["error"].as_str().unwrap().to_owned()
    };
    // The same operation again: the same savepoint; another one: refused, naming both.
    for _ in 0..2 {
        let (code, body) = request_savepoint(&sidecar, &location, Some("job-a-op1"));
        assert_eq!(
            (code, json(&body)["state"].clone()),
            (202, "complete".into()),
            "{body}"
        );
        assert_eq!(json(&body)["id"], done["id"]);
        let error = refused(&sidecar, Some("job-a-op2"));
        assert!(
            error.contains("job-a-op1") && error.contains("job-a-op2"),
            "{error}"
        );
        // After a restart only the manifest tells.
        sidecar.restart();
    }
    let error = refused(&sidecar, None);
    assert!(error.contains("without an operationId"), "{error}");

    // Another job (a second cluster on the same bucket) is refused even with the same operation.
    drop(sidecar);
    let dir_b = tempfile::tempdir().unwrap();
    let url_b = format!("file://{}/job-b/l1", store.path().display());
    let b = start(
        dir_b.path(),
        &args(dir_b.path(), &url_b, &["--job-id", "job-b"]),
    );
    let error = refused(&b, Some("job-a-op1"));
    assert!(error.contains("job \"job-a\""), "{error}");

    // A savepoint written without an operation id (an older sidecar) proves nothing: refused.
    let mut m = read_json(&manifest_path);
    m.as_object_mut().unwrap().remove("operationId");
    write_json(&manifest_path, &m);
    drop(b);
    let sidecar = start(dir.path(), &a);
    let error = refused(&sidecar, Some("job-a-op1"));
    assert!(error.contains("without an operationId"), "{error}");

    // Without an operation id, a location that holds nothing still works (older callers).
    let fresh = format!("file://{}/job-a/savepoints/manual", store.path().display());
    let done = savepoint(&sidecar, &fresh, None);
    assert!(done.get("operationId").is_none(), "{done}");
}

#[tokio::test]
async fn savepoint_staging_left_by_a_crash_is_removed_at_start() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}/job", store.path().display());
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("data/savepoints/sp-0123456789abcdef");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("000012.sst"), vec![7u8; 1 << 20]).unwrap();
    let _sidecar = start(dir.path(), &args(dir.path(), &url, &[]));
    assert!(!dir.path().join("data/savepoints").exists());
}

#[tokio::test]
async fn a_restore_through_a_flaky_network_retries_and_keeps_what_it_verified() {
    let s3 = S3Server::moto("stator");
    let proxy = FaultProxy::start(s3.port);
    let url = "s3://stator/jobs/flaky";
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), url, &["--write-buffer-mb", "1"]);
    a.extend(s3.sidecar_args(None));
    let sidecar = start(dir.path(), &a);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    write_values(&mut client, 0..3000, 0, 1000).await;
    checkpoint(&sidecar);
    drop(client);
    drop(sidecar);
    let flaky_args = |dir: &Path| {
        let mut a = args(dir, url, &["--transfer-concurrency", "1"]);
        a.extend(s3.sidecar_args(Some(&proxy.endpoint())));
        a
    };

    // Bodies that break off now and then: the restore retries them and starts.
    proxy.add(Rule::new("GET", "/shared/", Fault::TruncateBody(100)).times(2));
    proxy.add(Rule::new("GET", "/shared/", Fault::ResetBody(1000)).times(1));
    let fresh = tempfile::tempdir().unwrap();
    let sidecar = start(fresh.path(), &flaky_args(fresh.path()));
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    assert_values(&mut client, 0..3000, 0, 1000).await;
    assert_eq!(proxy.faults(), 3);
    drop(client);
    drop(sidecar);

    // One object always breaks off: the start fails, and the next start fetches only that one.
    proxy.clear();
    let before = proxy.seen().len();
    proxy.add(Rule::new("GET", "-OPTIONS-", Fault::TruncateBody(10)));
    let fresh = tempfile::tempdir().unwrap();
    let (ok, stderr) = run_to_exit(fresh.path(), &flaky_args(fresh.path()));
    assert!(!ok);
    assert!(
        stderr.contains("OPTIONS-") && stderr.contains("broke off"),
        "{stderr}"
    );
    proxy.clear();
    let sidecar = start(fresh.path(), &flaky_args(fresh.path()));
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    assert_values(&mut client, 0..3000, 0, 1000).await;
    let mut gets = std::collections::BTreeMap::<String, usize>::new();
    for s in &proxy.seen()[before..] {
        if s.method == "GET" && s.path.contains("/shared/") {
            *gets.entry(s.path.clone()).or_default() += 1;
        }
    }
    assert!(gets.len() > 3, "{gets:?}");
    for (path, n) in &gets {
        if !path.contains("-OPTIONS-") {
            assert_eq!(*n, 1, "{path} was fetched again: {gets:?}");
        }
    }
}

#[tokio::test]
async fn every_kind_of_damaged_object_falls_back_or_fails_loudly() {
    let pristine = tempfile::tempdir().unwrap();
    // A small memtable, so that both checkpoints have SST files of their own.
    two_checkpoints(pristine.path(), 2000, 1000, &["--write-buffer-mb", "1"]).await;
    let replica = |root: &Path| root.join("job/checkpoints/replica-0-of-1");
    let read = |root: &Path, id| {
        Manifest::parse(&std::fs::read(replica(root).join(chk(id)).join("manifest.json")).unwrap())
            .unwrap()
    };
    let (m1, m2) = (read(pristine.path(), 1), read(pristine.path(), 2));
    let only_in_2 = |suffix: &str| {
        m2.files
            .iter()
            .filter(|f| f.size > 0 && !m1.files.iter().any(|g| g.object == f.object))
            .find(|f| f.name.ends_with(suffix) || f.name.starts_with(suffix))
            .unwrap_or_else(|| panic!("checkpoint 2 has no {suffix} file of its own: {m2:?}"))
            .object
            .clone()
    };
    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("an SST file", only_in_2(".sst"), "SHA-256"),
        ("the WAL copy", only_in_2(".log"), "SHA-256"),
        ("RocksDB's MANIFEST", only_in_2("MANIFEST-"), "SHA-256"),
        (
            "a missing object",
            only_in_2(".sst"),
            "the object is missing",
        ),
        (
            "manifest.json",
            format!("{}/manifest.json", chk(2)),
            "not a manifest",
        ),
    ];
    for (kind, object, reason) in cases {
        let root = tempfile::tempdir().unwrap();
        copy_tree(pristine.path(), root.path());
        let victim = replica(root.path()).join(&object);
        match kind {
            "a missing object" => std::fs::remove_file(&victim).unwrap(),
            "manifest.json" => std::fs::write(&victim, b"{\"formatVersion\": 1, \"kind\"").unwrap(),
            _ => flip(&victim),
        }
        let url = format!("file://{}/job", root.path().display());

        // From the replica's own checkpoints: the previous one, with an ERROR line naming both.
        let fresh = tempfile::tempdir().unwrap();
        let sidecar = start_logged(fresh.path(), &args(fresh.path(), &url, &[]));
        let mut client = Client::connect(&sidecar.socket).await.unwrap();
        assert_values(&mut client, 0..2000, 0, 1000).await;
        assert_eq!(
            sidecar.metric("stator_sidecar_restore_fallbacks_total"),
            1.0,
            "{kind}"
        );
        let log = sidecar.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("ERROR") && l.contains("falling back"))
            .unwrap_or_else(|| panic!("{kind}: no fallback line in {log}"));
        let object_name = object.rsplit('/').next().unwrap();
        assert!(
            line.contains(object_name) && line.contains(reason),
            "{kind}: {line}"
        );
        drop(client);
        drop(sidecar);

        // Named explicitly: never a silent step back, the start fails and says why.
        let fresh = tempfile::tempdir().unwrap();
        let next = format!("file://{}/next", root.path().display());
        let (ok, stderr) = run_to_exit(
            fresh.path(),
            &args(fresh.path(), &next, &["--restore-from", url.as_str()]),
        );
        assert!(
            !ok,
            "{kind}: an explicit restore of a damaged checkpoint started"
        );
        assert!(
            stderr.contains("corrupt") && stderr.contains(object_name) && stderr.contains(reason),
            "{kind}: {stderr}"
        );
    }
}
