//! Builds the objects a StreamJob runs on, as pure functions of the job (unit-testable without a
//! server): one pod per replica with the sidecar as a native sidecar container, per-replica
//! PersistentVolumeClaims when asked, a headless Service and the admin token Secret.
//!
//! Output is deterministic (sorted maps, fixed ordering), so re-applying an unchanged job changes
//! nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Service, ServiceAccountTokenProjection, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::crd::{Compression, IndexFilters, Slot, StateKind, StreamJob, WebIdentitySpec};

pub const SIDECAR_CONTAINER: &str = "stator-sidecar";
pub const APP_CONTAINER: &str = "app";
pub const ADMIN_PORT: i32 = 9601;
pub const SOCKET_DIR: &str = "/var/run/stator";
pub const SOCKET_PATH: &str = "/var/run/stator/state.sock";
pub const DATA_DIR: &str = "/var/lib/stator";
pub const TOKEN_DIR: &str = "/etc/stator/admin";
pub const TOKEN_KEY: &str = "token";
pub const CREDENTIALS_DIR: &str = "/etc/stator/s3";
/// Where a sidecar with a web identity finds its token.
pub const WEB_IDENTITY_DIR: &str = "/var/run/secrets/stator/aws";
pub const DEFAULT_WEB_IDENTITY_AUDIENCE: &str = "sts.amazonaws.com";
/// A writable directory for the app, whose root filesystem is read-only by default.
pub const APP_TMP_DIR: &str = "/tmp";
/// The non-root user the sidecar runs as.
pub const SIDECAR_UID: i64 = 65532;

pub const LABEL_JOB: &str = "stator.dev/job";
pub const LABEL_REPLICA: &str = "stator.dev/replica";
/// The pod set (`blue` or `green`) of a pod a warm handover brought up; absent on `<job>-<index>`.
pub const LABEL_SLOT: &str = "stator.dev/slot";
/// On a pod created to warm up beside the old version: where its sidecar restores the bulk of
/// the state from before it is promoted.
pub const ANNOTATION_WARM_FROM: &str = "stator.dev/warm-from";
pub const ANNOTATION_SPEC_HASH: &str = "stator.dev/spec-hash";
pub const ANNOTATION_RESTORE_FROM: &str = "stator.dev/restore-from";

/// A pod's grace period when the spec sets none.
pub const DEFAULT_GRACE_SECONDS: i64 = 60;

/// What a replica pod needs beyond the job itself.
#[derive(Debug, Clone)]
pub struct PodInputs<'a> {
    /// The sidecar image the deployment recorded.
    pub sidecar_image: &'a str,
    /// The job's identity in storage: the sidecar records it in its manifests and refuses to
    /// continue from another job's checkpoints.
    pub job_id: Option<&'a str>,
    pub spec_hash: &'a str,
    /// Where the new pods restore from: a savepoint or checkpoint location; `None` means the
    /// replica's own latest checkpoint (or empty when there is none).
    pub restore_from: Option<&'a str>,
    /// Where the replicas checkpoint: the job's state location plus the deployment's lineage.
    pub state_location: Option<&'a str>,
    /// The deployment's pod set.
    pub slot: Option<Slot>,
    /// A warm handover's standby pod: its sidecar restores from here and waits to be promoted.
    pub warm_from: Option<&'a str>,
}

pub fn selector_labels(job: &StreamJob) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "stator-operator".to_owned(),
        ),
        (LABEL_JOB.to_owned(), job.name_any()),
    ])
}

/// The label selector of a job's pods, as a string (for the scale subresource and listing).
pub fn selector(job: &StreamJob) -> String {
    selector_labels(job)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels(job: &StreamJob) -> BTreeMap<String, String> {
    let mut out = selector_labels(job);
    out.insert(
        "app.kubernetes.io/name".to_owned(),
        "stator-streamjob".to_owned(),
    );
    out.insert("app.kubernetes.io/instance".to_owned(), job.name_any());
    out
}

pub fn owner_reference(job: &StreamJob) -> OwnerReference {
    // A StreamJob read from the API always has a uid.
    let mut owner = job.controller_owner_ref(&()).unwrap_or_default();
    owner.block_owner_deletion = Some(true);
    owner
}

fn meta(job: &StreamJob, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: job.namespace(),
        labels: Some(labels(job)),
        owner_references: Some(vec![owner_reference(job)]),
        ..Default::default()
    }
}

pub fn pod_name(job: &StreamJob, index: i32) -> String {
    slot_pod_name(job, None, index)
}

/// Replica `index`'s pod in pod set `slot`.
pub fn slot_pod_name(job: &StreamJob, slot: Option<Slot>, index: i32) -> String {
    match slot {
        None => format!("{}-{index}", job.name_any()),
        Some(s) => format!("{}-{}-{index}", job.name_any(), s.name()),
    }
}

pub fn claim_name(job: &StreamJob, index: i32) -> String {
    format!("data-{}-{index}", job.name_any())
}

pub fn service_name(job: &StreamJob) -> String {
    job.name_any()
}

pub fn token_secret_name(job: &StreamJob) -> String {
    format!("{}-admin-token", job.name_any())
}

/// The job's own directory under the user's state location, so jobs never share storage.
pub fn state_location(job: &StreamJob) -> Option<String> {
    let base = job.spec.state.location.as_deref()?;
    Some(format!(
        "{}/{}/{}",
        base.trim_end_matches('/'),
        job.namespace().unwrap_or_default(),
        job.name_any()
    ))
}

/// A short hash of everything in the spec that shapes the pods. A change of it is an upgrade.
/// The operator's default sidecar image is not part of it: a deployment records the image it
/// runs, so an operator upgrade never restarts jobs by itself.
pub fn spec_hash(job: &StreamJob) -> String {
    let s = &job.spec;
    let shaping = serde_json::json!({
        "app": s.app,
        "pod": s.pod,
        "parallelism": s.parallelism,
        "maxParallelism": s.max_parallelism,
        "state": {
            "location": s.state.location,
            "credentialsSecret": s.state.credentials_secret,
            "s3": s.state.s3,
            "checkpointIntervalSeconds": s.state.checkpoint_interval_seconds,
            "retainedCheckpoints": s.state.retained_checkpoints,
            "rocksdb": s.state.rocksdb,
            "volume": s.state.volume,
            "states": s.state.states,
            "operatorStates": s.state.operator_states,
        },
        "restartNonce": s.restart_nonce,
        "sidecar": s.sidecar,
    });
    let digest = Sha256::digest(shaping.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

/// What every container Stator builds runs with unless told otherwise: the `restricted` Pod Security
/// Standard (non-root, no privilege escalation, no capabilities, the runtime's seccomp profile) and a
/// read-only root filesystem.
fn hardened_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// The sidecar's: hardened, as a fixed numeric non-root user.
fn sidecar_security_context() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(SIDECAR_UID),
        run_as_group: Some(SIDECAR_UID),
        ..hardened_security_context()
    }
}

/// A user's container security settings over the hardened defaults, field by field: what the user
/// sets wins, what they leave out stays hardened.
fn app_security_context(user: Option<&SecurityContext>) -> SecurityContext {
    let base = hardened_security_context();
    let Some(u) = user.cloned() else {
        return base;
    };
    // The API server refuses allowPrivilegeEscalation: false beside privileged or CAP_SYS_ADMIN:
    // a user who asks for either gets what they asked for (and Pod Security decides), not a 422.
    let sys_admin = u
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .is_some_and(|add| add.iter().any(|c| c == "SYS_ADMIN" || c == "CAP_SYS_ADMIN"));
    let escalation_default = if u.privileged == Some(true) || sys_admin {
        None
    } else {
        base.allow_privilege_escalation
    };
    SecurityContext {
        allow_privilege_escalation: u.allow_privilege_escalation.or(escalation_default),
        app_armor_profile: u.app_armor_profile.or(base.app_armor_profile),
        capabilities: u.capabilities.or(base.capabilities),
        privileged: u.privileged.or(base.privileged),
        proc_mount: u.proc_mount.or(base.proc_mount),
        read_only_root_filesystem: u
            .read_only_root_filesystem
            .or(base.read_only_root_filesystem),
        run_as_group: u.run_as_group.or(base.run_as_group),
        run_as_non_root: u.run_as_non_root.or(base.run_as_non_root),
        run_as_user: u.run_as_user.or(base.run_as_user),
        se_linux_options: u.se_linux_options.or(base.se_linux_options),
        seccomp_profile: u.seccomp_profile.or(base.seccomp_profile),
        windows_options: u.windows_options.or(base.windows_options),
    }
}

/// The pod's security settings: the user's over the defaults, field by field.
fn pod_security_context(user: Option<&PodSecurityContext>) -> PodSecurityContext {
    let base = PodSecurityContext {
        run_as_non_root: Some(true),
        fs_group: Some(SIDECAR_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    };
    let Some(u) = user.cloned() else {
        return base;
    };
    PodSecurityContext {
        app_armor_profile: u.app_armor_profile.or(base.app_armor_profile),
        fs_group: u.fs_group.or(base.fs_group),
        fs_group_change_policy: u.fs_group_change_policy.or(base.fs_group_change_policy),
        run_as_group: u.run_as_group.or(base.run_as_group),
        run_as_non_root: u.run_as_non_root.or(base.run_as_non_root),
        run_as_user: u.run_as_user.or(base.run_as_user),
        se_linux_change_policy: u.se_linux_change_policy.or(base.se_linux_change_policy),
        se_linux_options: u.se_linux_options.or(base.se_linux_options),
        seccomp_profile: u.seccomp_profile.or(base.seccomp_profile),
        supplemental_groups: u.supplemental_groups.or(base.supplemental_groups),
        supplemental_groups_policy: u
            .supplemental_groups_policy
            .or(base.supplemental_groups_policy),
        sysctls: u.sysctls.or(base.sysctls),
        windows_options: u.windows_options.or(base.windows_options),
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn sidecar_env(job: &StreamJob, index: i32, inputs: &PodInputs<'_>) -> Vec<EnvVar> {
    let s = &job.spec;
    let mut out = vec![
        field_env("POD_IP", "status.podIP"),
        env("STATOR_SOCKET", SOCKET_PATH),
        env("STATOR_DATA_DIR", DATA_DIR),
        env("STATOR_REPLICA_INDEX", index.to_string()),
        env("STATOR_PARALLELISM", s.parallelism.to_string()),
        env("STATOR_MAX_PARALLELISM", s.max_parallelism.to_string()),
        env("STATOR_ADMIN_ADDR", format!("$(POD_IP):{ADMIN_PORT}")),
        env(
            "STATOR_ADMIN_TOKEN_FILE",
            format!("{TOKEN_DIR}/{TOKEN_KEY}"),
        ),
        env("STATOR_LOG_FORMAT", "json"),
    ];
    if let Some(id) = inputs.job_id {
        out.push(env("STATOR_JOB_ID", id));
    }
    if let Some(location) = inputs.state_location {
        out.push(env("STATOR_STATE_LOCATION", location));
        out.push(env(
            "STATOR_FINAL_CHECKPOINT_TIMEOUT_SECS",
            final_checkpoint_timeout(grace_seconds(job)).to_string(),
        ));
        out.push(env(
            "STATOR_CHECKPOINT_INTERVAL_SECS",
            s.state.checkpoint_interval_seconds.to_string(),
        ));
        out.push(env(
            "STATOR_RETAINED_CHECKPOINTS",
            s.state.retained_checkpoints.to_string(),
        ));
    }
    if let Some(from) = inputs.restore_from {
        out.push(env("STATOR_RESTORE_FROM", from));
    }
    if let Some(from) = inputs.warm_from {
        out.push(env("STATOR_WARM_FROM", from));
    }
    if let Some(s3) = &s.state.s3 {
        if let Some(endpoint) = &s3.endpoint {
            out.push(env("STATOR_S3_ENDPOINT", endpoint.clone()));
        }
        if let Some(region) = &s3.region {
            out.push(env("STATOR_S3_REGION", region.clone()));
        }
        if s3.path_style {
            out.push(env("STATOR_S3_PATH_STYLE", "true"));
        }
    }
    if s.state.credentials_secret.is_some() {
        out.push(env("STATOR_S3_CREDENTIALS_DIR", CREDENTIALS_DIR));
    }
    if let Some(id) = s.state.s3.as_ref().and_then(|s3| s3.web_identity.as_ref()) {
        // The AWS SDK's web-identity provider, from the standard variables.
        out.push(env("AWS_ROLE_ARN", id.role_arn.clone()));
        out.push(env(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            format!("{WEB_IDENTITY_DIR}/token"),
        ));
        out.push(env(
            "AWS_ROLE_SESSION_NAME",
            format!("stator-{}-{index}", job.name_any()),
        ));
        if let Some(sts) = &id.sts_endpoint {
            out.push(env("AWS_ENDPOINT_URL_STS", sts.clone()));
        }
        if let Some(region) = s.state.s3.as_ref().and_then(|s3| s3.region.as_ref()) {
            // The token service is regional too.
            out.push(env("AWS_REGION", region.clone()));
        }
    }
    if let Some(r) = &s.state.rocksdb {
        if let Some(mb) = r.block_cache_mb {
            out.push(env("STATOR_BLOCK_CACHE_MB", mb.to_string()));
        }
        if let Some(mb) = r.write_buffer_mb {
            out.push(env("STATOR_WRITE_BUFFER_MB", mb.to_string()));
        }
        if let Some(mb) = r.memtable_budget_mb {
            out.push(env("STATOR_MEMTABLE_BUDGET_MB", mb.to_string()));
        }
        if let Some(c) = r.compression {
            let c = match c {
                Compression::None => "none",
                Compression::Lz4 => "lz4",
                Compression::Zstd => "zstd",
            };
            out.push(env("STATOR_COMPRESSION", c));
        }
        if let Some(layout) = r.index_filters {
            let layout = match layout {
                IndexFilters::Partitioned => "partitioned",
                IndexFilters::Whole => "whole",
            };
            out.push(env("STATOR_INDEX_FILTERS", layout));
        }
    }
    if !s.state.states.is_empty() {
        let decls: Vec<String> = s
            .state
            .states
            .iter()
            .map(|d| {
                let kind = match d.kind {
                    StateKind::Value => "value",
                    StateKind::List => "list",
                    StateKind::Map => "map",
                };
                match d.ttl_ms {
                    Some(ttl) if ttl > 0 => format!("{}:{kind}:{ttl}", d.name),
                    _ => format!("{}:{kind}", d.name),
                }
            })
            .collect();
        out.push(env("STATOR_STATES", decls.join(",")));
    }
    if !s.state.operator_states.is_empty() {
        let decls: Vec<String> = s
            .state
            .operator_states
            .iter()
            .map(|d| {
                let mode = match d.redistribution {
                    crate::crd::Redistribution::Split => "split",
                    crate::crd::Redistribution::Union => "union",
                };
                format!("{}:{mode}", d.name)
            })
            .collect();
        out.push(env("STATOR_OPERATOR_STATES", decls.join(",")));
    }
    out
}

/// Replica `index`'s pod.
pub fn pod(job: &StreamJob, index: i32, inputs: &PodInputs<'_>) -> Pod {
    let s = &job.spec;
    let overrides = s.pod.clone().unwrap_or_default();
    let name = slot_pod_name(job, inputs.slot, index);
    let mut meta = meta(job, name.clone());
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in &overrides.labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    labels.insert(LABEL_REPLICA.to_owned(), index.to_string());
    if let Some(slot) = inputs.slot {
        labels.insert(LABEL_SLOT.to_owned(), slot.name().to_owned());
    }
    let mut annotations = overrides.annotations.clone();
    annotations.insert(ANNOTATION_SPEC_HASH.to_owned(), inputs.spec_hash.to_owned());
    if let Some(from) = inputs.restore_from {
        annotations.insert(ANNOTATION_RESTORE_FROM.to_owned(), from.to_owned());
    }
    if let Some(from) = inputs.warm_from {
        annotations.insert(ANNOTATION_WARM_FROM.to_owned(), from.to_owned());
    }
    meta.annotations = Some(annotations);

    let sidecar_spec = s.sidecar.clone().unwrap_or_default();
    let mut sidecar_mounts = vec![
        mount("socket", SOCKET_DIR, false),
        mount("data", DATA_DIR, false),
        mount("admin-token", TOKEN_DIR, true),
    ];
    let mut volumes = vec![
        Volume {
            name: "socket".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                size_limit: None,
            }),
            ..Default::default()
        },
        data_volume(job, index),
        Volume {
            name: "admin-token".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(token_secret_name(job)),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(secret) = &s.state.credentials_secret {
        sidecar_mounts.push(mount("s3-credentials", CREDENTIALS_DIR, true));
        volumes.push(Volume {
            name: "s3-credentials".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(id) = s.state.s3.as_ref().and_then(|s3| s3.web_identity.as_ref()) {
        sidecar_mounts.push(mount("aws-identity", WEB_IDENTITY_DIR, true));
        volumes.push(web_identity_volume(id));
    }
    let sidecar = Container {
        name: SIDECAR_CONTAINER.to_owned(),
        image: Some(inputs.sidecar_image.to_owned()),
        image_pull_policy: sidecar_spec.image_pull_policy,
        // A native sidecar: starts before the app, stops after it, restarts on its own.
        restart_policy: Some("Always".to_owned()),
        env: Some(sidecar_env(job, index, inputs)),
        ports: Some(vec![ContainerPort {
            name: Some("admin".to_owned()),
            container_port: ADMIN_PORT,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".to_owned()),
                port: IntOrString::Int(ADMIN_PORT),
                ..Default::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".to_owned()),
                port: IntOrString::Int(ADMIN_PORT),
                ..Default::default()
            }),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        resources: Some(
            sidecar_spec
                .resources
                .unwrap_or_else(|| default_sidecar_resources(s)),
        ),
        // Its last log lines become the termination message the operator reports when it fails.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        security_context: Some(sidecar_security_context()),
        volume_mounts: Some(sidecar_mounts),
        ..Default::default()
    };

    let mut app_env = vec![
        env("STATOR_SOCKET", SOCKET_PATH),
        env("STATOR_REPLICA_INDEX", index.to_string()),
        env("STATOR_PARALLELISM", s.parallelism.to_string()),
        env("STATOR_MAX_PARALLELISM", s.max_parallelism.to_string()),
    ];
    app_env.extend(s.app.env.iter().cloned());
    let app = Container {
        name: APP_CONTAINER.to_owned(),
        image: Some(s.app.image.clone()),
        image_pull_policy: s.app.image_pull_policy.clone(),
        command: (!s.app.command.is_empty()).then(|| s.app.command.clone()),
        args: (!s.app.args.is_empty()).then(|| s.app.args.clone()),
        env: Some(app_env),
        ports: (!s.app.ports.is_empty()).then(|| s.app.ports.clone()),
        resources: s.app.resources.clone(),
        security_context: Some(app_security_context(s.app.security_context.as_ref())),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(vec![
            mount("socket", SOCKET_DIR, false),
            mount("tmp", APP_TMP_DIR, false),
        ]),
        ..Default::default()
    };
    volumes.push(Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });

    let pod_security = pod_security_context(overrides.security_context.as_ref());
    Pod {
        metadata: meta,
        spec: Some(PodSpec {
            init_containers: Some(vec![sidecar]),
            containers: vec![app],
            volumes: Some(volumes),
            restart_policy: Some("Always".to_owned()),
            hostname: Some(name),
            subdomain: Some(service_name(job)),
            node_selector: (!overrides.node_selector.is_empty()).then_some(overrides.node_selector),
            tolerations: (!overrides.tolerations.is_empty()).then_some(overrides.tolerations),
            affinity: overrides.affinity,
            service_account_name: overrides.service_account_name,
            automount_service_account_token: Some(false),
            security_context: Some(pod_security),
            termination_grace_period_seconds: Some(grace_seconds(job)),
            ..Default::default()
        }),
        status: None,
    }
}

/// A token of the pod's ServiceAccount for the cloud's token service, renewed by the kubelet. The pod
/// still mounts no Kubernetes API token (automountServiceAccountToken stays false).
fn web_identity_volume(id: &WebIdentitySpec) -> Volume {
    Volume {
        name: "aws-identity".to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(
                        id.audience
                            .clone()
                            .unwrap_or_else(|| DEFAULT_WEB_IDENTITY_AUDIENCE.to_owned()),
                    ),
                    expiration_seconds: Some(3600),
                    path: "token".to_owned(),
                }),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    }
}

/// The pod's termination grace period.
pub fn grace_seconds(job: &StreamJob) -> i64 {
    job.spec
        .pod
        .as_ref()
        .and_then(|p| p.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS)
}

/// How long the sidecar's final checkpoint on SIGTERM may take: within the grace period, leaving
/// time for the app to stop first (the sidecar stops after it) and for the upload to commit.
pub fn final_checkpoint_timeout(grace: i64) -> i64 {
    if grace >= 30 {
        grace - 15
    } else {
        (grace / 2).max(1)
    }
}

fn data_volume(job: &StreamJob, index: i32) -> Volume {
    let volume = job.spec.state.volume.as_ref();
    match volume.and_then(|v| v.persistent_volume_claim.as_ref()) {
        Some(_) => Volume {
            name: "data".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(job, index),
                read_only: None,
            }),
            ..Default::default()
        },
        None => Volume {
            name: "data".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: volume
                    .and_then(|v| v.empty_dir.as_ref())
                    .and_then(|e| e.size_limit.clone())
                    .map(Quantity),
            }),
            ..Default::default()
        },
    }
}

/// Replica `index`'s claim, when the job asks for persistent volumes.
pub fn claim(job: &StreamJob, index: i32) -> Option<PersistentVolumeClaim> {
    let spec = job
        .spec
        .state
        .volume
        .as_ref()?
        .persistent_volume_claim
        .as_ref()?;
    let mut meta = meta(job, claim_name(job, index));
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(LABEL_REPLICA.to_owned(), index.to_string());
    // Claims keep the job's state when the policy says Retain: no owner reference then.
    if job.spec.state.on_delete == crate::crd::StateDeletePolicy::Retain {
        meta.owner_references = None;
    }
    Some(PersistentVolumeClaim {
        metadata: meta,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: spec.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(spec.size.clone()),
                )])),
                limits: None,
            }),
            ..Default::default()
        }),
        status: None,
    })
}

/// The headless Service: stable DNS names for the replicas and the admin port.
pub fn service(job: &StreamJob) -> Service {
    Service {
        metadata: meta(job, service_name(job)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(job)),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some("admin".to_owned()),
                port: ADMIN_PORT,
                target_port: Some(IntOrString::Int(ADMIN_PORT)),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The Secret holding the sidecars' admin token. Created once; never re-generated or logged.
pub fn token_secret(job: &StreamJob, token: &str) -> k8s_openapi::api::core::v1::Secret {
    k8s_openapi::api::core::v1::Secret {
        metadata: meta(job, token_secret_name(job)),
        string_data: Some(BTreeMap::from([(TOKEN_KEY.to_owned(), token.to_owned())])),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    }
}

/// A new random admin token: 32 bytes, hex.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sidecar's sizes when the spec gives none (the sidecar's own flag defaults).
const DEFAULT_BLOCK_CACHE_MB: i64 = 64;
const DEFAULT_MEMTABLE_BUDGET_MB: i64 = 128;
/// Memory besides the block cache and memtables: connection buffers (a 16 MiB frame at most
/// each), transfer buffers of checkpoints and restores, RocksDB's indexes and the binary.
const SIDECAR_OVERHEAD_MB: i64 = 128;

/// Requests the sidecar's memory budget (block cache + memtable budget + overhead) and 100m
/// CPU; limits memory to twice the budget, so a burst of large frames is not an OOM kill. No
/// CPU limit: throttling a state store stalls the app on every record.
fn default_sidecar_resources(s: &crate::crd::StreamJobSpec) -> ResourceRequirements {
    let rocks = s.state.rocksdb.as_ref();
    let cache = rocks
        .and_then(|r| r.block_cache_mb)
        .map_or(DEFAULT_BLOCK_CACHE_MB, i64::from);
    let memtables = rocks
        .and_then(|r| r.memtable_budget_mb)
        .map_or(DEFAULT_MEMTABLE_BUDGET_MB, i64::from);
    let budget = cache + memtables + SIDECAR_OVERHEAD_MB;
    let mi = |n: i64| Quantity(format!("{n}Mi"));
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), mi(budget)),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), mi(2 * budget))])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::job;

    fn inputs(hash: &str) -> PodInputs<'_> {
        PodInputs {
            sidecar_image: "ghcr.io/stator/stator-sidecar:test",
            job_id: Some("uid-wc"),
            spec_hash: hash,
            restore_from: None,
            state_location: Some("s3://bucket/jobs/default/wc/l1"),
            slot: None,
            warm_from: None,
        }
    }

    fn env_of<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
        c.env
            .as_ref()?
            .iter()
            .find(|e| e.name == name)?
            .value
            .as_deref()
    }

    #[test]
    fn a_privileged_app_is_not_given_a_combination_the_api_server_refuses() {
        let asked = SecurityContext {
            privileged: Some(true),
            ..Default::default()
        };
        let sc = app_security_context(Some(&asked));
        assert_eq!(sc.privileged, Some(true));
        assert_eq!(sc.allow_privilege_escalation, None);
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(true),
            "the rest stays hardened"
        );
        let asked = SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(vec!["SYS_ADMIN".into()]),
                drop: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            app_security_context(Some(&asked)).allow_privilege_escalation,
            None
        );
        let asked = SecurityContext {
            run_as_user: Some(1000),
            ..Default::default()
        };
        assert_eq!(
            app_security_context(Some(&asked)).allow_privilege_escalation,
            Some(false)
        );
    }

    #[test]
    fn pod_runs_the_sidecar_as_a_native_sidecar_sharing_a_private_socket_volume() {
        let j = job("wc")
            .location("s3://bucket/jobs")
            .state("counts")
            .build();
        let pod = pod(&j, 1, &inputs("abc"));
        let spec = pod.spec.unwrap();
        let sidecar = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(sidecar.name, SIDECAR_CONTAINER);
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            sidecar.image.as_deref(),
            Some("ghcr.io/stator/stator-sidecar:test")
        );
        assert_eq!(env_of(sidecar, "STATOR_REPLICA_INDEX"), Some("1"));
        assert_eq!(env_of(sidecar, "STATOR_PARALLELISM"), Some("2"));
        assert_eq!(env_of(sidecar, "STATOR_MAX_PARALLELISM"), Some("128"));
        assert_eq!(
            env_of(sidecar, "STATOR_STATE_LOCATION"),
            Some("s3://bucket/jobs/default/wc/l1")
        );
        assert_eq!(
            state_location(&j).as_deref(),
            Some("s3://bucket/jobs/default/wc")
        );
        assert_eq!(env_of(sidecar, "STATOR_STATES"), Some("counts:value"));
        assert_eq!(env_of(sidecar, "STATOR_ADMIN_ADDR"), Some("$(POD_IP):9601"));
        assert_eq!(env_of(sidecar, "STATOR_RESTORE_FROM"), None);
        assert_eq!(env_of(sidecar, "STATOR_JOB_ID"), Some("uid-wc"));
        let grace = spec.termination_grace_period_seconds.unwrap();
        let final_timeout: i64 = env_of(sidecar, "STATOR_FINAL_CHECKPOINT_TIMEOUT_SECS")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            final_timeout < grace,
            "the final checkpoint ({final_timeout} s) ends within the grace period ({grace} s)"
        );
        let probe = sidecar
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        let sc = sidecar.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));

        let app = &spec.containers[0];
        assert_eq!(app.image.as_deref(), Some("ghcr.io/stator/wordcount:1"));
        assert_eq!(env_of(app, "STATOR_SOCKET"), Some(SOCKET_PATH));
        let app_mounts: Vec<_> = app
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            app_mounts,
            ["socket", "tmp"],
            "the app sees the socket and its /tmp, not the data or the token"
        );
        let socket = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "socket")
            .unwrap();
        assert!(
            socket.empty_dir.is_some(),
            "the socket lives in a pod-private volume"
        );
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[LABEL_REPLICA], "1");
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()[ANNOTATION_SPEC_HASH],
            "abc"
        );
        assert_eq!(
            pod.metadata.owner_references.as_ref().unwrap()[0].kind,
            "StreamJob"
        );
    }

    /// What the `restricted` Pod Security Standard checks of a container.
    fn assert_restricted(c: &Container, pod: &PodSecurityContext) {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()]),
            "{}",
            c.name
        );
        assert_ne!(sc.privileged, Some(true), "{}", c.name);
        assert!(
            sc.run_as_non_root.or(pod.run_as_non_root) == Some(true),
            "{}",
            c.name
        );
        let seccomp = sc.seccomp_profile.as_ref().or(pod.seccomp_profile.as_ref());
        assert_eq!(
            seccomp.map(|p| p.type_.as_str()),
            Some("RuntimeDefault"),
            "{}",
            c.name
        );
    }

    #[test]
    fn every_container_passes_the_restricted_pod_security_standard_by_default() {
        let j = job("wc").location("s3://bucket/jobs").build();
        let spec = pod(&j, 0, &inputs("h")).spec.unwrap();
        let pod_sc = spec.security_context.clone().unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(pod_sc.fs_group, Some(SIDECAR_UID));
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            assert_restricted(c, &pod_sc);
            assert_eq!(
                c.security_context
                    .as_ref()
                    .unwrap()
                    .read_only_root_filesystem,
                Some(true),
                "{} has a read-only root filesystem",
                c.name
            );
        }
        let tmp = spec.volumes.unwrap().into_iter().find(|v| v.name == "tmp");
        assert!(
            tmp.and_then(|v| v.empty_dir).is_some(),
            "the app writes to an emptyDir /tmp"
        );
    }

    #[test]
    fn the_specs_rocksdb_tuning_reaches_the_sidecar() {
        let mut j = job("wc").location("s3://bucket/jobs").build();
        let sidecar_env = |j: &StreamJob, name: &str| {
            let spec = pod(j, 0, &inputs("h")).spec.unwrap();
            env_of(&spec.init_containers.unwrap()[0], name).map(str::to_owned)
        };
        // Absent from the spec: the sidecar's own defaults.
        for name in [
            "STATOR_BLOCK_CACHE_MB",
            "STATOR_COMPRESSION",
            "STATOR_INDEX_FILTERS",
        ] {
            assert_eq!(sidecar_env(&j, name), None, "{name}");
        }
        j.spec.state.rocksdb = Some(crate::crd::RocksDbSpec {
            block_cache_mb: Some(512),
            write_buffer_mb: Some(32),
            memtable_budget_mb: Some(256),
            compression: Some(Compression::Zstd),
            index_filters: Some(IndexFilters::Whole),
        });
        for (name, value) in [
            ("STATOR_BLOCK_CACHE_MB", "512"),
            ("STATOR_WRITE_BUFFER_MB", "32"),
            ("STATOR_MEMTABLE_BUDGET_MB", "256"),
            ("STATOR_COMPRESSION", "zstd"),
            ("STATOR_INDEX_FILTERS", "whole"),
        ] {
            assert_eq!(sidecar_env(&j, name).as_deref(), Some(value), "{name}");
        }
        let parsed: crate::crd::RocksDbSpec =
            serde_json::from_str(r#"{"indexFilters": "partitioned"}"#).unwrap();
        assert_eq!(parsed.index_filters, Some(IndexFilters::Partitioned));
    }

    #[test]
    fn the_sidecar_requests_its_memory_budget_unless_the_spec_sets_resources() {
        let memory = |r: &ResourceRequirements, which: &str| {
            let m = if which == "requests" {
                &r.requests
            } else {
                &r.limits
            };
            m.as_ref()
                .and_then(|m| m.get("memory"))
                .map(|q| q.0.clone())
        };
        let sidecar_resources = |j: &StreamJob| {
            let spec = pod(j, 0, &inputs("h")).spec.unwrap();
            spec.init_containers.unwrap()[0].resources.clone().unwrap()
        };
        let mut j = job("wc").location("s3://bucket/jobs").build();
        let r = sidecar_resources(&j);
        // 64 MiB block cache + 128 MiB memtables + 128 MiB for the rest: the sidecar's defaults.
        assert_eq!(memory(&r, "requests").as_deref(), Some("320Mi"));
        assert_eq!(memory(&r, "limits").as_deref(), Some("640Mi"));
        assert!(
            r.limits.as_ref().unwrap().get("cpu").is_none(),
            "no CPU limit: throttling stalls every record"
        );
        j.spec.state.rocksdb = Some(crate::crd::RocksDbSpec {
            block_cache_mb: Some(512),
            memtable_budget_mb: Some(256),
            ..Default::default()
        });
        let r = sidecar_resources(&j);
        assert_eq!(memory(&r, "requests").as_deref(), Some("896Mi"));
        let given = ResourceRequirements {
            requests: Some(BTreeMap::from([("memory".into(), Quantity("1Gi".into()))])),
            ..Default::default()
        };
        j.spec.sidecar = Some(crate::crd::SidecarSpec {
            resources: Some(given.clone()),
            ..Default::default()
        });
        assert_eq!(
            sidecar_resources(&j),
            given,
            "the spec's resources, as given"
        );
        let spec = pod(&j, 0, &inputs("h")).spec.unwrap();
        let sidecar = &spec.init_containers.unwrap()[0];
        assert_eq!(
            env_of(sidecar, "STATOR_MEMTABLE_BUDGET_MB"),
            Some("256"),
            "the budget reaches the sidecar"
        );
    }

    #[test]
    fn a_users_security_settings_merge_over_the_hardened_defaults() {
        let mut j = job("wc").location("s3://bucket/jobs").build();
        j.spec.app.security_context = Some(SecurityContext {
            read_only_root_filesystem: Some(false),
            run_as_user: Some(1000),
            ..Default::default()
        });
        j.spec.pod = Some(crate::crd::PodOverrides {
            security_context: Some(PodSecurityContext {
                run_as_group: Some(2000),
                ..Default::default()
            }),
            ..Default::default()
        });
        let spec = pod(&j, 0, &inputs("h")).spec.unwrap();
        let pod_sc = spec.security_context.clone().unwrap();
        assert_eq!(pod_sc.run_as_group, Some(2000), "the user's field");
        assert_eq!(pod_sc.run_as_non_root, Some(true), "the defaults stay");
        assert_eq!(
            pod_sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        let app = &spec.containers[0];
        let sc = app.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(false));
        assert_eq!(sc.run_as_user, Some(1000));
        assert_restricted(app, &pod_sc);
        let sidecar = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            sidecar
                .security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true),
            "the app's settings never loosen the sidecar"
        );
    }

    #[test]
    fn a_web_identity_gives_the_sidecar_a_cloud_token_and_no_api_token() {
        let mut j = job("wc").location("s3://bucket/jobs").build();
        j.spec.state.s3 = Some(crate::crd::S3Spec {
            web_identity: Some(WebIdentitySpec {
                role_arn: "arn:aws:iam::1:role/stator".into(),
                audience: None,
                sts_endpoint: None,
            }),
            ..Default::default()
        });
        let spec = pod(&j, 1, &inputs("h")).spec.unwrap();
        let sidecar = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            env_of(sidecar, "AWS_ROLE_ARN"),
            Some("arn:aws:iam::1:role/stator")
        );
        assert_eq!(
            env_of(sidecar, "AWS_WEB_IDENTITY_TOKEN_FILE"),
            Some("/var/run/secrets/stator/aws/token")
        );
        let volume = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "aws-identity")
            .unwrap();
        let token = volume.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
            .service_account_token
            .as_ref()
            .unwrap();
        assert_eq!(token.audience.as_deref(), Some("sts.amazonaws.com"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert!(
            spec.containers[0]
                .volume_mounts
                .iter()
                .flatten()
                .all(|m| m.name != "aws-identity"),
            "only the sidecar holds the cloud token"
        );
    }

    #[test]
    fn restore_pointer_reaches_the_sidecar() {
        let j = job("wc").location("s3://b/p").build();
        let pod = pod(
            &j,
            0,
            &PodInputs {
                restore_from: Some("s3://b/p/default/wc/savepoints/sp-1"),
                ..inputs("h")
            },
        );
        let sidecar = &pod.spec.unwrap().init_containers.unwrap()[0];
        assert_eq!(
            env_of(sidecar, "STATOR_RESTORE_FROM"),
            Some("s3://b/p/default/wc/savepoints/sp-1")
        );
    }

    #[test]
    fn a_standby_pod_of_the_other_set_is_named_labelled_and_told_where_to_warm_from() {
        let j = job("wc").location("s3://b/p").build();
        let pod = pod(
            &j,
            1,
            &PodInputs {
                restore_from: Some("s3://b/p/default/wc/uid/savepoints/upgrade-3"),
                slot: Some(Slot::Green),
                warm_from: Some("s3://b/p/default/wc/uid/l1"),
                ..inputs("h")
            },
        );
        assert_eq!(pod.metadata.name.as_deref(), Some("wc-green-1"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_SLOT], "green");
        assert_eq!(labels[LABEL_REPLICA], "1");
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()[ANNOTATION_WARM_FROM],
            "s3://b/p/default/wc/uid/l1"
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("wc-green-1"));
        let sidecar = &spec.init_containers.unwrap()[0];
        assert_eq!(
            env_of(sidecar, "STATOR_WARM_FROM"),
            Some("s3://b/p/default/wc/uid/l1")
        );
        assert_eq!(
            env_of(sidecar, "STATOR_RESTORE_FROM"),
            Some("s3://b/p/default/wc/uid/savepoints/upgrade-3")
        );
        // The first set keeps the names pods had before handovers existed.
        assert_eq!(slot_pod_name(&j, None, 1), "wc-1");
        assert_eq!(slot_pod_name(&j, Some(Slot::Blue), 0), "wc-blue-0");
    }

    #[test]
    fn spec_hash_changes_with_what_shapes_pods_only() {
        let base = job("wc").build();
        let h = spec_hash(&base);
        assert_eq!(h, spec_hash(&base.clone()), "stable");
        assert_ne!(h, spec_hash(&job("wc").image("other:2").build()));
        assert_ne!(h, spec_hash(&job("wc").parallelism(3).build()));
        let mut suspended = base.clone();
        suspended.spec.suspend = true;
        suspended.spec.savepoint = Some(Default::default());
        assert_eq!(
            h,
            spec_hash(&suspended),
            "suspend and savepoint settings do not reshape pods"
        );
    }

    #[test]
    fn claims_only_when_asked_and_retained_by_default() {
        let mut j = job("wc").build();
        assert!(claim(&j, 0).is_none());
        j.spec.state.volume = Some(crate::crd::VolumeSpec {
            empty_dir: None,
            persistent_volume_claim: Some(crate::crd::ClaimSpec {
                size: "1Gi".into(),
                storage_class_name: None,
                delete_on_scale_down: false,
            }),
        });
        let c = claim(&j, 0).unwrap();
        assert_eq!(c.metadata.name.as_deref(), Some("data-wc-0"));
        assert!(
            c.metadata.owner_references.is_none(),
            "Retain: the claim outlives the job"
        );
        let pod = pod(&j, 0, &inputs("h"));
        let data = pod
            .spec
            .unwrap()
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "data")
            .unwrap();
        assert_eq!(
            data.persistent_volume_claim.unwrap().claim_name,
            "data-wc-0"
        );
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn crd_has_scale_status_printer_columns_and_rules() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&StreamJob::crd()).unwrap();
        for needle in [
            "\"specReplicasPath\":\".spec.parallelism\"",
            "\"statusReplicasPath\":\".status.replicas\"",
            "\"shortNames\":[\"sj\"]",
            "\"name\":\"Last Savepoint\"",
            "self.parallelism <= self.maxParallelism",
            "self.maxParallelism == oldSelf.maxParallelism",
            "\"enum\":[\"stateless\",\"savepoint\",\"lastState\"]",
        ] {
            assert!(crd.contains(needle), "CRD lacks {needle}");
        }
    }
}
