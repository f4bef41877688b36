//! Random histories through the planner: spec changes, pod failures, sidecar answers, operator
//! crashes (replaying the last persisted status) and clock jumps, checking the invariants at
//! every step (see [`super::sim`]): at most one savepoint per operation, never two pods for one
//! replica name and never two pods of one replica accepting writes (a warm handover's pods are
//! promoted only after the old ones fenced), never a restore from a point older than a checkpoint
//! taken since, every operation within its deadlines, no replica left fenced.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::sim::{SidecarSavepoints, Sim};
use crate::crd::{UpgradeMode, UpgradeStrategy};
use crate::fixtures::job;

fn history(seed: u64, steps: usize) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut j = job("wc")
        .location("s3://bucket/jobs")
        .readiness_timeout(40)
        .savepoint_timeout(20)
        .build();
    j.spec.parallelism = rng.random_range(1..=3);
    let mut sim = Sim::new(j);
    let mut log = Vec::new();
    for step in 0..steps {
        let action = rng.random_range(0..100);
        let what = match action {
            0..=5 => {
                let image = ["app:1", "app:2", "app:3", "app:bad"][rng.random_range(0..4)];
                sim.job.spec.app.image = image.into();
                format!("image {image}")
            }
            6..=8 => {
                sim.job.spec.parallelism = rng.random_range(1..=3);
                format!("parallelism {}", sim.job.spec.parallelism)
            }
            9..=10 => {
                sim.job.spec.suspend = !sim.job.spec.suspend;
                format!("suspend {}", sim.job.spec.suspend)
            }
            11..=12 => {
                let m = [UpgradeMode::Savepoint, UpgradeMode::LastState][rng.random_range(0..2)];
                sim.job.spec.upgrade_mode = m;
                format!("mode {m:?}")
            }
            13..=14 => {
                let n = step as i64;
                sim.job
                    .spec
                    .savepoint
                    .get_or_insert_with(Default::default)
                    .trigger_nonce = Some(n);
                format!("trigger {n}")
            }
            15..=18 => {
                sim.sidecar = [
                    SidecarSavepoints::Complete,
                    SidecarSavepoints::Complete,
                    SidecarSavepoints::Pending,
                    SidecarSavepoints::Fail,
                ][rng.random_range(0..4)];
                format!("sidecar savepoints {:?}", sim.sidecar)
            }
            19 => {
                sim.unfence_ok = !sim.unfence_ok;
                format!("unfence ok {}", sim.unfence_ok)
            }
            34..=36 => {
                let s = [UpgradeStrategy::Recreate, UpgradeStrategy::WarmHandover]
                    [rng.random_range(0..2)];
                sim.job.spec.upgrade_strategy = s;
                format!("strategy {s:?}")
            }
            37 => {
                sim.promote_fails = !sim.promote_fails;
                format!("promote fails {}", sim.promote_fails)
            }
            20..=22 => {
                let keys: Vec<_> = sim.pods.keys().copied().collect();
                if keys.is_empty() {
                    "no pod to vanish".to_owned()
                } else {
                    let k = keys[rng.random_range(0..keys.len())];
                    sim.pods.remove(&k);
                    format!("pod {k:?} vanishes")
                }
            }
            23..=24 => {
                sim.problems = if sim.problems.is_empty() {
                    vec!["invalid".into()]
                } else {
                    vec![]
                };
                format!("spec valid {}", sim.problems.is_empty())
            }
            25..=27 => {
                let crash = rng.random_range(0..4);
                sim.reconcile_with_crash(Some(crash));
                format!("operator killed after plan {crash}")
            }
            28..=30 => {
                let s = rng.random_range(30..400);
                sim.tick(s);
                format!("clock +{s} s")
            }
            31..=33 => {
                let p = rng.random_range(0..2);
                sim.job
                    .spec
                    .savepoint
                    .get_or_insert_with(Default::default)
                    .periodic_interval_seconds = [None, Some(30)][p];
                format!("periodic {p}")
            }
            _ => {
                sim.reconcile();
                sim.tick(1);
                "reconcile".to_owned()
            }
        };
        if sim.job.spec.app.image == "app:bad" {
            sim.broken.insert("app:bad".into());
        }
        log.push(what);
        if !sim.violations.is_empty() {
            let tail: Vec<_> = log.iter().rev().take(30).rev().collect();
            let events: Vec<_> = sim.events.iter().rev().take(25).rev().collect();
            return Err(format!(
                "seed {seed}, step {step}: {:#?}\nlast actions: {tail:#?}\nlast events: {events:#?}\ncheckpoints: {:#?}\nsavepoints: {:#?}\nstatus: {:#?}",
                sim.violations, sim.checkpoints, sim.savepoints, sim.status
            ));
        }
    }
    // Left alone with a healthy spec, every history ends with the job running or suspended.
    sim.problems.clear();
    sim.sidecar = SidecarSavepoints::Complete;
    sim.unfence_ok = true;
    sim.promote_fails = false;
    sim.job.spec.app.image = "app:final".into();
    sim.settle(2000);
    if !sim.violations.is_empty() {
        return Err(format!("seed {seed} (settling): {:#?}", sim.violations));
    }
    if sim.status.operation.is_some() {
        return Err(format!(
            "seed {seed}: an operation never ended: {:#?}",
            sim.status.operation
        ));
    }
    Ok(())
}

#[test]
fn random_histories_keep_every_invariant() {
    let runs: u64 = std::env::var("STATOR_PROPERTY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let first: u64 = std::env::var("STATOR_PROPERTY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let failures: Vec<String> = (first..first + runs)
        .filter_map(|seed| history(seed, 150).err())
        .take(3)
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
