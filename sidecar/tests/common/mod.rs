//! Starts a real `stator-sidecar` process on a temporary socket and data directory, and stops it
//! (SIGTERM, then SIGKILL) when dropped, also when a test fails.
#![allow(dead_code)]

#[path = "../../../storage/tests/common/faults.rs"]
pub mod faults;
pub mod s3;
pub mod snapshots;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Sidecar {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub admin: SocketAddr,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A limit on the size of any file the process writes (RLIMIT_FSIZE): writing past it fails
    /// with EFBIG, as a full disk fails with ENOSPC.
    pub file_size_limit: Option<u64>,
    /// Where `spawn` sends the process's log (at info); inherited stderr at warn when unset.
    pub log: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sidecar {
    /// Starts a sidecar in a fresh temporary directory with `extra` flags.
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Self::start_in(dir.path(), extra);
        s._dir = Some(dir);
        s
    }

    /// Starts a sidecar whose socket and data live under `dir` (kept by the caller).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Self {
        let mut s = Self::new_in(dir, extra);
        s.spawn();
        s.wait_ready();
        s
    }

    /// Prepares a sidecar under `dir` without starting it.
    pub fn new_in(dir: &Path, extra: &[&str]) -> Self {
        let socket = dir.join("run/state.sock");
        let data_dir = dir.join("data");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut args: Vec<String> = vec![
            "--socket".into(),
            socket.display().to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--admin-addr".into(),
            admin.to_string(),
            "--log-format".into(),
            "text".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self {
            child: None,
            socket,
            data_dir,
            admin,
            args,
            env: Vec::new(),
            file_size_limit: None,
            log: None,
            _dir: None,
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stator-sidecar"));
        command
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null());
        if let Some(limit) = self.file_size_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command
    }

    /// The log written so far (see [`Sidecar::log`]).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Runs the sidecar expecting it to exit during start-up; returns its status and stderr.
    pub fn run_to_exit(&mut self) -> (ExitStatus, String) {
        let mut child = self
            .command()
            .env("STATOR_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stator-sidecar");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status, err);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the sidecar was expected to exit but still runs after 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a node failure would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path, Some(TOKEN)).unwrap()
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        http_request(self.admin, "POST", path, Some(TOKEN), body).unwrap()
    }

    /// A metric's value from /metrics (the first line starting with `name`), or 0.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = http_get(self.admin, "/metrics", None).unwrap();
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn spawn(&mut self) {
        let mut command = self.command();
        match &self.log {
            Some(path) => command
                .env("STATOR_LOG", "info")
                .stderr(std::fs::File::create(path).unwrap()),
            None => command.env("STATOR_LOG", "warn").stderr(Stdio::inherit()),
        };
        let child = command.spawn().expect("start stator-sidecar");
        self.child = Some(child);
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sidecar exited during start-up: {status}");
            }
            if http_get(self.admin, "/readyz", None)
                .map(|(code, _)| code == 200)
                .unwrap_or(false)
            {
                return;
            }
            assert!(Instant::now() < deadline, "sidecar not ready in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("sidecar running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sidecar did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn restart(&mut self) {
        assert!(self.terminate().success());
        self.spawn();
        self.wait_ready();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The admin token tests write into a token file (see [`token_file`]).
pub const TOKEN: &str = "test-token";

/// Writes [`TOKEN`] into `dir/token` and returns the path.
pub fn token_file(dir: &Path) -> String {
    let path = dir.join("token");
    std::fs::write(&path, TOKEN).unwrap();
    path.display().to_string()
}

/// A minimal HTTP/1.1 GET; returns (status, body).
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, token, "")
}

/// A minimal HTTP/1.1 request with an optional JSON body; returns (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let content = if body.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content}Connection: close\r\n\r\n{body}"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}
