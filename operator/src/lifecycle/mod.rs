//! The job's lifecycle: deploy, upgrade (by savepoint, last state or stateless), rescale,
//! suspend, resume, savepoints on demand and on schedule, rollback.
//!
//! A pure planner ([`plan`]: the job, its status, what was observed and the time in; the next
//! status, effects and when to plan again out) and a thin executor ([`execute`]: observes from
//! the watch caches, the sidecars and storage, persists the planned status under the
//! resourceVersion that was read, then performs the effects). Every step is recorded before it
//! is acted on and every effect is idempotent, so an operator killed anywhere resumes: no second
//! savepoint, no lost savepoint, no two pods for one replica. See docs/operator.md for the state
//! machine.
//!
//! Files: [`model`] (the planner's inputs and outputs), [`plan`] (starting operations and the
//! steady state), `steps` (the operation in flight), [`layout`] (storage paths and where a new
//! deployment's state comes from), [`retention`] (the savepoint history), [`summary`] (phase
//! and conditions), [`execute`] (the I/O).

pub mod execute;
pub mod layout;
pub mod model;
pub mod plan;
pub mod pod_problem;
pub mod retention;
mod steps;
pub mod summary;

#[cfg(test)]
mod property;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use model::{
    CheckpointInfo, Checkpoints, Effect, Need, Observed, Outcome, Plan, PodPhase, PodView,
    SavepointAnswer, Settings, Stray, Wake,
};
pub use plan::plan;
