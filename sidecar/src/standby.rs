//! A warm standby: a warm handover's new sidecar fetches the running version's state while that
//! version still serves, then waits for the operator to promote it before it restores (only the
//! delta) and serves.
//!
//! A promotion is recorded on the data volume (`promoted.json`) before it is acknowledged, so a
//! sidecar that restarts after it was promoted goes straight to its restore instead of waiting for
//! a promotion that will not come again.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::watch;

const MARKER: &str = "promoted.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Fetching the state to be promoted from.
    Warming,
    /// Fetched; waiting for the promotion.
    Warm,
    /// Promoted: restoring the restore point, then serving.
    Promoted,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Warming => "warming",
            State::Warm => "warm",
            State::Promoted => "promoted",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error(
        "this standby restores {expected:?} once promoted; a promotion to {asked:?} is refused"
    )]
    OtherLocation { expected: String, asked: String },
    #[error("cannot record the promotion in {}: {source}", path.display())]
    Record {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Standby {
    data_dir: PathBuf,
    /// The restore point the promotion must name (the sidecar's `--restore-from`).
    restore_from: String,
    state: Mutex<State>,
    promoted: watch::Sender<bool>,
}

impl Standby {
    /// A standby whose promotion restores `restore_from`; already promoted when the volume says so.
    pub fn new(data_dir: &Path, restore_from: &str) -> Self {
        let already = std::fs::read(data_dir.join(MARKER))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("restoreFrom")?.as_str().map(str::to_owned))
            .is_some_and(|l| l == restore_from);
        let state = if already {
            State::Promoted
        } else {
            State::Warming
        };
        Standby {
            data_dir: data_dir.to_owned(),
            restore_from: restore_from.to_owned(),
            state: Mutex::new(state),
            promoted: watch::Sender::new(already),
        }
    }

    pub fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_promoted(&self) -> bool {
        *self.promoted.borrow()
    }

    /// The state is fetched (a promotion that came meanwhile stands).
    pub fn set_warm(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *s == State::Warming {
            *s = State::Warm;
        }
    }

    /// Records the promotion on the volume, then releases [`Standby::promoted`]. Idempotent;
    /// accepted while still warming (the restore follows the fetch).
    pub fn promote(&self, location: &str) -> Result<(), PromoteError> {
        if location != self.restore_from {
            return Err(PromoteError::OtherLocation {
                expected: self.restore_from.clone(),
                asked: location.to_owned(),
            });
        }
        if self.is_promoted() {
            return Ok(());
        }
        let path = self.data_dir.join(MARKER);
        let temp = self.data_dir.join(format!("{MARKER}.tmp"));
        let body = serde_json::json!({ "restoreFrom": location }).to_string();
        let written = (|| {
            use std::io::Write;
            std::fs::create_dir_all(&self.data_dir)?;
            let mut f = std::fs::File::create(&temp)?;
            f.write_all(body.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&temp, &path)?;
            std::fs::File::open(&self.data_dir)?.sync_all()
        })();
        written.map_err(|source| PromoteError::Record {
            path: path.clone(),
            source,
        })?;
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Promoted;
        self.promoted.send_replace(true);
        tracing::info!(restore_from = location, "promoted by the operator");
        Ok(())
    }

    /// Resolves once promoted.
    pub async fn promoted(&self) {
        let mut rx = self.promoted.subscribe();
        let _ = rx.wait_for(|p| *p).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promotion_is_recorded_so_that_a_restarted_standby_knows_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Standby::new(dir.path(), "s3://b/sp/upgrade-3");
        assert_eq!(s.state(), State::Warming);
        s.set_warm();
        assert_eq!(s.state(), State::Warm);
        let err = s.promote("s3://b/sp/upgrade-9").unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        assert!(!s.is_promoted());
        s.promote("s3://b/sp/upgrade-3").unwrap();
        s.promote("s3://b/sp/upgrade-3").unwrap();
        assert_eq!(s.state(), State::Promoted);
        let again = Standby::new(dir.path(), "s3://b/sp/upgrade-3");
        assert!(again.is_promoted(), "a restart after the promotion");
        assert_eq!(again.state(), State::Promoted);
        let other = Standby::new(dir.path(), "s3://b/sp/upgrade-4");
        assert!(
            !other.is_promoted(),
            "a promotion to another point does not count"
        );
    }
}
