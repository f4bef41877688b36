//! Checkpoints, savepoints and restore on real processes and real S3-compatible servers.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::Sidecar;
use common::s3::{Proxy, S3Server};
use serde_json::Value;
use stator_client::{Batch, Client, proto::ErrorCode};
use stator_core::manifest::{Hold, Manifest};
use stator_storage::Location;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn start(dir: &Path, extra: &[String]) -> Sidecar {
    let args: Vec<&str> = extra.iter().map(String::as_str).collect();
    Sidecar::start_in(dir, &args)
}

fn base_args(dir: &Path, location: &str) -> Vec<String> {
    [
        "--state",
        "v:value",
        "--state-location",
        location,
        "--checkpoint-interval-secs",
        "0",
        "--admin-token-file",
        &common::token_file(dir),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Triggers a checkpoint and waits until it is confirmed; returns its id.
fn checkpoint(sidecar: &Sidecar) -> u64 {
    let (code, body) = sidecar.post("/v1/checkpoints", "");
    assert_eq!(code, 202, "{body}");
    let id = json(&body)["id"].as_u64().unwrap();
    wait_checkpoint(sidecar, id);
    id
}

fn wait_checkpoint(sidecar: &Sidecar, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, body) = sidecar.get("/v1/checkpoints");
        assert_eq!(code, 200, "{body}");
        let v = json(&body);
        if v["latest"]["id"].as_u64().is_some_and(|l| l >= id) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint {id} not confirmed in 90 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn savepoint(sidecar: &Sidecar, location: &str, stop: bool) -> Value {
    let (code, body) = sidecar.post(
        "/v1/savepoints",
        &serde_json::json!({"location": location, "stop": stop}).to_string(),
    );
    assert_eq!(code, 202, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, body) = sidecar.get(&format!("/v1/savepoints/{id}"));
        assert_eq!(code, 200, "{body}");
        let v = json(&body);
        match v["state"].as_str().unwrap() {
            "pending" => {}
            "complete" => return v,
            other => panic!("savepoint {other}: {body}"),
        }
        assert!(Instant::now() < deadline, "savepoint not done in 90 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A value of about `len` bytes that compresses poorly, different per key and round.
fn value(key: u32, round: u32, len: usize) -> String {
    let mut x = (u64::from(key) << 32 | u64::from(round)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = format!("r{round}-k{key}-");
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    out
}

async fn write_values(client: &mut Client, keys: std::ops::Range<u32>, round: u32, len: usize) {
    let keys: Vec<u32> = keys.collect();
    for chunk in keys.chunks(500) {
        let mut batch = Batch::new();
        for k in chunk {
            batch.value_put("v", format!("k{k}"), value(*k, round, len));
        }
        client.write(batch).await.unwrap();
    }
}

/// Asserts every key in `keys` holds its value of `round` (or is absent when `round` is None).
async fn assert_values(
    client: &mut Client,
    keys: std::ops::Range<u32>,
    round: Option<u32>,
    len: usize,
) {
    let keys: Vec<u32> = keys.collect();
    for chunk in keys.chunks(500) {
        let got = client
            .multi_get("v", chunk.iter().map(|k| format!("k{k}")))
            .await
            .unwrap();
        for (k, v) in chunk.iter().zip(got) {
            let expected = round.map(|r| value(*k, r, len));
            assert_eq!(
                v.as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned()),
                expected,
                "key k{k}"
            );
        }
    }
}

async fn read_manifest(location: &Location, dir: &str, id: u64) -> Manifest {
    let bytes = location
        .get(&format!("{dir}/chk-{id:020}/manifest.json"))
        .await
        .unwrap();
    Manifest::parse(&bytes).unwrap()
}

/// Replica 0 of 1's checkpoint directory under the state location `url`.
async fn own_at(s3: &S3Server, url: &str) -> Location {
    Location::parse(url, &s3.options())
        .await
        .unwrap()
        .child("checkpoints/replica-0-of-1")
}

#[tokio::test]
async fn incremental_checkpoint_uploads_only_the_files_the_last_one_lacks() {
    let s3 = S3Server::moto("stator");
    let dir = tempfile::tempdir().unwrap();
    let url = "s3://stator/jobs/incremental";
    let mut args = base_args(dir.path(), url);
    args.extend(s3.sidecar_args(None));
    let sidecar = start(dir.path(), &args);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    // 20 MB: more WAL than a checkpoint copies, so the first checkpoint flushes it into one SST.
    write_values(&mut client, 0..20_000, 0, 1000).await;
    let first = checkpoint(&sidecar);
    // Change 1% of the keys: the second checkpoint holds the same SST and a small WAL.
    write_values(&mut client, 0..200, 1, 1000).await;
    let second = checkpoint(&sidecar);
    assert_eq!((first, second), (1, 2), "ids increase from 1");

    let listed = json(&sidecar.get("/v1/checkpoints").1);
    let info = |id: u64| {
        listed["retained"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap()
    };
    let location = Location::parse(url, &s3.options()).await.unwrap();
    let m1 = read_manifest(&location, "checkpoints/replica-0-of-1", 1).await;
    let m2 = read_manifest(&location, "checkpoints/replica-0-of-1", 2).await;
    let in_first: HashSet<_> = m1.files.iter().map(|f| f.object.clone()).collect();
    let new_bytes: u64 = m2
        .files
        .iter()
        .filter(|f| !in_first.contains(&f.object))
        .map(|f| f.size)
        .sum();
    let uploaded1 = info(1)["uploadedBytes"].as_u64().unwrap();
    let uploaded2 = info(2)["uploadedBytes"].as_u64().unwrap();
    assert_eq!(
        uploaded1,
        m1.total_bytes(),
        "the first checkpoint uploads everything"
    );
    assert_eq!(
        uploaded2, new_bytes,
        "the second uploads exactly the files the first lacks"
    );
    assert!(
        uploaded2 * 10 < m2.total_bytes(),
        "after a 1% change the upload ({uploaded2} bytes) is a small part of the state ({} bytes)",
        m2.total_bytes()
    );
    assert_eq!(
        sidecar.metric("stator_sidecar_uploaded_bytes_total{kind=\"checkpoint\"}") as u64,
        uploaded1 + uploaded2
    );
    let status = json(&sidecar.get("/v1/status").1);
    assert_eq!(status["latestCheckpoint"]["id"], 2);
}

#[tokio::test]
async fn garbage_collection_deletes_only_unreferenced_files() {
    let store_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/job", store_dir.path().display());
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path(), &url);
    args.extend(["--retained-checkpoints".into(), "2".into()]);
    let sidecar = start(dir.path(), &args);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let replica_dir = store_dir.path().join("job/checkpoints/replica-0-of-1");
    let mut deleted_any = false;
    let mut seen_objects = BTreeSet::new();
    for round in 0..7u32 {
        // Overwrite a share of the keys each round, so compactions replace older files.
        write_values(&mut client, 0..3000, round, 100).await;
        let id = checkpoint(&sidecar);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = common::s3::files_under(&replica_dir);
            let manifests: Vec<&String> = all
                .iter()
                .filter(|f| f.ends_with("manifest.json"))
                .collect();
            let mut referenced = BTreeSet::new();
            for m in &manifests {
                let m = Manifest::parse(&std::fs::read(replica_dir.join(m)).unwrap()).unwrap();
                for f in m.files {
                    let path = replica_dir.join(&f.object);
                    let (size, sha) = stator_storage::sha256_file(&path).unwrap_or_else(|e| {
                        panic!(
                            "checkpoint {} references {} which is gone: {e}",
                            m.checkpoint_id, f.object
                        )
                    });
                    assert_eq!((size, sha), (f.size, f.sha256), "{} is intact", f.object);
                    referenced.insert(f.object);
                }
            }
            let shared: BTreeSet<String> = all
                .iter()
                .filter(|f| f.starts_with("shared/"))
                .cloned()
                .collect();
            seen_objects.extend(shared.iter().cloned());
            let expected_manifests = (id.min(2)) as usize;
            if manifests.len() == expected_manifests && shared == referenced {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after checkpoint {id}: {} manifests (want {expected_manifests}); unreferenced files {:?}",
                manifests.len(),
                shared.difference(&referenced).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let now: BTreeSet<String> = common::s3::files_under(&replica_dir).into_iter().collect();
        deleted_any |= seen_objects.iter().any(|o| !now.contains(o));
    }
    assert!(deleted_any, "files of dropped checkpoints were collected");
    drop(client);
    drop(sidecar);

    // The retained state restores.
    let fresh = tempfile::tempdir().unwrap();
    let sidecar = start(fresh.path(), &base_args(fresh.path(), &url));
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    assert_values(&mut client, 0..3000, Some(6), 100).await;
}

/// When to kill the sidecar during a checkpoint.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Right after the trigger: during the cut or hashing.
    Trigger,
    /// Once this many new files are uploaded (the manifest is not yet written).
    Uploaded(usize),
    /// After the checkpoint is confirmed.
    Confirmed,
}

#[tokio::test]
async fn kill_9_during_upload_restores_exactly_the_latest_complete_checkpoint() {
    let s3 = S3Server::moto("stator");
    let url = "s3://stator/jobs/killed";
    let location = Location::parse(url, &s3.options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path(), url);
    args.extend(s3.sidecar_args(None));
    // Small memtables and one transfer at a time: several files, uploaded one by one.
    args.extend(["--write-buffer-mb", "1", "--transfer-concurrency", "1"].map(String::from));
    let mut sidecar = start(dir.path(), &args);
    const KEYS: u32 = 20_000;
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    write_values(&mut client, 0..KEYS, 0, 300).await;
    checkpoint(&sidecar);
    let shared = async || {
        location
            .list("checkpoints/replica-0-of-1/shared/")
            .await
            .unwrap()
            .len()
    };
    // Which round each committed checkpoint holds.
    let mut rounds: BTreeMap<u64, u32> = BTreeMap::from([(1, 0)]);
    let plan = [
        KillAt::Trigger,
        KillAt::Uploaded(1),
        KillAt::Uploaded(3),
        KillAt::Confirmed,
    ];
    for (round, kill_at) in (1u32..).zip(plan) {
        write_values(&mut client, 0..KEYS, round, 300).await;
        let before = shared().await;
        let (code, body) = sidecar.post("/v1/checkpoints", "");
        assert_eq!(code, 202);
        let id = json(&body)["id"].as_u64().unwrap();
        match kill_at {
            KillAt::Trigger => {}
            KillAt::Uploaded(n) => {
                let deadline = Instant::now() + Duration::from_secs(30);
                while shared().await < before + n {
                    assert!(Instant::now() < deadline, "no upload started");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            KillAt::Confirmed => {
                wait_checkpoint(&sidecar, id);
            }
        }
        sidecar.kill9();
        drop(client);
        let manifests = location
            .list("checkpoints/replica-0-of-1/chk-")
            .await
            .unwrap();
        if manifests
            .iter()
            .any(|o| o.key.contains(&format!("chk-{id:020}/")))
        {
            rounds.insert(id, round);
        }
        let latest = *rounds.keys().max().unwrap();
        let expected = rounds[&latest];
        match kill_at {
            KillAt::Confirmed => assert_eq!(expected, round),
            _ => assert_ne!(expected, round, "{kill_at:?}: killed before the manifest"),
        }
        // Restart on the same volume (local recovery may reuse files).
        sidecar.spawn();
        sidecar.wait_ready();
        client = Client::connect(&sidecar.socket).await.unwrap();
        assert_values(&mut client, 0..KEYS, Some(expected), 300).await;
        if matches!(kill_at, KillAt::Confirmed) {
            assert_eq!(
                sidecar.metric("stator_sidecar_restores_total{source=\"local\"}"),
                1.0,
                "the confirmed checkpoint is on the volume: nothing is downloaded"
            );
        }
        eprintln!("killed at {kill_at:?}: restored checkpoint {latest} (round {expected})");
    }
}

#[tokio::test]
async fn a_corrupt_newest_checkpoint_falls_back_and_an_explicit_one_fails() {
    let store_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/job", store_dir.path().display());
    let dir = tempfile::tempdir().unwrap();
    let sidecar = start(dir.path(), &base_args(dir.path(), &url));
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    write_values(&mut client, 0..1000, 0, 100).await;
    checkpoint(&sidecar);
    write_values(&mut client, 0..1000, 1, 100).await;
    checkpoint(&sidecar);
    drop(client);
    drop(sidecar);

    let replica_dir = store_dir.path().join("job/checkpoints/replica-0-of-1");
    let m1 = Manifest::parse(
        &std::fs::read(replica_dir.join(format!("chk-{:020}/manifest.json", 1))).unwrap(),
    )
    .unwrap();
    let m2 = Manifest::parse(
        &std::fs::read(replica_dir.join(format!("chk-{:020}/manifest.json", 2))).unwrap(),
    )
    .unwrap();
    let only_in_2 = m2
        .files
        .iter()
        .filter(|f| f.size > 100 && !m1.files.iter().any(|g| g.object == f.object))
        .max_by_key(|f| f.size)
        .expect("the second checkpoint has a new data file");
    let victim = replica_dir.join(&only_in_2.object);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();

    // Latest-checkpoint mode: falls back to checkpoint 1, says so, counts it.
    let fresh = tempfile::tempdir().unwrap();
    let sidecar = start(fresh.path(), &base_args(fresh.path(), &url));
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    assert_values(&mut client, 0..1000, Some(0), 100).await;
    assert_eq!(
        sidecar.metric("stator_sidecar_restore_fallbacks_total"),
        1.0
    );
    assert_eq!(
        sidecar.metric("stator_sidecar_restores_total{source=\"fallback\"}"),
        1.0
    );
    drop(client);
    drop(sidecar);

    // Explicit mode: the same corruption is fatal.
    let fresh = tempfile::tempdir().unwrap();
    let mut args = base_args(fresh.path(), &url);
    args.extend(["--restore-from".into(), url.clone()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, stderr) = Sidecar::new_in(fresh.path(), &refs).run_to_exit();
    assert!(
        !status.success(),
        "a corrupt explicit restore must not start"
    );
    assert!(
        stderr.contains("corrupt") && stderr.contains(&only_in_2.object),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_missing_explicit_savepoint_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("file://{}/savepoints/never-taken", dir.path().display());
    let (status, stderr) = Sidecar::new_in(dir.path(), &["--restore-from", &missing]).run_to_exit();
    assert!(!status.success());
    assert!(
        stderr.contains("nothing to restore") && stderr.contains("never-taken"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data/db").exists(),
        "no empty store was created"
    );
}

/// Writes the reference state: values, lists and maps for `n` keys and operator state.
async fn write_reference(client: &mut Client, n: u32) {
    let keys: Vec<u32> = (0..n).collect();
    for chunk in keys.chunks(500) {
        let mut batch = Batch::new();
        for k in chunk {
            batch.value_put("v", format!("k{k}"), format!("v{k}"));
            if k % 3 == 0 {
                batch.list_append("l", format!("k{k}"), [format!("a{k}"), format!("b{k}")]);
            }
            if k % 5 == 0 {
                batch.map_put("m", format!("k{k}"), "mk", format!("mv{k}"));
            }
        }
        client.write(batch).await.unwrap();
    }
    let mut batch = Batch::new();
    batch.operator_state_set("offsets", ["o0", "o1", "o2", "o3", "o4", "o5", "o6"]);
    batch.operator_state_set("config", ["c"]);
    client.write(batch).await.unwrap();
}

fn rescale_args(dir: &Path, store: &Path, replica: u32, parallelism: u32) -> Vec<String> {
    let url = format!("file://{}/job", store.display());
    let mut args = base_args(dir, &url);
    args.extend(
        [
            "--state",
            "l:list",
            "--state",
            "m:map",
            "--operator-state",
            "offsets:split",
            "--operator-state",
            "config:union",
            "--replica-index",
            &replica.to_string(),
            "--parallelism",
            &parallelism.to_string(),
        ]
        .map(String::from),
    );
    args
}

fn inspect(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stator-inspect"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn rescale_keeps_exactly_the_original_keys() {
    const N: u32 = 3000;
    let store = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = start(dir.path(), &rescale_args(dir.path(), store.path(), 0, 1));
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    write_reference(&mut client, N).await;
    let mut previous = format!("file://{}/job/savepoints/p1", store.path().display());
    savepoint(&sidecar, &previous, true);
    drop(client);
    drop(sidecar);

    for (step, (from, to)) in [(1u32, 3u32), (3, 2), (2, 4), (4, 4)]
        .into_iter()
        .enumerate()
    {
        let dirs: Vec<_> = (0..to).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut sidecars = Vec::new();
        for (j, d) in dirs.iter().enumerate() {
            let mut args = rescale_args(d.path(), store.path(), j as u32, to);
            args.extend(["--restore-from".into(), previous.clone()]);
            sidecars.push(start(d.path(), &args));
        }
        let mut clients = Vec::new();
        for s in &sidecars {
            clients.push(Client::connect(&s.socket).await.unwrap());
        }
        for k in 0..N {
            let key = format!("k{k}");
            let owner = stator_core::keygroup::owner(key.as_bytes(), to, 128) as usize;
            let c = &mut clients[owner];
            assert_eq!(
                c.get("v", key.clone()).await.unwrap().as_deref(),
                Some(format!("v{k}").as_bytes()),
                "{from}->{to}: {key}"
            );
            if k % 3 == 0 {
                assert_eq!(
                    c.list_get("l", key.clone()).await.unwrap(),
                    [format!("a{k}"), format!("b{k}")]
                );
            }
            if k % 5 == 0 {
                assert_eq!(
                    c.map_get("m", key.clone(), "mk").await.unwrap().as_deref(),
                    Some(format!("mv{k}").as_bytes())
                );
            }
            let other = &mut clients[(owner + 1) % to as usize];
            if to > 1 {
                let err = other.get("v", key.clone()).await.unwrap_err();
                assert_eq!(err.code(), Some(ErrorCode::WrongKeyGroup));
            }
        }
        // Split operator state is dealt out, in order, without loss or repeats.
        let mut offsets = Vec::new();
        for c in &mut clients {
            offsets.extend(c.operator_state_get("offsets").await.unwrap());
        }
        assert_eq!(
            offsets,
            ["o0", "o1", "o2", "o3", "o4", "o5", "o6"],
            "{from}->{to}"
        );
        if step == 0 {
            for c in &mut clients {
                assert_eq!(
                    c.operator_state_get("config").await.unwrap(),
                    ["c"],
                    "union: everyone gets all"
                );
            }
        }
        drop(clients);
        let next = format!(
            "file://{}/job/savepoints/p{}",
            store.path().display(),
            step + 2
        );
        for s in &sidecars {
            savepoint(s, &next, true);
        }
        drop(sidecars);
        // The stored state holds every key exactly once, each in its owner's replica.
        let (ok, out) = inspect(&["dump", &next, "--state", "v"]);
        assert!(ok, "{out}");
        let mut seen = BTreeMap::new();
        for line in out.lines() {
            let v = json(line);
            let key = v["key"].as_str().unwrap().to_owned();
            let owner = stator_core::keygroup::owner(key.as_bytes(), to, 128);
            assert_eq!(
                v["replica"].as_u64().unwrap() as u32,
                owner,
                "{key} sits in its owner"
            );
            *seen.entry(key).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), N as usize, "{from}->{to}: no key lost");
        assert!(seen.values().all(|n| *n == 1), "{from}->{to}: no key twice");
        previous = next;
    }
    let (ok, out) = inspect(&["verify", &previous]);
    assert!(ok && out.lines().count() == 4, "{out}");
    let (ok, out) = inspect(&["list", &format!("file://{}/job", store.path().display())]);
    assert!(
        ok && out.contains("savepoint") && out.contains("complete"),
        "{out}"
    );
}

#[tokio::test]
async fn an_s3_outage_fails_checkpoints_but_not_serving() {
    let s3 = S3Server::moto("stator");
    let proxy = Proxy::start(s3.port);
    let url = "s3://stator/jobs/outage";
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path(), url);
    args.extend(s3.sidecar_args(Some(&proxy.endpoint())));
    let sidecar = start(dir.path(), &args);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    write_values(&mut client, 0..1000, 0, 100).await;
    checkpoint(&sidecar);

    proxy.set_down(true);
    write_values(&mut client, 0..1000, 1, 100).await;
    let (code, body) = sidecar.post("/v1/checkpoints", "");
    assert_eq!(code, 202);
    let failed_id = json(&body)["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sidecar.metric("stator_sidecar_checkpoints_total{outcome=\"failed\"}") < 1.0 {
        // Serving continues throughout.
        assert_values(&mut client, 0..50, Some(1), 100).await;
        assert!(
            Instant::now() < deadline,
            "the checkpoint did not fail within 60 s of the outage"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        json(&sidecar.get("/v1/status").1)["latestCheckpoint"]["id"],
        1
    );
    proxy.set_down(false);
    let location = Location::parse(url, &s3.options()).await.unwrap();
    assert!(
        !location
            .exists(&format!(
                "checkpoints/replica-0-of-1/chk-{failed_id:020}/manifest.json"
            ))
            .await
            .unwrap(),
        "a failed checkpoint leaves no manifest"
    );
    write_values(&mut client, 0..1000, 2, 100).await;
    let id = checkpoint(&sidecar);
    assert!(id > failed_id);
    drop(client);
    drop(sidecar);

    let fresh = tempfile::tempdir().unwrap();
    let mut args = base_args(fresh.path(), url);
    args.extend(s3.sidecar_args(None));
    let sidecar = start(fresh.path(), &args);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    assert_values(&mut client, 0..1000, Some(2), 100).await;
}

#[tokio::test]
async fn stop_with_savepoint_refuses_writes_and_holds_every_acknowledged_one() {
    // s3s-fs checks every request's SigV4 signature and the SHA-256 we send with each object.
    let s3 = S3Server::s3s_fs("stator");
    let url = "s3://stator/jobs/stopped";
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path(), url);
    args.extend(s3.sidecar_args(None));
    let sidecar = start(dir.path(), &args);
    let socket = sidecar.socket.clone();
    let writer = tokio::spawn(async move {
        let mut client = Client::connect(&socket).await.unwrap();
        let mut acknowledged = Vec::new();
        for k in 0u32.. {
            let mut batch = Batch::new();
            batch.value_put("v", format!("k{k}"), value(k, 0, 100));
            match client.write(batch).await {
                Ok(_) => acknowledged.push(k),
                Err(e) => {
                    assert_eq!(e.code(), Some(ErrorCode::Suspended), "{e}");
                    break;
                }
            }
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let savepoint_url = format!("{url}/savepoints/final");
    let done = savepoint(&sidecar, &savepoint_url, true);
    assert!(done["bytes"].as_u64().unwrap() > 0);
    assert_eq!(done["stop"], true);
    assert!(done["fencedAt"].is_string(), "{done}");
    let acknowledged = writer.await.unwrap();
    assert!(acknowledged.len() > 10, "the writer ran before the fence");
    // Two phases: a checkpoint while the writer went on uploaded the bulk; the fenced phase
    // uploaded only what changed since, and the savepoint references the checkpoint's files
    // (kept by a hold) until the copies are made, which a stopped sidecar leaves to the operator.
    assert!(
        done["uploadedBytes"].as_u64().unwrap() < done["bytes"].as_u64().unwrap(),
        "the fenced phase uploaded less than the savepoint holds: {done}"
    );
    assert_eq!(done["selfContained"], false, "{done}");
    let sp = Location::parse(&savepoint_url, &s3.options())
        .await
        .unwrap()
        .child("replica-0-of-1");
    let m = Manifest::parse(&sp.get("manifest.json").await.unwrap()).unwrap();
    let hold = m.hold.clone().expect("a hold on the checkpoint's files");
    let referenced: Vec<_> = m.files.iter().filter(|f| f.source.is_some()).collect();
    assert!(!referenced.is_empty());
    for f in &referenced {
        assert!(
            !sp.exists(&f.object).await.unwrap(),
            "{} is not copied yet",
            f.object
        );
    }
    // Idempotent: a second trigger for the same location is the same savepoint.
    let (code, again) = sidecar.post(
        "/v1/savepoints",
        &serde_json::json!({"location": savepoint_url, "stop": true}).to_string(),
    );
    assert_eq!(code, 202);
    assert_eq!(json(&again)["id"], done["id"]);
    assert_eq!(json(&again)["state"], "complete");
    assert_eq!(
        common::http_get(sidecar.admin, "/readyz", None).unwrap().0,
        503
    );
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let mut batch = Batch::new();
    batch.value_put("v", "late", "x");
    assert_eq!(
        client.write(batch).await.unwrap_err().code(),
        Some(ErrorCode::Suspended)
    );
    drop(client);
    drop(sidecar);

    let fresh = tempfile::tempdir().unwrap();
    let mut args = base_args(fresh.path(), "s3://stator/jobs/next");
    args.extend(s3.sidecar_args(None));
    args.extend(["--restore-from".into(), savepoint_url.clone()]);
    let mut sidecar = start(fresh.path(), &args);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    for chunk in acknowledged.chunks(500) {
        let got = client
            .multi_get("v", chunk.iter().map(|k| format!("k{k}")))
            .await
            .unwrap();
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(
                v.as_deref(),
                Some(value(*k, 0, 100).as_bytes()),
                "acknowledged k{k}"
            );
        }
    }
    assert_eq!(
        sidecar.metric("stator_sidecar_restores_total{source=\"savepoint\"}"),
        1.0
    );

    // Made self-contained (as the operator does after the upgrade): the copies are in the
    // savepoint's own directory, the manifest names no source and the hold is gone.
    let scratch = tempfile::tempdir().unwrap();
    let copied = stator_storage::complete_savepoint_all(
        &Location::parse(&savepoint_url, &s3.options())
            .await
            .unwrap(),
        &s3.options(),
        4,
        scratch.path(),
    )
    .await
    .unwrap();
    assert_eq!(copied.copied, referenced.len());
    let m = Manifest::parse(&sp.get("manifest.json").await.unwrap()).unwrap();
    assert!(m.is_self_contained(), "{m:?}");
    for f in &m.files {
        assert!(sp.exists(&f.object).await.unwrap(), "{}", f.object);
    }
    let (holds, name) = hold.rsplit_once('/').unwrap();
    let holds = Location::parse(holds, &s3.options()).await.unwrap();
    assert!(!holds.exists(name).await.unwrap(), "the hold is released");
    let again = stator_storage::complete_savepoint_all(
        &Location::parse(&savepoint_url, &s3.options())
            .await
            .unwrap(),
        &s3.options(),
        4,
        scratch.path(),
    )
    .await
    .unwrap();
    assert_eq!(again.copied, 0, "completing twice copies nothing");

    // Restarted with the same --restore-from after checkpointing: its own newer checkpoint wins.
    let mut batch = Batch::new();
    batch.value_put("v", "after-restore", "kept");
    client.write(batch).await.unwrap();
    checkpoint(&sidecar);
    drop(client);
    sidecar.kill9();
    sidecar.spawn();
    sidecar.wait_ready();
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    assert_eq!(
        client.get("v", "after-restore").await.unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        sidecar.metric("stator_sidecar_restores_total{source=\"checkpoint\"}")
            + sidecar.metric("stator_sidecar_restores_total{source=\"local\"}"),
        1.0
    );
}

/// A sidecar (one checkpoint retained) that took a savepoint referencing every file of its
/// checkpoint, with the copies that would make it self-contained not made.
struct HeldSavepoint {
    _dir: tempfile::TempDir,
    sidecar: Sidecar,
    client: Client,
    /// The replica's checkpoint directory.
    own: Location,
    /// The savepoint's replica directory.
    sp: Location,
    savepoint_url: String,
    /// The checkpoint objects the savepoint references (`shared/...`).
    held: Vec<String>,
}

async fn held_savepoint(s3: &S3Server, url: &str, name: &str) -> HeldSavepoint {
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path(), url);
    args.extend(s3.sidecar_args(None));
    args.extend(["--retained-checkpoints".into(), "1".into()]);
    let mut sidecar = Sidecar::new_in(
        dir.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    sidecar
        .env
        .push(("STATOR_FAULT_SKIP_SAVEPOINT_COPIES".into(), "true".into()));
    sidecar.spawn();
    sidecar.wait_ready();
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    write_values(&mut client, 0..1000, 0, 200).await;
    checkpoint(&sidecar);
    // Nothing changed since the checkpoint: the savepoint references every file of it.
    let savepoint_url = format!("{url}/savepoints/{name}");
    let done = savepoint(&sidecar, &savepoint_url, false);
    assert_eq!(done["selfContained"], false, "{done}");
    let own = Location::parse(url, &s3.options())
        .await
        .unwrap()
        .child("checkpoints/replica-0-of-1");
    let sp = Location::parse(&savepoint_url, &s3.options())
        .await
        .unwrap()
        .child("replica-0-of-1");
    let m = Manifest::parse(&sp.get("manifest.json").await.unwrap()).unwrap();
    let held: Vec<String> = m
        .files
        .iter()
        .filter_map(|f| f.source.as_ref())
        .map(|s| {
            s.rsplit_once("/checkpoints/replica-0-of-1/")
                .unwrap()
                .1
                .to_owned()
        })
        .collect();
    assert!(!held.is_empty(), "{m:?}");
    HeldSavepoint {
        _dir: dir,
        sidecar,
        client,
        own,
        sp,
        savepoint_url,
        held,
    }
}

/// New writes and two more checkpoints, so that with one checkpoint retained the first one's
/// files are garbage for retention; waits until retention has run (the second checkpoint's own
/// WAL, which nothing needs, is collected). Returns the held objects no retained checkpoint
/// references.
async fn checkpoint_past_the_held_files(
    h: &mut HeldSavepoint,
    s3: &S3Server,
    url: &str,
) -> Vec<String> {
    write_values(&mut h.client, 0..1000, 1, 200).await;
    let second = checkpoint(&h.sidecar);
    let m2 = read_manifest(&own_at(s3, url).await, "", second).await;
    write_values(&mut h.client, 0..1000, 2, 200).await;
    let third = checkpoint(&h.sidecar);
    let latest = read_manifest(&own_at(s3, url).await, "", third).await;
    let live: HashSet<&str> = latest.files.iter().map(|f| f.object.as_str()).collect();
    let only_held: Vec<String> = h
        .held
        .iter()
        .filter(|o| !live.contains(o.as_str()))
        .cloned()
        .collect();
    assert!(
        !only_held.is_empty(),
        "some referenced file is in no retained checkpoint (the WAL changed)"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for f in m2
        .files
        .iter()
        .filter(|f| !live.contains(f.object.as_str()) && !h.held.contains(&f.object))
    {
        while h.own.exists(&f.object).await.unwrap() {
            assert!(
                Instant::now() < deadline,
                "{} was never collected",
                f.object
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    only_held
}

/// The first of `objects` that still exists in `dir`, if any.
async fn first_existing(dir: &Location, objects: &[String]) -> Option<String> {
    for o in objects {
        if dir.exists(o).await.unwrap() {
            return Some(o.clone());
        }
    }
    None
}

#[tokio::test]
async fn a_hold_whose_savepoint_never_completed_is_dropped_once_it_is_an_hour_old() {
    let s3 = S3Server::s3s_fs("stator");
    let url = "s3://stator/jobs/orphan";
    let mut h = held_savepoint(&s3, url, "orphan").await;
    // As if the sidecar had died after writing the hold and before the manifest.
    h.sp.delete("manifest.json").await.unwrap();
    let holds = h.own.list("holds/").await.unwrap();
    assert_eq!(holds.len(), 1, "{holds:?}");
    let hold_key = holds[0].key.clone();
    // Retention has run and kept what the young hold names: its savepoint may still be writing
    // its manifest.
    let only_held = checkpoint_past_the_held_files(&mut h, &s3, url).await;
    for o in &only_held {
        assert!(
            h.own.exists(o).await.unwrap(),
            "{o} was collected under a young hold"
        );
    }
    assert!(h.own.exists(&hold_key).await.unwrap());

    // Two hours later (the hold rewritten as written then), the next retention drops the hold
    // and collects what only it kept.
    let mut hold = Hold::parse(&h.own.get(&hold_key).await.unwrap()).unwrap();
    assert!(hold.created_ms > 0, "{hold:?}");
    hold.created_ms -= 2 * 3600 * 1000;
    h.own.put(&hold_key, hold.to_json().into()).await.unwrap();
    write_values(&mut h.client, 0..10, 3, 200).await;
    checkpoint(&h.sidecar);
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.own.exists(&hold_key).await.unwrap()
        || first_existing(&h.own, &only_held).await.is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the old hold of a savepoint without a manifest was kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn retention_keeps_the_checkpoint_files_a_savepoint_references_until_its_copies_are_made() {
    let s3 = S3Server::s3s_fs("stator");
    let url = "s3://stator/jobs/held";
    let mut h = held_savepoint(&s3, url, "held").await;
    // The savepoint's copies are not made yet: retention keeps what it references.
    let only_held = checkpoint_past_the_held_files(&mut h, &s3, url).await;
    for o in &only_held {
        assert!(
            h.own.exists(o).await.unwrap(),
            "{o} was collected while a savepoint needs it"
        );
    }
    let HeldSavepoint {
        _dir,
        mut sidecar,
        client,
        own,
        sp,
        savepoint_url,
        ..
    } = h;
    drop(client);

    // The savepoint restores as it is (from its checkpoint's files).
    let fresh = tempfile::tempdir().unwrap();
    let mut restore_args = base_args(fresh.path(), "s3://stator/jobs/held-restore");
    restore_args.extend(s3.sidecar_args(None));
    restore_args.extend(["--restore-from".into(), savepoint_url.clone()]);
    let restored = start(fresh.path(), &restore_args);
    let mut c = Client::connect(&restored.socket).await.unwrap();
    assert_values(&mut c, 0..1000, Some(0), 200).await;
    drop(c);
    drop(restored);

    // Once the copies are made, the hold is released and the next retention collects them.
    let scratch = tempfile::tempdir().unwrap();
    stator_storage::complete_savepoint(&sp, &s3.options(), 4, scratch.path())
        .await
        .unwrap();
    assert!(own.list("holds/").await.unwrap().is_empty());
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    write_values(&mut client, 0..10, 3, 200).await;
    checkpoint(&sidecar);
    // Retention runs just after the checkpoint is confirmed.
    let deadline = Instant::now() + Duration::from_secs(30);
    for o in &only_held {
        while own.exists(o).await.unwrap() {
            assert!(
                Instant::now() < deadline,
                "{o} is collected once no hold names it"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(client);
    sidecar.kill9();
    let fresh = tempfile::tempdir().unwrap();
    let mut restore_args = base_args(fresh.path(), "s3://stator/jobs/held-restore-2");
    restore_args.extend(s3.sidecar_args(None));
    restore_args.extend(["--restore-from".into(), savepoint_url.clone()]);
    let restored = start(fresh.path(), &restore_args);
    let mut c = Client::connect(&restored.socket).await.unwrap();
    assert_values(&mut c, 0..1000, Some(0), 200).await;
}

#[tokio::test]
async fn local_recovery_does_not_reuse_a_file_whose_bytes_changed_on_the_volume() {
    let s3 = S3Server::s3s_fs("stator");
    let url = "s3://stator/jobs/changed";
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path(), url);
    args.extend(s3.sidecar_args(None));
    let mut sidecar = start(dir.path(), &args);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    // More WAL than a checkpoint copies: the checkpoint flushes it into SST files.
    write_values(&mut client, 0..20_000, 0, 1000).await;
    checkpoint(&sidecar);
    drop(client);
    sidecar.kill9();
    // Bit rot (or a stray writer) in the middle of an SST, its size unchanged. The checkpoint's
    // local copy is a hard link of it, so neither may be reused.
    let sst = std::fs::read_dir(sidecar.data_dir.join("db"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("an SST file");
    let mut bytes = std::fs::read(&sst).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&sst, &bytes).unwrap();
    sidecar.spawn();
    sidecar.wait_ready();
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    assert_values(&mut client, 0..20_000, Some(0), 1000).await;
    assert_eq!(
        sidecar.metric("stator_sidecar_restores_total{source=\"local\"}"),
        0.0,
        "the changed file was downloaded again, not reused"
    );
    assert!(sidecar.metric("stator_sidecar_restore_downloaded_bytes_total") > 0.0);
}

/// Polls a standby sidecar until it reports `state`.
fn wait_standby(sidecar: &Sidecar, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The admin endpoint may not listen yet.
        let answer = common::http_get(sidecar.admin, "/v1/standby", Some(common::TOKEN));
        if let Ok((200, body)) = &answer
            && json(body)["state"] == state
        {
            return;
        }
        assert!(Instant::now() < deadline, "not {state} in 60 s: {answer:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_warm_standby_fetches_the_bulk_while_the_old_replica_serves_and_then_only_the_delta() {
    let s3 = S3Server::s3s_fs("stator");
    let old_lineage = "s3://stator/jobs/hand/l1";
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path(), old_lineage);
    args.extend(s3.sidecar_args(None));
    let old = start(dir.path(), &args);
    let mut client = Client::connect(&old.socket).await.unwrap();
    // More than a checkpoint keeps as WAL (16 MiB), so the checkpoint holds the bulk in files
    // the savepoint shares.
    write_values(&mut client, 0..20_000, 0, 1000).await;
    checkpoint(&old);

    // The new version's sidecar warms up from the old lineage while the old one serves.
    let savepoint_url = "s3://stator/jobs/hand/savepoints/upgrade-2";
    let fresh = tempfile::tempdir().unwrap();
    let mut args = base_args(fresh.path(), "s3://stator/jobs/hand/l2");
    args.extend(s3.sidecar_args(None));
    args.extend([
        "--restore-from".into(),
        savepoint_url.into(),
        "--warm-from".into(),
        old_lineage.into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut standby = Sidecar::new_in(fresh.path(), &args);
    standby.spawn();
    wait_standby(&standby, "warm");
    let warmed = standby.metric("stator_sidecar_warm_downloaded_bytes_total");
    assert!(warmed > 15_000_000.0, "the bulk was fetched: {warmed}");
    assert_eq!(
        common::http_get(standby.admin, "/readyz", None).unwrap().0,
        503,
        "a standby does not serve"
    );
    assert!(!standby.socket.exists(), "no socket before the promotion");

    // The old replica goes on writing, then stops with its savepoint.
    write_values(&mut client, 0..200, 1, 1000).await;
    let mut batch = Batch::new();
    batch.value_put("v", "last", "before the fence");
    client.write(batch).await.unwrap();
    let done = savepoint(&old, savepoint_url, true);
    assert_eq!(done["stop"], true);
    drop(client);

    let (code, body) = standby.post(
        "/v1/promote",
        &serde_json::json!({"restoreFrom": "s3://stator/jobs/hand/savepoints/other"}).to_string(),
    );
    assert_eq!(code, 409, "a promotion to another point is refused: {body}");
    let promote = serde_json::json!({"restoreFrom": savepoint_url}).to_string();
    let (code, body) = standby.post("/v1/promote", &promote);
    assert_eq!(code, 202, "{body}");
    standby.wait_ready();
    let delta = standby.metric("stator_sidecar_restore_downloaded_bytes_total");
    assert!(
        delta < warmed / 10.0,
        "after the promotion only the delta is downloaded: {delta} bytes after {warmed} while warming"
    );
    let mut client = Client::connect(&standby.socket).await.unwrap();
    assert_values(&mut client, 0..200, Some(1), 1000).await;
    assert_values(&mut client, 200..20_000, Some(0), 1000).await;
    assert_eq!(
        client.get("v", "last").await.unwrap().as_deref(),
        Some(b"before the fence".as_slice())
    );
    drop(client);
    let (code, _) = standby.post("/v1/promote", &promote);
    assert_eq!(code, 202, "a promotion is idempotent");

    // Restarted after its promotion, it serves again without waiting for another.
    standby.terminate();
    standby.spawn();
    standby.wait_ready();
    let mut client = Client::connect(&standby.socket).await.unwrap();
    assert_values(&mut client, 0..200, Some(1), 1000).await;
}

#[tokio::test]
async fn a_standby_with_nothing_to_warm_up_from_waits_and_restores_everything_once_promoted() {
    let s3 = S3Server::s3s_fs("stator");
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(dir.path(), "s3://stator/jobs/cold/l1");
    args.extend(s3.sidecar_args(None));
    let old = start(dir.path(), &args);
    let mut client = Client::connect(&old.socket).await.unwrap();
    write_values(&mut client, 0..500, 0, 100).await;
    let savepoint_url = "s3://stator/jobs/cold/savepoints/upgrade-2";
    // The lineage it warms from has no checkpoint yet (its replicas only just started).
    let fresh = tempfile::tempdir().unwrap();
    let mut args = base_args(fresh.path(), "s3://stator/jobs/cold/l2");
    args.extend(s3.sidecar_args(None));
    args.extend([
        "--restore-from".into(),
        savepoint_url.into(),
        "--warm-from".into(),
        "s3://stator/jobs/cold/l1".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut standby = Sidecar::new_in(fresh.path(), &args);
    standby.spawn();
    wait_standby(&standby, "warm");
    savepoint(&old, savepoint_url, true);
    drop(client);
    let promote = serde_json::json!({"restoreFrom": savepoint_url}).to_string();
    assert_eq!(standby.post("/v1/promote", &promote).0, 202);
    standby.wait_ready();
    let mut client = Client::connect(&standby.socket).await.unwrap();
    assert_values(&mut client, 0..500, Some(0), 100).await;
}
