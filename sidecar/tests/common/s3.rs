//! Real S3-compatible servers for tests: moto's standalone server (atomic conditional writes,
//! real error codes) and s3s-fs (checks SigV4 signatures and checksums). Each is found through
//! an env variable that `scripts/setup` exports; a test that needs one fails when it is unset.
//! Servers listen on loopback, on a free port, and are killed when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::free_port;

pub const ACCESS_KEY: &str = "stator-test-key";
pub const SECRET_KEY: &str = "stator-test-secret";

pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    /// Holds the credentials directory (and s3s-fs's data).
    pub dir: tempfile::TempDir,
}

fn required_env(name: &str, what: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs {what}. Run `source scripts/setup` (it installs it \
             and exports {name}), or use scripts/test."
        )
    })
}

impl S3Server {
    /// moto's standalone server with bucket `bucket`.
    pub fn moto(bucket: &str) -> Self {
        let bin = required_env(
            "STATOR_MOTO_SERVER",
            "moto's standalone server (moto_server)",
        );
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let server = Self::new(child, port, tempfile::tempdir().unwrap());
        server.wait_up();
        let (code, body) = super::http_request(
            format!("127.0.0.1:{port}").parse().unwrap(),
            "PUT",
            &format!("/{bucket}"),
            None,
            "",
        )
        .unwrap();
        assert!(
            code == 200,
            "creating bucket {bucket} on moto: {code} {body}"
        );
        server
    }

    /// s3s-fs with bucket `bucket`, checking signatures with the test credentials.
    pub fn s3s_fs(bucket: &str) -> Self {
        let bin = required_env("STATOR_S3S_FS", "s3s-fs 0.14.1");
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join(bucket)).unwrap();
        let child = Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let server = Self::new(child, port, dir);
        server.wait_up();
        server
    }

    fn new(child: Child, port: u16, dir: tempfile::TempDir) -> Self {
        let creds = dir.path().join("credentials");
        std::fs::create_dir_all(&creds).unwrap();
        std::fs::write(creds.join("AWS_ACCESS_KEY_ID"), ACCESS_KEY).unwrap();
        std::fs::write(
            creds.join("AWS_SECRET_ACCESS_KEY"),
            format!("{SECRET_KEY}\n"),
        )
        .unwrap();
        Self {
            child: Some(child),
            port,
            dir,
        }
    }

    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "S3 server not up in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn credentials_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("credentials")
    }

    /// Sidecar flags to reach this server at `endpoint` (default: the server itself).
    pub fn sidecar_args(&self, endpoint: Option<&str>) -> Vec<String> {
        vec![
            "--s3-endpoint".into(),
            endpoint.map_or_else(|| self.endpoint(), str::to_owned),
            "--s3-path-style".into(),
            "--s3-credentials-dir".into(),
            self.credentials_dir().display().to_string(),
        ]
    }

    pub fn options(&self) -> stator_storage::S3Options {
        stator_storage::S3Options {
            endpoint: Some(self.endpoint()),
            path_style: true,
            credentials_dir: Some(self.credentials_dir()),
            ..Default::default()
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP proxy in front of a server that can be cut off (existing connections are shut down
/// and new ones closed at once), to play an outage.
pub struct Proxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Default::default();
        let (d, s, c) = (down.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                {
                    let mut c = c.lock().unwrap();
                    c.push(client.try_clone().unwrap());
                    c.push(upstream.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        Self {
            port,
            down,
            stop,
            conns,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for c in self.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.set_down(true);
    }
}

/// Reads a whole object tree of a file:// location, for assertions.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
