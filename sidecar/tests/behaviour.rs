//! Runs the language-neutral behaviour scenarios (testdata/behaviour.json) through the Rust client
//! against a real sidecar. The Python client runs the same file.

mod common;

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use stator_client::{Batch, Client, Error, ErrorCode, TimeDomain, TimerPage, proto};

fn bytes(v: &Value) -> Bytes {
    match v {
        Value::String(s) => Bytes::from(s.clone().into_bytes()),
        Value::Object(o) => {
            let s = o["repeat"].as_str().unwrap();
            Bytes::from(s.repeat(o["times"].as_u64().unwrap() as usize).into_bytes())
        }
        other => panic!("not a byte string: {other}"),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn opt(v: &Option<Bytes>) -> Value {
    v.as_ref()
        .map(|b| Value::String(String::from_utf8(b.to_vec()).unwrap()))
        .unwrap_or(Value::Null)
}

fn strings(v: &[Bytes]) -> Value {
    Value::Array(
        v.iter()
            .map(|b| Value::String(String::from_utf8(b.to_vec()).unwrap()))
            .collect(),
    )
}

fn kind(v: &Value) -> proto::StateKind {
    match s(v) {
        "value" => proto::StateKind::Value,
        "list" => proto::StateKind::List,
        "map" => proto::StateKind::Map,
        other => panic!("kind {other}"),
    }
}

fn domain(v: &Value) -> TimeDomain {
    match s(v) {
        "event" => TimeDomain::Event,
        "processing" => TimeDomain::Processing,
        other => panic!("time domain {other}"),
    }
}

fn text(b: &Bytes) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// A timers_due answer in the JSON's shape; processing time's `up_to` is the clock, not compared.
fn timer_page(page: &TimerPage, d: TimeDomain) -> Value {
    let mut out = serde_json::json!({
        "timers": page.timers.iter().map(|t| {
            assert_eq!(t.domain, d, "an answer holds only the domain asked for");
            serde_json::json!({
                "key": text(&t.key), "name": text(&t.name), "time": t.time, "key_group": t.key_group,
            })
        }).collect::<Vec<_>>(),
        "has_more": page.has_more,
        "next_time": page.next_time,
    });
    if d == TimeDomain::Event {
        out["up_to"] = page.up_to.into();
    }
    out
}

fn add_op(batch: &mut Batch, op: &Value) {
    let (name, f) = op.as_object().unwrap().iter().next().unwrap();
    let values = || {
        f["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(bytes)
            .collect::<Vec<_>>()
    };
    match name.as_str() {
        "value_put" => batch.value_put(s(&f["state"]), bytes(&f["key"]), bytes(&f["value"])),
        "value_clear" => batch.value_clear(s(&f["state"]), bytes(&f["key"])),
        "list_append" => batch.list_append(s(&f["state"]), bytes(&f["key"]), values()),
        "list_set" => batch.list_set(s(&f["state"]), bytes(&f["key"]), values()),
        "list_clear" => batch.list_clear(s(&f["state"]), bytes(&f["key"])),
        "map_put" => batch.map_put(
            s(&f["state"]),
            bytes(&f["key"]),
            bytes(&f["map_key"]),
            bytes(&f["value"]),
        ),
        "map_remove" => batch.map_remove(s(&f["state"]), bytes(&f["key"]), bytes(&f["map_key"])),
        "map_clear" => batch.map_clear(s(&f["state"]), bytes(&f["key"])),
        "operator_state_set" => batch.operator_state_set(s(&f["name"]), values()),
        "timer_register" => batch.timer_register(
            domain(&f["domain"]),
            bytes(&f["key"]),
            bytes(&f["name"]),
            f["time"].as_u64().unwrap(),
        ),
        "timer_delete" => batch.timer_delete(
            domain(&f["domain"]),
            bytes(&f["key"]),
            bytes(&f["name"]),
            f["time"].as_u64().unwrap(),
        ),
        "watermark_advance" => batch.watermark_advance(f["watermark"].as_u64().unwrap()),
        other => panic!("unknown write op {other}"),
    };
}

/// Runs one step; returns its result as JSON for comparison with `expect`.
async fn run_step(client: &mut Client, step: &Value) -> Result<Value, Error> {
    let (name, args) = step
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| !k.starts_with("expect"))
        .unwrap();
    let a = args;
    Ok(match name.as_str() {
        "declare" => {
            let states = a
                .get("states")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ops = a
                .get("operator_states")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            client
                .declare(
                    states
                        .iter()
                        .map(|d| {
                            stator_client::state(
                                s(&d["name"]),
                                kind(&d["kind"]),
                                d["ttl_ms"].as_u64().unwrap_or(0),
                            )
                        })
                        .collect(),
                    ops.iter()
                        .map(|d| {
                            let r = match s(&d["redistribution"]) {
                                "split" => proto::Redistribution::Split,
                                _ => proto::Redistribution::Union,
                            };
                            stator_client::operator_state(s(&d["name"]), r)
                        })
                        .collect(),
                )
                .await?;
            Value::Null
        }
        "write" => {
            let mut batch = Batch::new();
            if let Some(rep) = a.get("repeat_op") {
                for _ in 0..a["times"].as_u64().unwrap() {
                    add_op(&mut batch, rep);
                }
            } else {
                for op in a.as_array().unwrap() {
                    add_op(&mut batch, op);
                }
            }
            Value::from(client.write(batch).await?)
        }
        "get" => opt(&client.get(s(&a["state"]), bytes(&a["key"])).await?),
        "multi_get" => {
            let keys: Vec<Bytes> = a["keys"].as_array().unwrap().iter().map(bytes).collect();
            Value::Array(
                client
                    .multi_get(s(&a["state"]), keys)
                    .await?
                    .iter()
                    .map(opt)
                    .collect(),
            )
        }
        "list_get" => strings(&client.list_get(s(&a["state"]), bytes(&a["key"])).await?),
        "list_sizes" => Value::Array(
            client
                .list_get(s(&a["state"]), bytes(&a["key"]))
                .await?
                .iter()
                .map(|v| Value::from(v.len()))
                .collect(),
        ),
        "list_page" => {
            let n = |f: &str| a[f].as_u64().unwrap_or(0) as u32;
            let page = client
                .list_page(s(&a["state"]), bytes(&a["key"]), n("offset"), n("limit"))
                .await?;
            serde_json::json!({
                "values": strings(&page.values),
                "has_more": page.has_more,
                "next_offset": page.next_offset,
            })
        }
        "map_get" => opt(&client
            .map_get(s(&a["state"]), bytes(&a["key"]), bytes(&a["map_key"]))
            .await?),
        "map_contains" => Value::Bool(
            client
                .map_contains(s(&a["state"]), bytes(&a["key"]), bytes(&a["map_key"]))
                .await?,
        ),
        "map_iter" => {
            let page = client
                .map_page(
                    s(&a["state"]),
                    bytes(&a["key"]),
                    bytes(&a["after"]),
                    a["start_inclusive"].as_bool().unwrap(),
                    a["limit"].as_u64().unwrap() as u32,
                )
                .await?;
            serde_json::json!({
                "entries": page.entries.iter().map(|(k, v)| vec![
                    String::from_utf8(k.to_vec()).unwrap(), String::from_utf8(v.to_vec()).unwrap()
                ]).collect::<Vec<_>>(),
                "has_more": page.has_more,
                "next_after": String::from_utf8(page.next_after.to_vec()).unwrap(),
            })
        }
        "operator_state_get" => strings(&client.operator_state_get(s(&a["name"])).await?),
        "timers_due" => {
            let d = domain(&a["domain"]);
            let page = client
                .timers_due(d, a["limit"].as_u64().unwrap() as u32)
                .await?;
            timer_page(&page, d)
        }
        "timer_status" => {
            let st = client.timer_status().await?;
            serde_json::json!({
                "watermark": st.watermark,
                "next_event_time": st.next_event_time,
                "next_processing_time": st.next_processing_time,
            })
        }
        "sleep_ms" => {
            tokio::time::sleep(Duration::from_millis(a.as_u64().unwrap())).await;
            Value::Null
        }
        other => panic!("unknown step {other}"),
    })
}

#[tokio::test]
async fn rust_client_passes_the_behaviour_suite() {
    let doc: Value = serde_json::from_str(include_str!("../../testdata/behaviour.json")).unwrap();
    let cfg = &doc["sidecar"];
    let sidecar = common::Sidecar::start(&[
        "--replica-index",
        &cfg["replica_index"].to_string(),
        "--parallelism",
        &cfg["parallelism"].to_string(),
        "--max-parallelism",
        &cfg["max_parallelism"].to_string(),
    ]);
    let mut client = Client::connect(&sidecar.socket).await.unwrap();
    let scenarios = doc["scenarios"].as_array().unwrap();
    assert!(scenarios.len() >= 10);
    for scenario in scenarios {
        let name = s(&scenario["name"]);
        for (i, step) in scenario["steps"].as_array().unwrap().iter().enumerate() {
            let got = run_step(&mut client, step).await;
            let at = format!("{name}, step {i}: {step}");
            match (step.get("expect_error"), got) {
                (Some(want), Err(Error::Server(e))) => {
                    assert_eq!(e.code.as_str_name(), s(&want["code"]), "{at}: {e}");
                    if let Some(owner) = want.get("owner") {
                        assert_eq!(u64::from(e.owner), owner.as_u64().unwrap(), "{at}");
                    }
                    if let Some(index) = want.get("op_index") {
                        assert_eq!(u64::from(e.op_index), index.as_u64().unwrap(), "{at}");
                    }
                    assert!(!e.message.is_empty(), "{at}: errors carry a message");
                }
                (Some(want), other) => panic!("{at}: expected error {want}, got {other:?}"),
                (None, Err(e)) => panic!("{at}: unexpected error {e:?}"),
                (None, Ok(value)) => {
                    if let Some(want) = step.get("expect") {
                        assert_eq!(&value, want, "{at}");
                    }
                }
            }
        }
    }
    // The connection is still usable after every error above.
    client.ping().await.unwrap();
    assert_eq!(ErrorCode::WrongKeyGroup.as_str_name(), "WRONG_KEY_GROUP");
}
