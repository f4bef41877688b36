//! The `StreamJob` API (`stator.dev/v1alpha1`): the Rust types are the source of the CRD schema
//! and its validation rules (`stator-operator crd` prints it; `crds/streamjob.yaml` is checked in).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ContainerPort, EnvVar, PodSecurityContext, ResourceRequirements, SecurityContext,
    Toleration,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stateful stream job: replica pods of an app, each with the Stator state sidecar.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "stator.dev",
    version = "v1alpha1",
    kind = "StreamJob",
    namespaced,
    shortname = "sj",
    status = "StreamJobStatus",
    scale(
        spec_replicas_path = ".spec.parallelism",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
// Printer columns in kube's raw JSON form: the structured form repeats `type_ = ...`, which
// clippy's duplicated_attributes lint rejects.
#[kube(printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#)]
#[kube(printcolumn = r#"{"name":"Parallelism","type":"integer","jsonPath":".spec.parallelism"}"#)]
#[kube(printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#)]
#[kube(printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.operation.step"}"#)]
#[kube(
    printcolumn = r#"{"name":"Last Savepoint","type":"date","jsonPath":".status.lastSavepoint.time"}"#
)]
#[kube(printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
#[kube(validation = Rule::new(JOB_NAME_IS_DNS_LABEL).message("metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter and ending with a letter or digit): it names the job's Service and pods"))]
#[kube(validation = Rule::new(JOB_NAME_FITS_POD_NAMES).message("metadata.name is too long: every replica's pod name and hostname, <name>-<index> for each index below maxParallelism, must be at most 63 characters"))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.parallelism <= self.maxParallelism").message("parallelism must not exceed maxParallelism"))]
#[x_kube(validation = Rule::new("self.maxParallelism == oldSelf.maxParallelism").message("maxParallelism is immutable: it fixes the key groups of the job's state"))]
pub struct StreamJobSpec {
    /// The app container: the user's stream processor.
    pub app: AppSpec,
    /// Overrides for every replica pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverrides>,
    /// Number of replicas, one pod each. `kubectl scale` changes it.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 32768))]
    pub parallelism: i32,
    /// Number of key groups; fixed for the life of the job's state.
    #[serde(default = "default_max_parallelism")]
    #[schemars(range(min = 1, max = 32768))]
    pub max_parallelism: i32,
    /// Where and how state is kept.
    #[serde(default)]
    pub state: StateSpec,
    /// How a change of the deployed spec carries state over.
    #[serde(default)]
    pub upgrade_mode: UpgradeMode,
    /// How the new version's pods replace the old ones in a savepoint upgrade.
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    /// Savepoints on demand, on a schedule, and their history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint: Option<SavepointSpec>,
    /// A savepoint directory to restore from on the first deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_savepoint: Option<String>,
    /// Stop the job with a savepoint and remove its pods; set back to false to resume from it.
    #[serde(default)]
    pub suspend: bool,
    /// Change to restart every replica (restoring from its latest checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_nonce: Option<i64>,
    /// Rolling back to the last stable spec when a new version does not become ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackSpec>,
    /// When a `lastState` upgrade takes a savepoint instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<LastStateSpec>,
    /// The state sidecar container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarSpec>,
}

fn default_parallelism() -> i32 {
    1
}

fn default_max_parallelism() -> i32 {
    stator_core::keygroup::DEFAULT_MAX_PARALLELISM as i32
}

/// A job's name names its headless Service (a DNS-1035 label) and, with a replica index, its pods and
/// their hostnames (DNS-1123 labels of at most 63 characters). The operator checks the same in
/// [`crate::validate`].
pub const JOB_NAME_IS_DNS_LABEL: &str =
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";
pub const JOB_NAME_FITS_POD_NAMES: &str =
    "size(self.metadata.name) + 1 + size(string(self.spec.maxParallelism - 1)) <= 63";

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppSpec {
    /// The app's container image.
    #[schemars(length(min = 1))]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Merged field by field over hardened defaults that pass the `restricted` Pod Security Standard
    /// (non-root, no privilege escalation, every capability dropped, the runtime's seccomp profile, a
    /// read-only root filesystem with a writable `/tmp`): set only what the app needs to differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Merged field by field over the defaults (`runAsNonRoot`, `fsGroup` 65532, the runtime's
    /// seccomp profile), so setting one field keeps the others hardened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.location) || self.location.startsWith('s3://') || self.location.startsWith('file://')").message("state.location must be an s3://bucket/prefix or file:///path URL"))]
pub struct StateSpec {
    /// Where checkpoints and savepoints go: `s3://bucket/prefix` or `file:///path`. Without it,
    /// state lives only on the replicas' volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// A Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` for an s3:// location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    #[serde(default = "default_checkpoint_interval")]
    #[schemars(range(min = 0))]
    pub checkpoint_interval_seconds: i64,
    #[serde(default = "default_retained_checkpoints")]
    #[schemars(range(min = 1, max = 100))]
    pub retained_checkpoints: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rocksdb: Option<RocksDbSpec>,
    /// The replica's local volume for RocksDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSpec>,
    /// Keyed states declared at start-up, at most 100 (apps may also declare at run time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub states: Vec<StateDeclSpec>,
    /// Operator states declared at start-up (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub operator_states: Vec<OperatorStateDeclSpec>,
    /// What happens to stored checkpoints, savepoints and volumes when the StreamJob is deleted.
    #[serde(default)]
    pub on_delete: StateDeletePolicy,
}

impl Default for StateSpec {
    fn default() -> Self {
        Self {
            location: None,
            credentials_secret: None,
            s3: None,
            checkpoint_interval_seconds: default_checkpoint_interval(),
            retained_checkpoints: default_retained_checkpoints(),
            rocksdb: None,
            volume: None,
            states: Vec::new(),
            operator_states: Vec::new(),
            on_delete: StateDeletePolicy::default(),
        }
    }
}

fn default_checkpoint_interval() -> i64 {
    60
}

fn default_retained_checkpoints() -> i32 {
    3
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// Endpoint override for S3-compatible stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default)]
    pub path_style: bool,
    /// A cloud identity instead of static credentials (IRSA on EKS, or any cluster whose
    /// service-account issuer the cloud trusts): each sidecar gets a token of the pod's ServiceAccount
    /// for `audience` and assumes `roleArn` with it. Exclusive with `credentialsSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity: Option<WebIdentitySpec>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebIdentitySpec {
    /// The IAM role to assume (`AWS_ROLE_ARN`).
    #[schemars(length(min = 1))]
    pub role_arn: String,
    /// The token's audience; `sts.amazonaws.com` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The token service's endpoint when it is not AWS's (a regional or private endpoint, or an
    /// S3-compatible store's own STS, as MinIO has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RocksDbSpec {
    /// The block cache all states share, in MiB (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub block_cache_mb: Option<i32>,
    /// The most one state's memtable holds before a flush, in MiB (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub write_buffer_mb: Option<i32>,
    /// The memory all states' memtables share, in MiB (default 128); writes wait while flushes
    /// bring it back under. With the block cache it sizes the sidecar's default memory request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub memtable_budget_mb: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// The layout of each file's index and bloom filter (default `partitioned`): `whole` gives
    /// point reads 4-11% more throughput while the state's indexes and filters (about 2 MiB per
    /// million keys of small values) fit the block cache, and reads a whole file's index or
    /// filter again after each eviction when they do not. A change applies to files written
    /// after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_filters: Option<IndexFilters>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IndexFilters {
    Partitioned,
    Whole,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.emptyDir) != has(self.persistentVolumeClaim)").message("state.volume needs exactly one of emptyDir or persistentVolumeClaim"))]
pub struct VolumeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimSpec>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirSpec {
    /// For example `10Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    /// Requested size, for example `10Gi`.
    #[schemars(length(min = 1))]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Delete the claims of replicas above the parallelism after a scale-down. Default false:
    /// they are kept (a later scale-up reuses their files for local recovery).
    #[serde(default)]
    pub delete_on_scale_down: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateDeclSpec {
    /// 1 to 200 bytes of UTF-8, no control characters, no ',' or ':' (stator_core::names).
    #[schemars(length(min = 1, max = 200), regex(pattern = stator_core::names::FLAG_STATE_NAME_PATTERN))]
    #[x_kube(validation = Rule::new(stator_core::names::FLAG_STATE_NAME_CEL).message("state names are at most 200 bytes of UTF-8"))]
    pub name: String,
    pub kind: StateKind,
    /// Time to live of each entry in milliseconds; 0 or absent: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_ms: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    Value,
    List,
    Map,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperatorStateDeclSpec {
    /// 1 to 200 bytes of UTF-8, no control characters, no ',' or ':' (stator_core::names).
    #[schemars(length(min = 1, max = 200), regex(pattern = stator_core::names::FLAG_STATE_NAME_PATTERN))]
    #[x_kube(validation = Rule::new(stator_core::names::FLAG_STATE_NAME_CEL).message("operator state names are at most 200 bytes of UTF-8"))]
    pub name: String,
    pub redistribution: Redistribution,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Redistribution {
    Split,
    Union,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StateDeletePolicy {
    /// Keep checkpoints, savepoints and volumes (the default: state outlives its job).
    #[default]
    Retain,
    /// Delete them with the StreamJob.
    Delete,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UpgradeMode {
    /// Start the new version empty.
    Stateless,
    /// Stop with a savepoint and restore the new version from it.
    #[default]
    Savepoint,
    /// Stop and restore each replica from its latest checkpoint.
    LastState,
}

/// How the new version's pods replace the old ones.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UpgradeStrategy {
    /// Stop the old pods (after the savepoint), then create the new ones, which restore the
    /// savepoint.
    #[default]
    Recreate,
    /// Blue/green: the new version's pods start beside the old ones and restore the bulk of the
    /// state from the old version's latest checkpoints while it still serves; then the old version
    /// takes its savepoint (fenced) and the new pods fetch only what changed since and go live.
    /// Costs a second set of pods for the length of the handover. Needs `upgradeMode: savepoint`,
    /// a state location and emptyDir volumes; a change while not every replica is ready takes the
    /// other path.
    WarmHandover,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointSpec {
    /// Change to take a savepoint now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_nonce: Option<i64>,
    /// Take a savepoint this often (seconds); absent or 0: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub periodic_interval_seconds: Option<i64>,
    /// Savepoints kept in the history (older ones are disposed of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub history_count: Option<i32>,
    /// Savepoints older than this (seconds) are disposed of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub history_max_age_seconds: Option<i64>,
    /// How long a savepoint may take before the upgrade is abandoned (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackSpec {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long a new version may take to become ready (seconds).
    #[serde(default = "default_readiness_timeout")]
    #[schemars(range(min = 1))]
    pub readiness_timeout_seconds: i64,
}

fn default_true() -> bool {
    true
}

fn default_readiness_timeout() -> i64 {
    300
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastStateSpec {
    /// A running job whose replicas' latest checkpoints are older than this (seconds), or that
    /// has a replica without any, is upgraded through a savepoint instead. Absent: only a missing
    /// checkpoint does that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_checkpoint_age_seconds: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Default: the operator's `--sidecar-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// The sidecar container's resources. Default: requests of 100m CPU and its memory budget
    /// (block cache + memtable budget + 128 MiB for connections and transfers), and a memory
    /// limit of twice that; no CPU limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// What the operator observed and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Replica pods that exist.
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the replica pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Hash of the spec the running pods were built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_spec_hash: Option<String>,
    /// Where the running version restored from, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// The newest checkpoint any replica completed (of `replicaCheckpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointRef>,
    /// Each replica's latest completed checkpoint, as its sidecar reported it: refreshed every
    /// 2 s during an operation, and at rest every checkpoint interval (10 s to 5 minutes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_checkpoints: Vec<ReplicaCheckpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<SavepointRef>,
    /// What runs now (or is being brought up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<Deployment>,
    /// The last deployment that became ready: where a rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<Deployment>,
    /// The operation in flight, recorded before each of its steps is acted on, so an operator
    /// restarted at any step resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// A spec that was rolled back; it is not tried again until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_spec_hash: Option<String>,
    /// Savepoints kept, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub savepoints: Vec<SavepointRef>,
    /// The last `spec.savepoint.triggerNonce` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger_nonce: Option<i64>,
    /// Counts operations, to name lineages and savepoints uniquely.
    #[serde(default)]
    pub operations: i64,
    /// The identity of this incarnation of the job in storage (its UID, recorded once): every
    /// stored path lies under `<state location>/<namespace>/<name>/<jobId>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Where a resume restores from: the savepoint the suspend took (absent: the suspended
    /// deployment's own checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<String>,
    /// Savepoint locations to delete from storage (dropped from the history, or left partial by
    /// a failed savepoint), each not before its time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disposals: Vec<Disposal>,
    /// When the last periodic savepoint was started (complete or not): the next one is due an
    /// interval after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_periodic_attempt: Option<String>,
    /// The API server refused to create a pod of this spec (admission, quota): retried with
    /// backoff, or at once when the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
}

impl StreamJobStatus {
    /// The pod set the deployed version runs under (absent: `<job>-<index>`).
    pub fn deployed_slot(&self) -> Option<Slot> {
        self.deployment.as_ref().and_then(|d| d.slot)
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disposal {
    pub location: String,
    pub not_before: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// The spec hash whose pod was refused.
    pub spec_hash: String,
    /// The API server's message.
    pub message: String,
    pub at: String,
    pub attempts: i32,
}

/// One deployed version of the job.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The spec hash of its pods.
    pub hash: String,
    /// Its spec, as JSON (the spec itself may since have changed).
    pub spec: String,
    /// The checkpoint lineage: its replicas checkpoint under `<state location>/<lineage>/`, so a
    /// recreated replica resumes from this version's own checkpoints.
    pub lineage: String,
    /// Where this version first restored from; `None`: it started empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
    /// Where its replicas checkpoint (`<job's storage>/<lineage>`); absent without a state
    /// location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_location: Option<String>,
    /// The sidecar image its pods run: recorded, so that a new operator default reaches a job
    /// only at its next upgrade, never by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_image: Option<String>,
    /// Which set of pod names it runs under: absent, `<job>-<index>`; a warm handover brings
    /// the new version up beside the old one under the other set, `<job>-blue-<index>` or
    /// `<job>-green-<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
}

/// A set of pod names, so that two versions can run side by side during a warm handover.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "blue" => Some(Slot::Blue),
            "green" => Some(Slot::Green),
            _ => None,
        }
    }

    /// The set a warm handover from `current` brings the new version up under.
    pub fn next(current: Option<Slot>) -> Slot {
        match current {
            Some(Slot::Green) => Slot::Blue,
            _ => Slot::Green,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationKind {
    /// A new spec (image, config, parallelism...).
    Upgrade,
    /// Back to the last stable spec after an upgrade did not become ready.
    Rollback,
    /// Stop with a savepoint and remove the pods.
    Suspend,
    /// Start again from the suspend savepoint.
    Resume,
    /// A savepoint on demand or on schedule; the job keeps running.
    Savepoint,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Step {
    /// A warm handover's first step: the new version's pods restore the bulk of the state from
    /// the old version's latest checkpoints while the old version serves.
    Warming,
    /// Taking the savepoint (with stop: writes fenced first).
    Savepointing,
    /// A warm handover after the savepoint: the old pods stop, the new ones restore only what
    /// the savepoint added and go live.
    Promoting,
    /// Deleting the old version's pods.
    Stopping,
    /// Creating the new version's pods.
    Starting,
    /// Waiting for every new replica to be ready.
    WaitingReady,
    /// An abandoned stop-with-savepoint: letting the old replicas write again.
    Unfencing,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub kind: OperationKind,
    pub step: Step,
    /// Why: upgrade, rescale, suspend, resume, rollback, trigger, periodic, restart.
    pub reason: String,
    /// The version being brought up (absent for suspend and plain savepoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Deployment>,
    /// The savepoint this operation takes or took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint: Option<String>,
    /// Whether the savepoint completed (recorded before the old pods are stopped).
    #[serde(default)]
    pub savepoint_complete: bool,
    /// When the first replica fenced its writes for the savepoint: the write pause starts here
    /// (a savepoint's first phase runs while the old version still writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced_at: Option<String>,
    pub started_at: String,
    pub step_started_at: String,
    /// Identifies the operation to the sidecars: a savepoint request is idempotent per id.
    #[serde(default)]
    pub id: String,
    /// When the current step gives up (fixed when the step starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Why the operation is being abandoned (step Unfencing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// A lineage that held no checkpoint when the operation was planned (so the target restores
    /// from the point that lineage started from): checked again once its pods have stopped,
    /// since their final checkpoints may have come since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck_lineage: Option<String>,
    /// A warm handover: the old version's checkpoint location its new pods restore the bulk
    /// from while it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_from: Option<String>,
}

impl Operation {
    /// The pod set of a warm handover whose new pods run beside the old ones now (from their
    /// creation until they are promoted).
    pub fn standby_slot(&self) -> Option<Slot> {
        let beside = matches!(
            self.step,
            Step::Warming | Step::Savepointing | Step::Promoting
        );
        self.warm_from
            .as_ref()
            .filter(|_| beside)
            .and(self.target.as_ref()?.slot)
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Pods are being created or are starting.
    Deploying,
    /// Every replica is ready.
    Running,
    /// A change of the spec is being rolled out.
    Upgrading,
    /// Stopped with a savepoint; no pods.
    Suspended,
    /// The spec is invalid or the job cannot run; see the conditions.
    Failed,
    /// The last change did not become ready and was rolled back.
    RolledBack,
    /// Deployed, with no operation in flight, and a replica not ready: it is being recreated, or it
    /// fails (see the Degraded condition).
    Recovering,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Deploying => "Deploying",
            Phase::Running => "Running",
            Phase::Upgrading => "Upgrading",
            Phase::Suspended => "Suspended",
            Phase::Failed => "Failed",
            Phase::RolledBack => "RolledBack",
            Phase::Recovering => "Recovering",
        }
    }
}

/// A standard condition (`metav1.Condition`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub last_transition_time: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRef {
    pub id: i64,
    pub time: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCheckpoint {
    pub replica: i32,
    pub id: i64,
    pub time: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRef {
    pub location: String,
    pub time: String,
    /// Why it was taken: upgrade, rescale, suspend, trigger, periodic.
    pub reason: String,
    /// Parallelism it was taken at.
    #[serde(default)]
    pub parallelism: i32,
    /// Whether every file is in the savepoint's own location. A savepoint taken in two phases
    /// first references its replicas' checkpoint files; the operator makes the server-side copies
    /// once no operation runs. Absent: taken before this was recorded (self-contained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_contained: Option<bool>,
    /// When a failed copy is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_retry_at: Option<String>,
}

impl StreamJob {
    pub fn rollback_enabled(&self) -> bool {
        self.spec.rollback.as_ref().is_none_or(|r| r.enabled)
    }
}
