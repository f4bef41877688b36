//! The operator process: flags, logging, the API client, leader election, controllers per watched
//! namespace, the health and metrics endpoint, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use tokio_util::sync::CancellationToken;

use crate::controller::{self, ControllerParts};
use crate::crd::StreamJob;
use crate::http::{self, HttpState};
use crate::leader::LeaderElector;
use crate::lifecycle::Settings;
use crate::metrics::Metrics;

#[derive(Parser, Debug)]
#[command(
    name = "stator-operator",
    version,
    about = "Runs StreamJobs: replica pods with the Stator state sidecar"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the StreamJob CustomResourceDefinition as YAML.
    Crd,
    /// Run the operator.
    Run(RunArgs),
}

#[derive(Parser, Debug)]
pub struct RunArgs {
    /// Namespaces to watch (repeat, or comma-separated in the env); all namespaces when none is
    /// named (empty names, as in `STATOR_WATCH_NAMESPACES=""`, name none).
    #[arg(
        long = "namespace",
        env = "STATOR_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// The sidecar image for jobs that do not name one: this build's own by default.
    #[arg(long, env = "STATOR_SIDECAR_IMAGE", default_value = DEFAULT_SIDECAR_IMAGE)]
    pub sidecar_image: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "STATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Elect a leader through a Lease, so several replicas can run.
    #[arg(long, env = "STATOR_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    #[arg(
        long,
        env = "STATOR_LEASE_NAME",
        default_value = "stator-operator-leader"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Seconds a leader's lease lasts without renewal.
    #[arg(long, env = "STATOR_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// This replica's identity in the Lease (defaults to the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// json or text.
    #[arg(long, env = "STATOR_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
    /// StreamJobs reconciled at once (a restarted operator works through every job with this
    /// many in flight).
    #[arg(long, env = "STATOR_MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
    pub max_concurrent_reconciles: u16,
    /// Seconds a request to the API server may take before it fails (watches excepted).
    #[arg(long, env = "STATOR_API_TIMEOUT_SECS", default_value_t = 20)]
    pub api_timeout_secs: u64,
    /// Accept `file://` state locations: a directory on the replicas' own filesystem, which only a
    /// single-machine cluster shares between every replica and the operator (a local test setup).
    /// Refused by default: on a real cluster such a job would lose its state with its pods.
    #[arg(long, env = "STATOR_ALLOW_FILE_LOCATIONS", default_value_t = false)]
    pub allow_file_locations: bool,
}

/// The sidecar image of this build, with the workspace's version (the chart's appVersion).
pub const DEFAULT_SIDECAR_IMAGE: &str =
    concat!("ghcr.io/stator/stator-sidecar:", env!("CARGO_PKG_VERSION"));

/// The namespaces to run controllers for: `None` is every namespace. Blank names are ignored, so an
/// empty `STATOR_WATCH_NAMESPACES` means every namespace, not one named "".
pub fn watched_namespaces(names: &[String]) -> Vec<Option<String>> {
    let named: Vec<Option<String>> = names
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .map(|n| Some(n.to_owned()))
        .collect();
    if named.is_empty() { vec![None] } else { named }
}

pub fn crd_yaml() -> anyhow::Result<String> {
    Ok(serde_yaml::to_string(&StreamJob::crd())?)
}

/// A client whose requests are counted in the metrics; `read_timeout` bounds every answer.
fn client(
    mut config: kube::Config,
    read_timeout: Duration,
    metrics: Arc<Metrics>,
) -> anyhow::Result<kube::Client> {
    config.read_timeout = Some(read_timeout);
    config.connect_timeout = Some(Duration::from_secs(5));
    config.write_timeout = Some(Duration::from_secs(20));
    let count =
        tower::util::MapRequestLayer::new(move |req: ::http::Request<kube::client::Body>| {
            let watch = req.uri().query().is_some_and(|q| q.contains("watch=true"));
            let verb = if watch {
                "watch"
            } else {
                match *req.method() {
                    ::http::Method::GET => "get",
                    ::http::Method::POST => "create",
                    ::http::Method::PUT => "update",
                    ::http::Method::PATCH => "patch",
                    ::http::Method::DELETE => "delete",
                    _ => "other",
                }
            };
            metrics.api_request(verb);
            req
        });
    Ok(kube::client::ClientBuilder::try_from(config)
        .context("cannot build the Kubernetes client")?
        .with_layer(&count)
        .build())
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let config = kube::Config::infer()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let client = client(
        config.clone(),
        Duration::from_secs(args.api_timeout_secs.max(1)),
        metrics.clone(),
    )?;
    // Watches wait up to the server's watch timeout (290 s) for an event.
    let watch_client = client_for_watches(config, metrics.clone())?;
    let http_state = Arc::new(HttpState {
        metrics: metrics.clone(),
        ready: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot bind {}", args.http_addr))?;
    let shutdown = shutdown_on_signal();
    tokio::spawn(
        axum::serve(listener, http::router(http_state.clone()))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    // Reaching the API server is what "ready" means for a standby too.
    client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    http_state.ready.store(true, Ordering::SeqCst);
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("stator-operator-{}", std::process::id()));
    let watched = watched_namespaces(&args.namespaces);
    let watching = if watched == [None] {
        "all namespaces".to_owned()
    } else {
        watched
            .iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join(",")
    };
    tracing::info!(identity, namespaces = %watching, http = %args.http_addr, "stator-operator started");

    let elector = args.leader_election.then(|| {
        LeaderElector::new(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            identity.clone(),
            Duration::from_secs(args.lease_seconds),
        )
    });
    if let Some(elector) = &elector {
        tracing::info!(lease = %args.lease_name, "waiting to become the leader");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        tracing::info!(identity = elector.identity(), "became the leader");
    }
    metrics.leader.set(1);

    let parts = || ControllerParts {
        api_client: client.clone(),
        watch_client: watch_client.clone(),
        recorder: controller::recorder(client.clone(), Some(identity.clone())),
        metrics: metrics.clone(),
        settings: Settings {
            default_sidecar_image: args.sidecar_image.clone(),
            allow_file_locations: args.allow_file_locations,
        },
        concurrency: args.max_concurrent_reconciles.max(1),
    };
    let namespaces = watched_namespaces(&args.namespaces);
    let controllers = futures::future::join_all(
        namespaces
            .into_iter()
            .map(|ns| controller::run(parts(), ns, shutdown.clone())),
    );
    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = controllers => {}
        _ = lost => {
            metrics.leader.set(0);
            shutdown.cancel();
            anyhow::bail!("lost the leader lease; exiting so a standby takes over");
        }
    }
    tracing::info!("stator-operator stopped");
    Ok(())
}

fn client_for_watches(config: kube::Config, metrics: Arc<Metrics>) -> anyhow::Result<kube::Client> {
    client(config, Duration::from_secs(295), metrics)
}

/// A token cancelled on SIGTERM or SIGINT.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down: finishing reconciles in flight");
            t.cancel();
        }
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn no_names_or_only_blank_ones_watch_every_namespace() {
        assert_eq!(watched_namespaces(&[]), vec![None]);
        assert_eq!(
            watched_namespaces(&names(&[""])),
            vec![None],
            "STATOR_WATCH_NAMESPACES=\"\" is every namespace, not one named \"\""
        );
        assert_eq!(watched_namespaces(&names(&[" ", ""])), vec![None]);
    }

    #[test]
    fn named_namespaces_are_watched_each() {
        assert_eq!(
            watched_namespaces(&names(&["team-a", "", " team-b "])),
            vec![Some("team-a".to_owned()), Some("team-b".to_owned())]
        );
    }

    #[test]
    fn an_empty_env_value_parses_to_every_namespace() {
        let args = Args::try_parse_from(["stator-operator", "run", "--namespace", ""]).unwrap();
        let Command::Run(run) = args.command else {
            panic!("not run")
        };
        assert_eq!(watched_namespaces(&run.namespaces), vec![None]);
        assert_eq!(
            run.sidecar_image,
            format!(
                "ghcr.io/stator/stator-sidecar:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
