//! Store-level behaviour that the wire tests cannot see: fencing, the TTL compaction filter,
//! list pruning on merge, and atomicity at the RocksDB level.

use bytes::Bytes;
use stator_core::keygroup::Layout;

use super::*;

fn open(dir: &Path, states: &[StateDecl]) -> Arc<Store> {
    let placement = Placement::new(Layout::new(1, 128).unwrap(), 0).unwrap();
    Store::open(dir, placement, &RocksOptions::default(), states, &[]).unwrap()
}

fn decl(name: &str, kind: Kind, ttl_ms: u64) -> StateDecl {
    StateDecl {
        name: name.into(),
        kind,
        ttl_ms,
    }
}

fn put(state: &str, key: &str, value: &str) -> WriteOp {
    WriteOp::ValuePut {
        state: state.into(),
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
    }
}

#[test]
fn fenced_store_refuses_writes_but_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[decl("v", Kind::Value, 0)]);
    store.write(&[put("v", "a", "1")]).unwrap();
    store.fence();
    let err = store.write(&[put("v", "a", "2")]).unwrap_err();
    assert!(matches!(err.source, StoreError::Suspended));
    assert_eq!(err.source.code(), stator_core::proto::ErrorCode::Suspended);
    assert_eq!(store.get("v", b"a").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn compaction_filter_drops_expired_entries_physically() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        &[
            decl("t", Kind::Value, 50),
            decl("keep", Kind::Value, 0),
            decl("l", Kind::List, 50),
        ],
    );
    let mut ops: Vec<_> = (0..100).map(|i| put("t", &format!("k{i}"), "x")).collect();
    ops.push(put("keep", "k", "forever"));
    ops.push(WriteOp::ListAppend {
        state: "l".into(),
        key: Bytes::from_static(b"k"),
        values: vec![Bytes::from_static(b"e")],
    });
    store.write(&ops).unwrap();
    store.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(120));
    // Twice: a list that is only merge operands is merged (dropping expired elements) by the
    // first compaction, and the filter sees the merged value in the second.
    for _ in 0..2 {
        for name in ["v:t", "v:keep", "l:l"] {
            let cf = store.db.cf_handle(name).unwrap();
            store.db.compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
        }
    }
    let raw_count = |name: &str| {
        let cf = store.db.cf_handle(name).unwrap();
        store
            .db
            .iterator_cf_opt(&cf, super::scan_options(), rocksdb::IteratorMode::Start)
            .count()
    };
    assert_eq!(
        raw_count("v:t"),
        0,
        "expired values are removed by compaction"
    );
    assert_eq!(
        raw_count("l:l"),
        0,
        "fully expired lists are removed by compaction"
    );
    assert_eq!(raw_count("v:keep"), 1, "entries without TTL stay");
}

#[test]
fn list_merge_prunes_expired_elements() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[decl("l", Kind::List, 50)]);
    let append = |v: &'static [u8]| WriteOp::ListAppend {
        state: "l".into(),
        key: Bytes::from_static(b"k"),
        values: vec![Bytes::from_static(v)],
    };
    store.write(&[append(b"old")]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(80));
    store.write(&[append(b"new")]).unwrap();
    store.flush().unwrap();
    let cf = store.db.cf_handle("l:l").unwrap();
    store.db.compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
    let raw = store
        .db
        .get_cf(
            &cf,
            encoding::plain_key(store.placement.layout.key_group(b"k"), b"k"),
        )
        .unwrap()
        .unwrap();
    let elements: Vec<_> = encoding::list_elements(&raw)
        .map(|(_, v)| v.to_vec())
        .collect();
    assert_eq!(
        elements,
        vec![b"new".to_vec()],
        "the expired element is gone from storage"
    );
}

#[test]
fn failing_batch_writes_nothing_even_to_other_states() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        &[decl("a", Kind::Value, 0), decl("m", Kind::Map, 0)],
    );
    let err = store
        .write(&[
            put("a", "k", "1"),
            WriteOp::MapPut {
                state: "m".into(),
                key: Bytes::from_static(b"k"),
                map_key: Bytes::from_static(b"x"),
                value: Bytes::from_static(b"y"),
            },
            WriteOp::MapPut {
                state: "m".into(),
                key: Bytes::from_static(b"k"),
                map_key: Bytes::from(vec![0; 70_000]),
                value: Bytes::new(),
            },
        ])
        .unwrap_err();
    assert_eq!(err.index, Some(2));
    assert!(matches!(
        err.source,
        StoreError::TooLarge {
            what: "map key",
            ..
        }
    ));
    assert_eq!(store.get("a", b"k").unwrap(), None);
    assert!(!store.map_contains("m", b"k", b"x").unwrap());
}

#[test]
fn redeclaring_with_a_new_ttl_applies_to_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[decl("v", Kind::Value, 0)]);
    store.declare(&[decl("v", Kind::Value, 30)], &[]).unwrap();
    store.write(&[put("v", "k", "x")]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(store.get("v", b"k").unwrap(), None);
    assert_eq!(store.states(), vec![decl("v", Kind::Value, 30)]);
}

/// The aggregated table properties of the value state `v`'s files.
fn table_properties(store: &Store) -> String {
    let cf = store
        .db
        .cf_handle(&cf_name(&decl("v", Kind::Value, 0)))
        .unwrap();
    store
        .db
        .property_value_cf(&cf, "rocksdb.aggregated-table-properties")
        .unwrap()
        .unwrap()
}

#[test]
fn index_and_filter_layouts_apply_to_new_files_and_read_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let placement = || Placement::new(Layout::new(1, 128).unwrap(), 0).unwrap();
    let states = [decl("v", Kind::Value, 0)];
    let open_with = |index_filters| {
        let rocks = RocksOptions {
            index_filters,
            ..RocksOptions::default()
        };
        Store::open(dir.path(), placement(), &rocks, &states, &[]).unwrap()
    };
    let batch = |from: usize| -> Vec<WriteOp> {
        (from..from + 2000)
            .map(|i| put("v", &format!("key-{i:06}"), &format!("value-{i}")))
            .collect()
    };

    let store = open_with(IndexFilters::Whole);
    store.write(&batch(0)).unwrap();
    store.flush().unwrap();
    let whole = table_properties(&store);
    // RocksDB lists index partitions only for a file that has them.
    assert!(whole.contains("# data blocks="), "{whole}");
    assert!(!whole.contains("# index partitions="), "{whole}");
    drop(store);

    // The same files, opened with the default layout, are read as written; new files are
    // partitioned.
    let store = open_with(IndexFilters::Partitioned);
    store.write(&batch(2000)).unwrap();
    store.flush().unwrap();
    let both = table_properties(&store);
    assert!(both.contains("# index partitions="), "{both}");
    for i in [0, 1999, 2000, 3999] {
        let value = store.get("v", format!("key-{i:06}").as_bytes()).unwrap();
        assert_eq!(value.as_deref(), Some(format!("value-{i}").as_bytes()));
    }
    assert_eq!(store.get("v", b"key-999999").unwrap(), None);
}

/// Every element of list `key`, read page by page.
fn list_elements_in_pages(store: &Store, state: &str, key: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = store.list_page(state, key, offset, 0).unwrap();
        out.extend(page.values);
        if !page.has_more {
            return out;
        }
        offset = page.next_offset;
    }
}

#[test]
fn an_append_past_the_list_limit_is_refused_clearly_and_loses_nothing() {
    use stator_core::limits::{MAX_LIST_BYTES, MAX_VALUE_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &[decl("l", Kind::List, 0)]);
    let append = |key: &'static [u8], fill: u8, len: usize| WriteOp::ListAppend {
        state: "l".into(),
        key: Bytes::from_static(key),
        values: vec![Bytes::from(vec![fill; len])],
    };
    let big = MAX_VALUE_BYTES as usize;
    // Seven of the largest elements fit the 64 MiB limit with their framing; the eighth does not.
    let fits = MAX_LIST_BYTES / big - 1;
    for i in 0..fits {
        store.write(&[append(b"k", i as u8, big)]).unwrap();
    }
    let err = store
        .write(&[append(b"other", 0, 1), append(b"k", 0xff, big)])
        .unwrap_err();
    assert_eq!(err.index, Some(1), "the refused op is named");
    assert!(matches!(err.source, StoreError::TooLarge { .. }), "{err:?}");
    assert_eq!(err.source.code(), stator_core::proto::ErrorCode::TooLarge);
    let message = err.source.to_string();
    assert!(
        message.contains("list after this append") && message.contains(&MAX_LIST_BYTES.to_string()),
        "{message}"
    );
    // The batch was refused whole, and the list is as it was: every element readable.
    assert!(list_elements_in_pages(&store, "l", b"other").is_empty());
    let list = list_elements_in_pages(&store, "l", b"k");
    assert_eq!(list.len(), fits);
    for (i, element) in list.iter().enumerate() {
        assert!(element.len() == big && element.iter().all(|&b| b == i as u8));
    }
    // Small appends still fit under the limit, and a list that is set anew starts over.
    store.write(&[append(b"k", 0xee, 16)]).unwrap();
    store
        .write(&[WriteOp::ListSet {
            state: "l".into(),
            key: Bytes::from_static(b"k"),
            values: vec![Bytes::from_static(b"fresh")],
        }])
        .unwrap();
    store.write(&[append(b"k", 0xff, big)]).unwrap();
    assert_eq!(list_elements_in_pages(&store, "l", b"k").len(), 2);
}
