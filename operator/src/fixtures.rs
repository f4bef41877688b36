//! Small chainable builders for StreamJobs in tests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{
    AppSpec, StateDeclSpec, StateKind, StateSpec, StreamJob, StreamJobSpec, UpgradeMode,
};

pub struct JobBuilder(StreamJob);

pub fn job(name: &str) -> JobBuilder {
    JobBuilder(StreamJob {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            ..Default::default()
        },
        spec: StreamJobSpec {
            app: AppSpec {
                image: "ghcr.io/stator/wordcount:1".into(),
                ..Default::default()
            },
            pod: None,
            parallelism: 2,
            max_parallelism: 128,
            state: StateSpec::default(),
            upgrade_mode: UpgradeMode::Savepoint,
            upgrade_strategy: Default::default(),
            savepoint: None,
            initial_savepoint: None,
            suspend: false,
            restart_nonce: None,
            rollback: None,
            last_state: None,
            sidecar: None,
        },
        status: None,
    })
}

impl JobBuilder {
    pub fn parallelism(mut self, p: i32) -> Self {
        self.0.spec.parallelism = p;
        self
    }

    pub fn location(mut self, l: &str) -> Self {
        self.0.spec.state.location = Some(l.to_owned());
        self
    }

    pub fn image(mut self, i: &str) -> Self {
        self.0.spec.app.image = i.to_owned();
        self
    }

    pub fn state(mut self, name: &str) -> Self {
        self.0.spec.state.states.push(StateDeclSpec {
            name: name.to_owned(),
            kind: StateKind::Value,
            ttl_ms: None,
        });
        self
    }

    pub fn build(self) -> StreamJob {
        self.0
    }
}

impl JobBuilder {
    pub fn warm_handover(mut self) -> Self {
        self.0.spec.upgrade_strategy = crate::crd::UpgradeStrategy::WarmHandover;
        self
    }

    pub fn mode(mut self, m: UpgradeMode) -> Self {
        self.0.spec.upgrade_mode = m;
        self
    }

    pub fn savepoint_timeout(mut self, s: i64) -> Self {
        self.0
            .spec
            .savepoint
            .get_or_insert_with(Default::default)
            .timeout_seconds = Some(s);
        self
    }

    pub fn periodic(mut self, s: i64) -> Self {
        self.0
            .spec
            .savepoint
            .get_or_insert_with(Default::default)
            .periodic_interval_seconds = Some(s);
        self
    }

    pub fn readiness_timeout(mut self, s: i64) -> Self {
        self.0.spec.rollback = Some(crate::crd::RollbackSpec {
            enabled: self.0.spec.rollback.as_ref().is_none_or(|r| r.enabled),
            readiness_timeout_seconds: s,
        });
        self
    }

    pub fn no_rollback(mut self) -> Self {
        self.0.spec.rollback = Some(crate::crd::RollbackSpec {
            enabled: false,
            readiness_timeout_seconds: self
                .0
                .spec
                .rollback
                .as_ref()
                .map_or(300, |r| r.readiness_timeout_seconds),
        });
        self
    }

    pub fn max_checkpoint_age(mut self, s: i64) -> Self {
        self.0.spec.last_state = Some(crate::crd::LastStateSpec {
            max_checkpoint_age_seconds: Some(s),
        });
        self
    }

    pub fn claims(mut self, delete_on_scale_down: bool) -> Self {
        self.0.spec.state.volume = Some(crate::crd::VolumeSpec {
            empty_dir: None,
            persistent_volume_claim: Some(crate::crd::ClaimSpec {
                size: "1Gi".into(),
                storage_class_name: None,
                delete_on_scale_down,
            }),
        });
        self
    }
}
