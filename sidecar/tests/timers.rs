//! Timers on real sidecar processes: fired exactly once across crashes, checkpoints and
//! rescales, each in the replica that owns its key; processing time without busy polling.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Sidecar;
use serde_json::Value;
use stator_client::{Batch, Client, ErrorCode, TimeDomain, proto};
use stator_core::keygroup::{owner, range_for_replica};

const M: u32 = 128;
/// Timers registered: key `k{i}` gets one event timer at time `i + 1`.
const N: u32 = 600;
const FIRED: &str = "fired";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn args(dir: &Path, location: &str, replica: u32, parallelism: u32) -> Vec<String> {
    [
        "--state-location",
        location,
        "--checkpoint-interval-secs",
        "0",
        "--admin-token-file",
        &common::token_file(dir),
        "--replica-index",
        &replica.to_string(),
        "--parallelism",
        &parallelism.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start(dir: &Path, args: &[String]) -> Sidecar {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Sidecar::start_in(dir, &args)
}

fn checkpoint(sidecar: &Sidecar) {
    let (code, body) = sidecar.post("/v1/checkpoints", "");
    assert_eq!(code, 202, "{body}");
    let id = json(&body)["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while json(&sidecar.get("/v1/checkpoints").1)["latest"]["id"]
        .as_u64()
        .is_none_or(|l| l < id)
    {
        assert!(Instant::now() < deadline, "checkpoint {id} not confirmed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop_with_savepoint(sidecar: &Sidecar, location: &str) {
    let body = serde_json::json!({"location": location, "stop": true}).to_string();
    let (code, body) = sidecar.post("/v1/savepoints", &body);
    assert_eq!(code, 202, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = json(&sidecar.get(&format!("/v1/savepoints/{id}")).1);
        match v["state"].as_str().unwrap() {
            "complete" => return,
            "pending" => {}
            other => panic!("savepoint {other}: {v}"),
        }
        assert!(Instant::now() < deadline, "savepoint not done in 90 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inspect(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stator-inspect"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

async fn connect_all(sidecars: &[Sidecar]) -> Vec<Client> {
    let mut clients = Vec::new();
    for s in sidecars {
        let mut c = Client::connect(&s.socket).await.unwrap();
        c.declare(
            vec![stator_client::state(FIRED, proto::StateKind::List, 0)],
            vec![],
        )
        .await
        .unwrap();
        clients.push(c);
    }
    clients
}

async fn advance(client: &mut Client, watermark: u64) {
    let mut batch = Batch::new();
    batch.watermark_advance(watermark);
    client.write(batch).await.unwrap();
}

/// The handler: fires every due event timer of this replica, a page at a time, each in one
/// batch with the state it writes (`fired[key] += "name@time@watermark"`). Returns how many.
async fn fire(client: &mut Client) -> usize {
    let hello = client.hello().clone();
    let (replica, p) = (hello.replica_index, hello.parallelism);
    let range = hello.key_group_start..=hello.key_group_end;
    let mut fired = 0;
    loop {
        let page = client.timers_due(TimeDomain::Event, 50).await.unwrap();
        let watermark = page.up_to.expect("timers are due only under a watermark");
        let mut batch = Batch::new();
        for t in &page.timers {
            assert!(t.time <= watermark, "{t:?} is not due at {watermark}");
            assert!(range.contains(&t.key_group), "{t:?} outside {range:?}");
            assert_eq!(owner(&t.key, p, M), replica, "{t:?} fires in its owner");
            let record = format!(
                "{}@{}@{watermark}",
                String::from_utf8_lossy(&t.name),
                t.time
            );
            batch
                .list_append(FIRED, t.key.clone(), [record])
                .timer_fired(t);
        }
        if !batch.is_empty() {
            client.write(batch).await.unwrap();
        }
        fired += page.timers.len();
        if !page.has_more {
            return fired;
        }
    }
}

fn key(i: u32) -> String {
    format!("k{i}")
}

/// The watermarks a new layout must start from: for each new replica, the lowest of the old
/// replicas' whose key groups it takes.
fn expected_watermarks(old: &[u64], new_parallelism: u32) -> Vec<u64> {
    let old_p = old.len() as u32;
    (0..new_parallelism)
        .map(|j| {
            let mine = range_for_replica(j, new_parallelism, M);
            (0..old_p)
                .filter(|&i| range_for_replica(i, old_p, M).intersect(&mine).is_some())
                .map(|i| old[i as usize])
                .min()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn timers_fire_exactly_once_in_their_owner_across_a_checkpoint_restore_and_rescales_2_3_2() {
    let store = tempfile::tempdir().unwrap();
    let location = format!("file://{}/job", store.path().display());

    // 2 replicas: every key's timer is registered in its owner.
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let two: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(j, d)| start(d.path(), &args(d.path(), &location, j as u32, 2)))
        .collect();
    let mut clients = connect_all(&two).await;
    let mut batches = [Batch::new(), Batch::new()];
    for i in 0..N {
        let k = key(i);
        let b = &mut batches[owner(k.as_bytes(), 2, M) as usize];
        b.timer_register(TimeDomain::Event, k.clone(), "t", u64::from(i) + 1);
        // The same timer twice is one timer.
        b.timer_register(TimeDomain::Event, k, "t", u64::from(i) + 1);
    }
    for (c, b) in clients.iter_mut().zip(batches) {
        c.write(b).await.unwrap();
    }
    // Replica 0 has seen events up to 200, replica 1 up to 150.
    let watermarks = [200u64, 150];
    let mut fired_before = 0;
    for (c, w) in clients.iter_mut().zip(watermarks) {
        advance(c, w).await;
        fired_before += fire(c).await;
    }
    for s in &two {
        checkpoint(s);
    }
    // Fired after the checkpoint, then lost in a crash: those timers must fire again.
    advance(&mut clients[0], 260).await;
    let lost = fire(&mut clients[0]).await;
    assert!(lost > 0, "some timers fire after the checkpoint");
    drop(clients);
    for mut s in two {
        s.kill9();
    }

    // 2 -> 3, from the checkpoints.
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let three: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(j, d)| {
            let mut a = args(d.path(), &location, j as u32, 3);
            a.extend(["--restore-from".to_owned(), location.clone()]);
            start(d.path(), &a)
        })
        .collect();
    let mut clients = connect_all(&three).await;
    let want = expected_watermarks(&watermarks, 3);
    for (c, w) in clients.iter_mut().zip(&want) {
        let status = c.timer_status().await.unwrap();
        assert_eq!(
            status.watermark,
            Some(*w),
            "replica {}: the lowest watermark of its sources",
            c.hello().replica_index
        );
    }
    assert_eq!(want, [200, 150, 150]);
    let mut fired_in_three = 0;
    for c in clients.iter_mut() {
        // What the restored watermark makes due was fired before the checkpoint.
        assert_eq!(fire(c).await, 0, "nothing fires twice after the restore");
        advance(c, 400).await;
        fired_in_three += fire(c).await;
    }
    drop(clients);
    let p2 = format!("{location}/savepoints/back-to-2");
    for s in &three {
        stop_with_savepoint(s, &p2);
    }
    drop(three);
    let dump = inspect(&["dump", "--timers", &p2]);
    let lines: Vec<Value> = dump.lines().map(json).collect();
    let watermark_lines: Vec<_> = lines
        .iter()
        .filter(|l| l.get("watermark").is_some())
        .collect();
    assert_eq!(watermark_lines.len(), 3, "{dump}");
    assert!(
        watermark_lines.iter().all(|l| l["watermark"] == 400),
        "{dump}"
    );
    let pending: Vec<_> = lines.iter().filter(|l| l.get("timer").is_some()).collect();
    assert_eq!(
        pending.len(),
        (N - 400) as usize,
        "timers after 400 are pending"
    );
    for t in &pending {
        assert_eq!(t["timer"], "event");
        let k = t["key"].as_str().unwrap();
        assert_eq!(
            t["replica"].as_u64().unwrap() as u32,
            owner(k.as_bytes(), 3, M)
        );
        assert_eq!(
            t["time"].as_u64().unwrap(),
            k[1..].parse::<u64>().unwrap() + 1
        );
    }

    // 3 -> 2, from the savepoint, and the end of input: every remaining timer fires.
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let two: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(j, d)| {
            let mut a = args(d.path(), &location, j as u32, 2);
            a.extend(["--restore-from".to_owned(), p2.clone()]);
            start(d.path(), &a)
        })
        .collect();
    let mut clients = connect_all(&two).await;
    let mut fired_at_end = 0;
    for c in clients.iter_mut() {
        assert_eq!(c.timer_status().await.unwrap().watermark, Some(400));
        advance(c, u64::MAX).await;
        fired_at_end += fire(c).await;
        let status = c.timer_status().await.unwrap();
        assert_eq!(status.next_event_time, None, "no timer is left");
    }
    assert_eq!(fired_at_end, (N - 400) as usize);
    assert_eq!(fired_before + fired_in_three + fired_at_end, N as usize);

    // Every key's timer fired exactly once, at or after its time, and in its owner.
    let mut seen = BTreeMap::new();
    for i in 0..N {
        let k = key(i);
        let c = &mut clients[owner(k.as_bytes(), 2, M) as usize];
        let fired = c.list_get(FIRED, k.clone()).await.unwrap();
        assert_eq!(fired.len(), 1, "{k}: fired {fired:?}");
        let record = String::from_utf8(fired[0].to_vec()).unwrap();
        let parts: Vec<&str> = record.split('@').collect();
        assert_eq!(parts[..2], ["t", &(i + 1).to_string()], "{k}: {record}");
        assert!(
            parts[2].parse::<u64>().unwrap() > u64::from(i),
            "{k}: fired before its time"
        );
        seen.insert(k, record);
    }
    assert_eq!(seen.len(), N as usize);
}

#[tokio::test]
async fn a_crash_before_the_handlers_batch_fires_again_and_a_committed_one_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_in(dir.path(), &["--state", "out:list"]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let mut batch = Batch::new();
    batch
        .timer_register(TimeDomain::Event, "a", "t", 1)
        .timer_register(TimeDomain::Event, "b", "t", 2)
        .timer_register(TimeDomain::Processing, "c", "t", 1000)
        .watermark_advance(10);
    client.write(batch).await.unwrap();
    let due = client.timers_due(TimeDomain::Event, 0).await.unwrap();
    assert_eq!(due.timers.len(), 2);
    // The handler of "a" commits; the app dies before "b"'s batch (and the sidecar with it).
    let mut batch = Batch::new();
    batch
        .list_append("out", "a", ["a fired"])
        .timer_fired(&due.timers[0]);
    client.write(batch).await.unwrap();
    drop(client);
    sidecar.kill9();
    sidecar.spawn();
    sidecar.wait_ready();
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let due = client.timers_due(TimeDomain::Event, 0).await.unwrap();
    let keys: Vec<_> = due.timers.iter().map(|t| t.key.clone()).collect();
    assert_eq!(keys, ["b"], "b fires again, a never");
    assert_eq!(due.up_to, Some(10), "the watermark survived the crash");
    assert_eq!(client.list_get("out", "a").await.unwrap(), ["a fired"]);
    let processing = client.timers_due(TimeDomain::Processing, 0).await.unwrap();
    assert_eq!(processing.timers.len(), 1, "processing timers survive too");
}

#[tokio::test]
async fn waiting_for_a_processing_timer_sleeps_until_it_is_due_instead_of_polling() {
    let sidecar = Sidecar::start(&[]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let now = client.timer_status().await.unwrap().now_ms;
    let mut batch = Batch::new();
    batch.timer_register(TimeDomain::Processing, "k", "soon", now + 400);
    client.write(batch).await.unwrap();
    let polls = || sidecar.metric("stator_sidecar_operations_total{op=\"timers_due\"}");
    let before = polls();
    let started = Instant::now();
    let page = client
        .wait_processing_timers(0, Duration::from_secs(10))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(page.timers.len(), 1);
    assert_eq!(page.timers[0].time, now + 400);
    assert!(
        page.up_to.unwrap() >= now + 400,
        "due by the sidecar's clock"
    );
    assert!(
        waited < Duration::from_secs(3),
        "woke when due, took {waited:?}"
    );
    assert!(
        polls() - before <= 3.0,
        "asked {} times while waiting",
        polls() - before
    );
    // Nothing due: waits out the deadline, asking once or twice.
    let mut batch = Batch::new();
    batch.timer_fired(&page.timers[0]);
    client.write(batch).await.unwrap();
    let before = polls();
    let page = client
        .wait_processing_timers(0, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(page.timers.is_empty() && page.next_time.is_none());
    assert!(polls() - before <= 2.0);
}

#[tokio::test]
async fn a_timer_without_a_domain_is_refused_and_changes_nothing() {
    let sidecar = Sidecar::start(&[]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let mut batch = Batch::new();
    batch
        .timer_register(TimeDomain::Processing, "k", "x", 1)
        .timer_register(TimeDomain::Unspecified, "k", "y", 1);
    let err = client.write(batch).await.unwrap_err();
    let Some(ErrorCode::InvalidArgument) = err.code() else {
        panic!("{err:?}");
    };
    let stator_client::Error::Server(e) = &err else {
        unreachable!()
    };
    assert_eq!(e.op_index, 1);
    assert!(e.message.contains("domain"), "{}", e.message);
    let err = client
        .timers_due(TimeDomain::Unspecified, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
    let page = client.timers_due(TimeDomain::Processing, 0).await.unwrap();
    assert!(
        page.timers.is_empty(),
        "the failed batch registered nothing"
    );
}
