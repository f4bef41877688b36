//! Helpers for checkpoint, savepoint and restore tests: flags, triggering and waiting, and
//! writing and checking values that differ per key and round.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use stator_client::{Batch, Client};

use super::Sidecar;

pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Flags for a sidecar with state `v` (value) checkpointing to `location` only when asked.
pub fn args(dir: &Path, location: &str, extra: &[&str]) -> Vec<String> {
    let token = super::token_file(dir);
    let mut out: Vec<String> = [
        "--state",
        "v:value",
        "--state-location",
        location,
        "--checkpoint-interval-secs",
        "0",
        "--admin-token-file",
        &token,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    out.extend(extra.iter().map(|s| s.to_string()));
    out
}

pub fn start(dir: &Path, args: &[String]) -> Sidecar {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Sidecar::start_in(dir, &args)
}

/// A sidecar under `dir` whose log goes to `dir/sidecar.log`, started.
pub fn start_logged(dir: &Path, args: &[String]) -> Sidecar {
    let mut s = prepare(dir, args);
    s.log = Some(dir.join("sidecar.log"));
    s.spawn();
    s.wait_ready();
    s
}

pub fn prepare(dir: &Path, args: &[String]) -> Sidecar {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Sidecar::new_in(dir, &args)
}

/// Triggers a checkpoint and waits until it is confirmed; returns its id.
pub fn checkpoint(sidecar: &Sidecar) -> u64 {
    let (code, body) = sidecar.post("/v1/checkpoints", "");
    assert_eq!(code, 202, "{body}");
    let id = json(&body)["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, body) = sidecar.get("/v1/checkpoints");
        assert_eq!(code, 200, "{body}");
        if json(&body)["latest"]["id"]
            .as_u64()
            .is_some_and(|l| l >= id)
        {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint {id} not confirmed in 90 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests a savepoint; returns the HTTP status and body.
pub fn request_savepoint(
    sidecar: &Sidecar,
    location: &str,
    operation: Option<&str>,
) -> (u16, String) {
    let mut body = serde_json::json!({"location": location, "stop": false});
    if let Some(op) = operation {
        body["operationId"] = op.into();
    }
    sidecar.post("/v1/savepoints", &body.to_string())
}

/// Takes a savepoint for `operation` and waits until it is complete.
pub fn savepoint(sidecar: &Sidecar, location: &str, operation: Option<&str>) -> Value {
    let (code, body) = request_savepoint(sidecar, location, operation);
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
pub fn value(key: u32, round: u32, len: usize) -> String {
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

pub async fn write_values(client: &mut Client, keys: std::ops::Range<u32>, round: u32, len: usize) {
    let keys: Vec<u32> = keys.collect();
    for chunk in keys.chunks(500) {
        let mut batch = Batch::new();
        for k in chunk {
            batch.value_put("v", format!("k{k}"), value(*k, round, len));
        }
        client.write(batch).await.unwrap();
    }
}

/// Asserts every key in `keys` holds its value of `round`.
pub async fn assert_values(
    client: &mut Client,
    keys: std::ops::Range<u32>,
    round: u32,
    len: usize,
) {
    let keys: Vec<u32> = keys.collect();
    for chunk in keys.chunks(500) {
        let got = client
            .multi_get("v", chunk.iter().map(|k| format!("k{k}")))
            .await
            .unwrap();
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(
                v.as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned()),
                Some(value(*k, round, len)),
                "key k{k}"
            );
        }
    }
}

/// Copies the directory tree `from` to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
