//! What the planner is given and what it returns: plain values, so that the planner is a pure
//! function and its tests build these directly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::{Deployment, Slot, Step, StreamJobStatus};

/// What the operator observed about one job's world before planning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The job's replica pods by replica index: those of the deployed version's pod set.
    pub pods: BTreeMap<i32, PodView>,
    /// During a warm handover, the new version's pods beside them (their set is the operation's
    /// target's), by replica index; `ready` means warm: the sidecar restored the bulk and waits
    /// to be promoted (or was promoted).
    pub standby: BTreeMap<i32, PodView>,
    /// Pods of any other set (a handover that ended, or was abandoned): deleted.
    pub strays: Vec<Stray>,
    /// Replica indices that have a PersistentVolumeClaim.
    pub claims: BTreeSet<i32>,
    /// Problems with the spec (from `validate`); empty when it is valid.
    pub spec_problems: Vec<String>,
    /// What the spec refers to that does not exist (the credentials Secret): the pods cannot start.
    pub missing: Vec<String>,
    /// Answers to the effects performed just before this plan, in the same reconcile.
    pub outcomes: Vec<Outcome>,
    /// The latest committed checkpoint of each replica of one lineage, when the planner asked
    /// for it ([`Need::Checkpoints`]).
    pub checkpoints: Option<Checkpoints>,
    /// Each running replica's latest checkpoint as its sidecar reports it, when the executor
    /// asked (during operations, and now and then at rest): shown in the status. `None` for a
    /// replica: it answered that it has none (a new version's replica, say).
    pub replica_checkpoints: Option<BTreeMap<i32, Option<CheckpointInfo>>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    /// The spec hash the pod was built from.
    pub spec_hash: Option<String>,
    pub phase: PodPhase,
    /// Its Ready condition is True, or (while an operation waits for its new replicas, and
    /// shortly after) every app container is ready and its sidecar answered ready when the
    /// operator asked: the Ready condition follows at the kubelet's next readiness probe, and the
    /// operation does not wait for it.
    pub ready: bool,
    /// It has a deletion timestamp: it is stopping.
    pub deleting: bool,
    /// Why it does not run, when only the pod says so: a container crash-looping (with its last
    /// words), an image that cannot be pulled, a configuration the kubelet refused, no node.
    pub problem: Option<String>,
}

/// A pod of neither the deployed version's set nor a handover's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    pub slot: Option<Slot>,
    pub replica: i32,
    pub deleting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    /// Failed or Succeeded: it will not run again.
    Terminated,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoints {
    /// The lineage's state location.
    pub location: String,
    pub parallelism: i32,
    /// Replicas that have at least one committed checkpoint, with their latest.
    pub latest: BTreeMap<i32, CheckpointInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    pub id: u64,
    pub created_at: Timestamp,
}

/// The answer to an effect.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Savepoint {
        replica: i32,
        operation: String,
        answer: SavepointAnswer,
        /// When the replica fenced its writes for the savepoint (a stop-with-savepoint fences
        /// after its first phase), if it has.
        fenced_at: Option<Timestamp>,
        /// What the replica uploaded for it, once complete (the rest was in its checkpoints).
        uploaded_bytes: Option<u64>,
    },
    Unfenced {
        replica: i32,
        ok: bool,
    },
    /// A standby replica's answer to its promotion: `Ok` once it accepted it (it restores the
    /// delta and serves), else why not (unreachable, still warming, refused).
    Promoted {
        replica: i32,
        operation: String,
        result: Result<(), String>,
    },
    /// The API server refused the pod (admission, a 422, a quota): permanent for this spec.
    PodRejected {
        replica: i32,
        message: String,
    },
    Disposed {
        location: String,
        result: Result<usize, String>,
    },
    /// A savepoint was made self-contained: files and bytes copied now.
    Completed {
        location: String,
        result: Result<(usize, u64), String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SavepointAnswer {
    Pending,
    Complete,
    /// The sidecar reported the savepoint failed, or refused it (another operation's savepoint
    /// at the location).
    Failed(String),
    /// No answer now; the deadline decides.
    Unreachable(String),
}

/// Something the executor does after persisting the plan's status.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    CreateClaim {
        replica: i32,
        deployment: Deployment,
    },
    DeleteClaim {
        replica: i32,
    },
    /// Create replica `replica`'s pod of `deployment` (only when no pod of that index exists in
    /// its set). `warm_from`: a warm handover's standby pod, restoring from there first.
    CreatePod {
        replica: i32,
        deployment: Deployment,
        warm_from: Option<String>,
    },
    /// `force`: with a grace period of 0, for a pod that outlived its grace period.
    DeletePod {
        slot: Option<Slot>,
        replica: i32,
        force: bool,
        why: &'static str,
    },
    /// Tell a warm standby replica (of set `slot`) to restore `location`'s delta and serve.
    Promote {
        slot: Option<Slot>,
        replica: i32,
        location: String,
        operation: String,
    },
    /// Start or poll (the same idempotent request) a savepoint on one replica.
    TriggerSavepoint {
        replica: i32,
        location: String,
        stop: bool,
        operation: String,
    },
    Unfence {
        replica: i32,
    },
    /// Delete everything stored under a savepoint location.
    Dispose {
        location: String,
    },
    /// Copy the files a savepoint still references into its own location (server-side).
    CompleteSavepoint {
        location: String,
    },
    Event {
        warning: bool,
        reason: &'static str,
        note: String,
    },
    /// An operation ended: for the operator's metrics.
    OperationEnded {
        reason: String,
        ok: bool,
        seconds: f64,
        pause: Option<f64>,
    },
    SavepointEnded {
        reason: String,
        ok: bool,
        /// Bytes the replicas uploaded for it (a stop-with-savepoint: while fenced).
        uploaded_bytes: u64,
    },
    /// A step of an operation ended after `seconds`: for the operator's metrics.
    StepEnded {
        reason: String,
        step: Step,
        seconds: f64,
    },
}

/// An observation the planner needs before it can decide; the executor makes it and plans again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    Checkpoints { location: String, parallelism: i32 },
}

/// When to plan again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// At once, in the same reconcile: a step that needs no wait, or answers to the effects.
    Now,
    /// After this long, or at the next watch event, whichever comes first.
    After(Duration),
    /// Only on a watch event (the executor still adds a long safety requeue).
    Idle,
}

/// The planner's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Persisted, under the resourceVersion that was read, before any effect is performed.
    pub status: StreamJobStatus,
    pub effects: Vec<Effect>,
    pub wake: Wake,
    /// When set, nothing else in the plan counts: observe this and plan again.
    pub need: Option<Need>,
}

/// Operator-wide settings the planner depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The sidecar image of new deployments whose spec does not name one.
    pub default_sidecar_image: String,
    /// Accept `file://` state locations (a directory every replica and the operator share: a
    /// single-machine test cluster only).
    pub allow_file_locations: bool,
}
