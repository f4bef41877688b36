//! The operator's access to a job's stored state: how to reach the store (the job's S3 settings
//! and credentials Secret), the latest checkpoint of each replica of a lineage, and deleting
//! locations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::{Client, ResourceExt};
use stator_core::manifest::{
    MANIFEST_FILE, Manifest, checkpoint_dir, parse_checkpoint_dir, replica_dir,
};
use stator_storage::{Location, S3Options, StaticCredentials, StorageError};

use crate::crd::StreamJob;
use crate::lifecycle::{CheckpointInfo, Checkpoints};

#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    #[error("cannot read the credentials Secret {name}: {source}")]
    SecretUnreadable {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the credentials Secret {name} does not exist")]
    SecretMissing { name: String },
    #[error("the credentials Secret {name} has no {key}")]
    SecretIncomplete { name: String, key: &'static str },
    #[error("{what}: {source}")]
    Storage {
        what: String,
        #[source]
        source: StorageError,
    },
}

impl StoredError {
    pub fn is_transient(&self) -> bool {
        match self {
            StoredError::SecretUnreadable { source, .. } => {
                !matches!(source, kube::Error::Api(e) if e.code == 403)
            }
            StoredError::SecretMissing { .. } | StoredError::SecretIncomplete { .. } => false,
            StoredError::Storage { source, .. } => source.is_transient(),
        }
    }
}

/// The job's S3 settings without credentials: the standard AWS chain of the operator's own
/// environment then applies.
pub fn base_options(job: &StreamJob) -> S3Options {
    let mut options = S3Options::default();
    if let Some(s3) = &job.spec.state.s3 {
        options.endpoint = s3.endpoint.clone();
        if let Some(r) = &s3.region {
            options.region = r.clone();
        }
        options.path_style = s3.path_style;
    }
    options
}

/// How the operator reaches the job's storage: its S3 settings and the keys in its credentials
/// Secret (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`).
pub async fn options(client: &Client, job: &StreamJob) -> Result<S3Options, StoredError> {
    let mut options = base_options(job);
    let Some(name) = &job.spec.state.credentials_secret else {
        return Ok(options);
    };
    let secrets: Api<Secret> =
        Api::namespaced(client.clone(), &job.namespace().unwrap_or_default());
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|source| StoredError::SecretUnreadable {
            name: name.clone(),
            source,
        })?
        .ok_or_else(|| StoredError::SecretMissing { name: name.clone() })?;
    let data = secret.data.unwrap_or_default();
    let field = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let missing = |key| StoredError::SecretIncomplete {
        name: name.clone(),
        key,
    };
    options.static_credentials = Some(StaticCredentials {
        access_key_id: field("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
        secret_access_key: field("AWS_SECRET_ACCESS_KEY")
            .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
        session_token: field("AWS_SESSION_TOKEN"),
    });
    Ok(options)
}

async fn open(url: &str, options: &S3Options) -> Result<Location, StoredError> {
    Location::parse(url, options)
        .await
        .map_err(|source| StoredError::Storage {
            what: format!("opening {url}"),
            source,
        })
}

/// Deletes everything under `url` (a savepoint), after the holds it still has on checkpoint
/// files; returns how many objects were deleted.
pub async fn delete_all(url: &str, options: &S3Options) -> Result<usize, StoredError> {
    let location = open(url, options).await?;
    stator_storage::release_holds(&location, options)
        .await
        .map_err(|source| StoredError::Storage {
            what: format!("releasing the holds of {url}"),
            source,
        })?;
    location
        .delete_all(8)
        .await
        .map_err(|source| StoredError::Storage {
            what: format!("deleting {url}"),
            source,
        })
}

/// The latest committed checkpoint of each replica of a lineage at `parallelism`.
pub async fn latest_checkpoints(
    url: &str,
    parallelism: i32,
    options: &S3Options,
) -> Result<Checkpoints, StoredError> {
    let location = open(url, options).await?.child("checkpoints");
    let mut latest = BTreeMap::new();
    for i in 0..parallelism {
        let dir = replica_dir(i as u32, parallelism as u32);
        let replica = location.child(&dir);
        let listed = replica
            .list_dirs("")
            .await
            .map_err(|source| StoredError::Storage {
                what: format!("listing the checkpoints of replica {i} in {url}"),
                source,
            })?;
        let mut ids: Vec<u64> = listed
            .iter()
            .filter_map(|d| parse_checkpoint_dir(d))
            .collect();
        ids.sort_unstable();
        // The newest one whose manifest (the commit point) exists.
        for id in ids.into_iter().rev() {
            let key = format!("{}/{MANIFEST_FILE}", checkpoint_dir(id));
            match replica.get(&key).await {
                Ok(bytes) => {
                    let created = Manifest::parse(&bytes)
                        .ok()
                        .and_then(|m| Timestamp::from_millisecond(m.created_at_ms as i64).ok())
                        .unwrap_or(Timestamp::UNIX_EPOCH);
                    latest.insert(
                        i,
                        CheckpointInfo {
                            id,
                            created_at: created,
                        },
                    );
                    break;
                }
                Err(e) if e.is_not_found() => continue,
                Err(source) => {
                    return Err(StoredError::Storage {
                        what: format!("reading checkpoint {id} of replica {i} in {url}"),
                        source,
                    });
                }
            }
        }
    }
    Ok(Checkpoints {
        location: url.to_owned(),
        parallelism,
        latest,
    })
}

/// Makes the savepoint at `url` self-contained: copies, server-side, the checkpoint files its
/// replicas still reference. Returns the files and bytes copied now.
pub async fn complete_savepoint(
    url: &str,
    options: &S3Options,
) -> Result<(usize, u64), StoredError> {
    let location = open(url, options).await?;
    let done = stator_storage::complete_savepoint_all(&location, options, 8, &std::env::temp_dir())
        .await
        .map_err(|source| StoredError::Storage {
            what: format!("copying the files of savepoint {url}"),
            source,
        })?;
    Ok((done.copied, done.bytes))
}
