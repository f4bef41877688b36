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
            savepoint: None,
            initial_savepoint: None,
            suspend: false,
            restart_nonce: None,
            rollback: None,
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
