//! Coordinator behaviour that needs control over task scheduling: a single-threaded runtime
//! decides exactly which task reaches the snapshot lock first.

use std::path::Path;
use std::sync::Arc;

use stator_core::keygroup::Layout;
use stator_storage::{Location, S3Options};

use super::{Coordinator, SnapshotConfig};
use crate::metrics::Metrics;
use crate::store::{Kind, Placement, RocksOptions, StateDecl, Store};

async fn coordinator(dir: &Path) -> Arc<Coordinator> {
    let placement = Placement::new(Layout::new(1, 128).unwrap(), 0).unwrap();
    let states = [StateDecl {
        name: "v".into(),
        kind: Kind::Value,
        ttl_ms: 0,
    }];
    let store = Store::open(
        &dir.join("data/db"),
        placement,
        &RocksOptions::default(),
        &states,
        &[],
    )
    .unwrap();
    Coordinator::new(
        store,
        Metrics::new(),
        SnapshotConfig {
            state_location: Some(Location::local(&dir.join("store"))),
            s3: S3Options::default(),
            retained: 3,
            concurrency: 2,
            data_dir: dir.join("data"),
            job_id: None,
            skip_copies: false,
        },
        None,
    )
    .await
    .unwrap()
}

/// What one round of the periodic loop does.
async fn periodic_round(coordinator: &Arc<Coordinator>) {
    coordinator.checkpoint(None).await.unwrap();
}

#[tokio::test]
async fn checkpoint_ids_follow_cut_order_when_a_trigger_races_the_periodic_one() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = coordinator(dir.path()).await;
    // A manual trigger, and the periodic checkpoint starting before the trigger's task first runs.
    let manual = coordinator.trigger_checkpoint().await.unwrap();
    periodic_round(&coordinator).await;
    let both = async {
        while coordinator.retained().len() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), both)
        .await
        .expect("both checkpoints commit");
    let retained = coordinator.retained();
    let ids: Vec<u64> = retained.iter().map(|c| c.id).collect();
    assert!(ids.contains(&manual));
    // Committed in cut order, so the highest id is the latest cut, which a restore picks.
    assert!(
        ids.is_sorted(),
        "checkpoints committed out of id order: {ids:?}"
    );
    assert!(
        retained
            .windows(2)
            .all(|w| w[0].created_at_ms <= w[1].created_at_ms),
        "a higher id holds an older cut: {retained:?}"
    );
    assert_eq!(coordinator.latest().unwrap().id, *ids.iter().max().unwrap());
}
