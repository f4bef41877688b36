//! Wiring: open the store, bind the socket, serve until SIGTERM/SIGINT, shut down cleanly.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use stator_core::keygroup::Layout;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use stator_storage::Location;

use crate::admin::{self, AdminState};
use crate::checkpoint::restore::{self, RestoreRequest};
use crate::checkpoint::{Coordinator, SnapshotConfig};
use crate::config::Args;
use crate::metrics::Metrics;
use crate::server;
use crate::standby::Standby;
use crate::store::{Placement, Store};

pub async fn run(args: Args) -> anyhow::Result<()> {
    let layout = Layout::new(args.parallelism, args.max_parallelism)?;
    let placement = Placement::new(layout, args.replica_index)?;
    let token = match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the admin token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    if token.as_deref() == Some("") {
        anyhow::bail!("the admin token file is empty");
    }
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();

    // The admin endpoint comes up first so probes answer (not ready) during a long open/restore.
    let admin_listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("cannot bind the admin endpoint on {}", args.admin_addr))?;
    let standby = match (&args.warm_from, &args.restore_from) {
        (Some(_), Some(to)) => Some(Arc::new(Standby::new(&args.data_dir, to))),
        _ => None,
    };
    let admin_state = Arc::new(AdminState {
        store: Default::default(),
        coordinator: Default::default(),
        metrics: metrics.clone(),
        ready: Default::default(),
        token,
        standby: standby.clone(),
    });
    let admin_shutdown = shutdown.clone();
    let admin_task = tokio::spawn(
        axum::serve(admin_listener, admin::router(admin_state.clone()))
            .with_graceful_shutdown(async move { admin_shutdown.cancelled().await })
            .into_future(),
    );

    let states: Vec<_> = args.states.iter().map(|s| s.0.clone()).collect();
    let operator_states: Vec<_> = args.operator_states.iter().map(|s| s.0.clone()).collect();
    let s3 = args.s3_options();
    let state_location = match &args.state_location {
        Some(url) => Some(
            Location::parse(url, &s3)
                .await
                .with_context(|| format!("bad --state-location {url:?}"))?,
        ),
        None => None,
    };
    let rocks = args.rocks_options();
    let request = RestoreRequest {
        placement,
        data_dir: &args.data_dir,
        state_location: state_location.as_ref(),
        restore_from: args.restore_from.as_deref(),
        s3: &s3,
        // A promoted standby's restore reuses what it fetched while warming.
        local_recovery: args.local_recovery || standby.is_some(),
        concurrency: args.transfer_concurrency,
        rocks: &rocks,
        states: &states,
        operator_states: &operator_states,
    };
    if let (Some(standby), Some(warm_from)) = (&standby, &args.warm_from)
        && !standby.is_promoted()
    {
        let started = std::time::Instant::now();
        let warm = RestoreRequest {
            restore_from: Some(warm_from),
            ..request
        };
        let fetched = restore::prefetch(warm, &metrics).await;
        let fetched = match fetched {
            Ok(bytes) => bytes,
            // A lineage that has not checkpointed yet (its replicas just started): nothing to
            // fetch ahead; the restore after the promotion downloads everything.
            Err(e @ restore::RestoreError::NothingThere(_)) => {
                tracing::warn!(error = %e, "nothing to warm up from: the restore after the promotion fetches the whole state");
                0
            }
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot warm up from {warm_from}"))
                );
            }
        };
        standby.set_warm();
        tracing::info!(
            warm_from = %warm_from,
            bytes = fetched,
            ms = started.elapsed().as_millis() as u64,
            "warm: waiting to be promoted"
        );
        tokio::select! {
            _ = standby.promoted() => {}
            _ = wait_for_signal() => {
                tracing::info!("stopped before it was promoted");
                shutdown.cancel();
                admin_task.await??;
                return Ok(());
            }
        }
    }
    let restored =
        restore::restore(request, &metrics)
            .await
            .with_context(|| match &args.restore_from {
                Some(from) => format!("cannot restore from {from}"),
                None => format!(
                    "cannot open or restore the state store in {}",
                    args.data_dir.display()
                ),
            })?;
    let store = restored.store;
    let coordinator = Coordinator::new(
        store.clone(),
        metrics.clone(),
        SnapshotConfig {
            state_location,
            s3,
            retained: args.retained_checkpoints,
            concurrency: args.transfer_concurrency,
            data_dir: args.data_dir.clone(),
            job_id: args.job_id.clone(),
            skip_copies: args.fault_skip_savepoint_copies,
        },
        restored.own_checkpoint,
    )
    .await
    .context("cannot read this replica's checkpoints")?;
    let _ = admin_state.store.set(store.clone());
    let _ = admin_state.coordinator.set(coordinator.clone());
    tokio::spawn(coordinator.clone().run_periodic(
        Duration::from_secs(args.checkpoint_interval_secs),
        shutdown.clone(),
    ));

    read_rocksdb_metrics(&store, &metrics).await;
    tokio::spawn(refresh_rocksdb_metrics(
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let listener = server::bind(&args.socket)?;
    let p = store.placement();
    tracing::info!(
        socket = %args.socket.display(),
        admin = %args.admin_addr,
        replica = p.replica,
        parallelism = p.layout.parallelism(),
        max_parallelism = p.layout.max_parallelism(),
        key_groups = %p.range,
        states = store.states().len(),
        restored_from = restored.source,
        "serving state"
    );
    admin_state.ready.store(true, Ordering::SeqCst);

    let signal_shutdown = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        signal_shutdown.cancel();
    });
    let limits = server::Limits {
        max_connections: args.max_connections as usize,
        idle_timeout: (args.idle_timeout_secs > 0)
            .then(|| std::time::Duration::from_secs(args.idle_timeout_secs)),
    };
    server::serve(listener, store.clone(), metrics, limits, shutdown.clone()).await;
    admin_state.ready.store(false, Ordering::SeqCst);
    let _ = std::fs::remove_file(&args.socket);
    let flushed = tokio::task::spawn_blocking(move || store.flush()).await?;
    flushed.context("flushing the state store on shutdown failed")?;
    admin_task.await??;
    tracing::info!("state store closed cleanly");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stopping only when killed");
            std::future::pending::<()>().await;
        }
    }
}

/// How often the RocksDB figures behind `/metrics` are read.
const ROCKSDB_METRICS_PERIOD: Duration = Duration::from_secs(5);

/// Reads the RocksDB properties `/metrics` reports, off the async workers.
async fn read_rocksdb_metrics(store: &Arc<Store>, metrics: &Arc<Metrics>) {
    let (store, metrics) = (store.clone(), metrics.clone());
    let _ = tokio::task::spawn_blocking(move || {
        for (property, label) in crate::metrics::ROCKSDB_PROPERTIES {
            metrics.set_rocksdb(label, store.property_sum(property));
        }
        let (cache, memtables) = store.memory_usage();
        metrics.set_rocksdb("block_cache_usage_bytes", cache as u64);
        metrics.set_rocksdb("memtable_budget_usage_bytes", memtables as u64);
    })
    .await;
}

/// Keeps the RocksDB figures fresh every [`ROCKSDB_METRICS_PERIOD`]: a scrape only encodes
/// cached figures and never waits on RocksDB.
async fn refresh_rocksdb_metrics(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(ROCKSDB_METRICS_PERIOD) => {}
        }
        read_rocksdb_metrics(&store, &metrics).await;
    }
}
