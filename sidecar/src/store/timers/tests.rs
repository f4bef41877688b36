//! The timer family on a real RocksDB store: what the in-memory twin of the index cannot show.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use stator_core::keygroup::{Layout, key_group};

use super::*;
use crate::store::{Placement, RocksOptions, WriteOp};

fn open(dir: &Path, replica: u32, parallelism: u32) -> Arc<Store> {
    let placement = Placement::new(Layout::new(parallelism, 128).unwrap(), replica).unwrap();
    Store::open(dir, placement, &RocksOptions::default(), &[], &[]).unwrap()
}

fn register(domain: Domain, key: &str, time: u64) -> WriteOp {
    WriteOp::TimerRegister {
        domain,
        key: Bytes::from(key.to_owned()),
        name: Bytes::from_static(b"t"),
        time,
    }
}

fn delete(t: &Timer) -> WriteOp {
    WriteOp::TimerDelete {
        domain: t.domain,
        key: Bytes::from(t.key.clone()),
        name: Bytes::from(t.name.clone()),
        time: t.time,
    }
}

fn advance(watermark: u64) -> WriteOp {
    WriteOp::WatermarkAdvance { watermark }
}

/// Keys of key group `group` (maxParallelism 128).
fn keys_in_group(group: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| key_group(k.as_bytes(), 128) == group)
        .take(n)
        .collect()
}

/// Keys owned by `replica` of `parallelism`.
fn owned_keys(replica: u32, parallelism: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| stator_core::keygroup::owner(k.as_bytes(), parallelism, 128) == replica)
        .take(n)
        .collect()
}

/// Fires every due timer of `domain`, page by page; returns them in firing order.
fn drain(store: &Store, domain: Domain, limit: u32) -> Vec<Timer> {
    let mut fired = Vec::new();
    loop {
        let page = store.timers_due(domain, limit).unwrap();
        let ops: Vec<_> = page.timers.iter().map(delete).collect();
        store.write(&ops).unwrap();
        fired.extend(page.timers);
        if !page.has_more {
            return fired;
        }
    }
}

#[test]
fn timers_survive_a_reopen_and_the_index_is_rebuilt_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let keys = owned_keys(0, 1, 50);
    {
        let store = open(dir.path(), 0, 1);
        let mut ops: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| register(Domain::Event, k, 1000 - i as u64))
            .collect();
        ops.push(advance(975));
        store.write(&ops).unwrap();
        store.flush().unwrap();
    }
    let store = open(dir.path(), 0, 1);
    assert_eq!(store.watermark().unwrap(), Some(975));
    let fired = drain(&store, Domain::Event, 7);
    let times: Vec<u64> = fired.iter().map(|t| t.time).collect();
    assert_eq!(
        times,
        (951..=975).collect::<Vec<_>>(),
        "due ones, in time order"
    );
    let status = store.timer_status().unwrap();
    assert_eq!(status.next_event_time, Some(976));
    assert_eq!(status.next_processing_time, None);
}

#[test]
fn a_poll_racing_registrations_never_loses_a_timer() {
    // Group 0 holds a timer that is not due yet, every other group a far one: a poll that knows
    // the next time (group 0's) stops before the far-bounded groups. Each round registers one
    // due timer per group while polls run and rewrite bounds; a poll that raised a group's
    // bound past a timer committed meanwhile would hide it for good, since no later
    // registration in that group lowers the bound again.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 0, 1);
    let keys: Vec<Vec<String>> = (0..128).map(|g| keys_in_group(g, 21)).collect();
    let mut setup = vec![register(Domain::Event, &keys[0][0], 50), advance(10)];
    setup.extend((1..128).map(|g| register(Domain::Event, &keys[g][0], u64::MAX)));
    store.write(&setup).unwrap();
    for round in 1..=20 {
        let writer = {
            let (store, keys) = (store.clone(), keys.clone());
            std::thread::spawn(move || {
                for group_keys in &keys[1..] {
                    store
                        .write(&[register(Domain::Event, &group_keys[round], 5)])
                        .unwrap();
                }
            })
        };
        while !writer.is_finished() {
            store.timers_due(Domain::Event, 3).unwrap();
        }
        writer.join().unwrap();
        let fired = drain(&store, Domain::Event, 1000);
        assert_eq!(
            fired.len(),
            127,
            "round {round}: every registered timer is found"
        );
        assert!(fired.iter().all(|t| t.time == 5));
    }
    assert_eq!(store.timer_status().unwrap().next_event_time, Some(50));
}

#[test]
fn a_failing_batch_registers_and_deletes_no_timer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 0, 1);
    store
        .write(&[register(Domain::Processing, "a", 1)])
        .unwrap();
    let err = store
        .write(&[
            register(Domain::Processing, "b", 1),
            WriteOp::TimerDelete {
                domain: Domain::Processing,
                key: Bytes::from_static(b"a"),
                name: Bytes::from_static(b"t"),
                time: 1,
            },
            WriteOp::ValuePut {
                state: "nope".into(),
                key: Bytes::from_static(b"a"),
                value: Bytes::new(),
            },
        ])
        .unwrap_err();
    assert_eq!(err.index, Some(2));
    let page = store.timers_due(Domain::Processing, 0).unwrap();
    assert_eq!(page.timers.len(), 1);
    assert_eq!(page.timers[0].key, b"a");
}

#[test]
fn a_fenced_store_refuses_timer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 0, 1);
    store.fence();
    let err = store.write(&[register(Domain::Event, "a", 1)]).unwrap_err();
    assert!(matches!(err.source, StoreError::Suspended));
    assert_eq!(store.timer_status().unwrap().next_event_time, None);
}

#[test]
fn rescaled_stores_keep_their_own_groups_timers_and_the_lowest_watermark() {
    let root = tempfile::tempdir().unwrap();
    let mut cuts = Vec::new();
    let mut all_keys = Vec::new();
    for (replica, watermark) in [(0u32, Some(300u64)), (1, Some(200))] {
        let store = open(&root.path().join(format!("old-{replica}")), replica, 2);
        let keys = owned_keys(replica, 2, 40);
        let mut ops: Vec<_> = keys
            .iter()
            .map(|k| register(Domain::Event, k, 100))
            .collect();
        ops.extend(watermark.map(advance));
        store.write(&ops).unwrap();
        let cut = root.path().join(format!("cut-{replica}"));
        store.cut(&cut).unwrap();
        cuts.push(cut);
        all_keys.extend(keys);
    }
    // 2 -> 1: the first snapshot becomes the store, the second is ingested.
    let scratch = root.path().join("scratch");
    let merged_dir = root.path().join("new-0");
    copy_dir(&cuts[0], &merged_dir);
    let merged = open(&merged_dir, 0, 1);
    merged.clip_to_range().unwrap();
    merged.ingest_range_from(&cuts[1], &scratch).unwrap();
    assert_eq!(
        merged.watermark().unwrap(),
        Some(200),
        "the lower watermark"
    );
    let mut fired: Vec<String> = drain(&merged, Domain::Event, 0)
        .into_iter()
        .map(|t| String::from_utf8(t.key).unwrap())
        .collect();
    fired.sort();
    all_keys.sort();
    assert_eq!(fired, all_keys, "every timer of both old replicas, once");
    drop(merged);

    // 2 -> 3 from the same snapshots: replica 1 of 3 takes groups of both old replicas.
    for cut in &cuts {
        let (_, timers) = dump_timers(cut).unwrap();
        assert_eq!(timers.len(), 40, "the snapshots themselves are unchanged");
    }
    let new_dir = root.path().join("new-1");
    copy_dir(&cuts[0], &new_dir);
    let middle = open(&new_dir, 1, 3);
    middle.clip_to_range().unwrap();
    middle
        .ingest_range_from(&cuts[1], &scratch.join("2"))
        .unwrap();
    let range = middle.placement().range;
    let fired = drain(&middle, Domain::Event, 0);
    assert!(!fired.is_empty());
    assert!(
        fired.iter().all(|t| range.contains(t.key_group)),
        "only its own groups"
    );
    let expected = all_keys
        .iter()
        .filter(|k| range.contains(key_group(k.as_bytes(), 128)))
        .count();
    assert_eq!(fired.len(), expected);
    assert_eq!(middle.watermark().unwrap(), Some(200));
}

#[test]
fn a_source_without_a_watermark_leaves_none() {
    let root = tempfile::tempdir().unwrap();
    let with = open(&root.path().join("a"), 0, 2);
    with.write(&[advance(50)]).unwrap();
    with.cut(&root.path().join("cut-a")).unwrap();
    let without = open(&root.path().join("b"), 1, 2);
    without.cut(&root.path().join("cut-b")).unwrap();
    drop((with, without));
    let merged = open(&root.path().join("cut-a"), 0, 1);
    merged
        .ingest_range_from(&root.path().join("cut-b"), &root.path().join("s"))
        .unwrap();
    assert_eq!(merged.watermark().unwrap(), None);
    assert!(merged.timers_due(Domain::Event, 0).unwrap().up_to.is_none());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn timer_keys_round_trip_and_sort_by_group_domain_time() {
    let k = timer_key(300, Domain::Processing, 77, b"key", b"name");
    let t = decode_timer_key(&k).unwrap();
    assert_eq!(
        (t.key_group, t.domain, t.time, &t.key[..], &t.name[..]),
        (300, Domain::Processing, 77, &b"key"[..], &b"name"[..])
    );
    assert!(
        timer_key(1, Domain::Event, u64::MAX, b"z", b"")
            < timer_key(1, Domain::Processing, 0, b"", b"")
    );
    assert!(timer_key(1, Domain::Event, 5, b"zzz", b"") < timer_key(1, Domain::Event, 6, b"", b""));
    assert!(
        timer_key(1, Domain::Processing, u64::MAX, b"", b"")
            < timer_key(2, Domain::Event, 0, b"", b"")
    );
    // A key and name never blur: ("ab", "c") and ("a", "bc") are two timers.
    assert_ne!(
        timer_key(1, Domain::Event, 1, b"ab", b"c"),
        timer_key(1, Domain::Event, 1, b"a", b"bc")
    );
    assert!(decode_timer_key(&k[..k.len() - 5]).is_none());
}
