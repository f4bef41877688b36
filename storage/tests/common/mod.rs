//! Real S3-compatible servers for the storage tests (moto and s3s-fs, found through
//! STATOR_MOTO_SERVER and STATOR_S3S_FS, which scripts/setup exports), and the fault proxy.
#![allow(dead_code)]

pub mod faults;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stator_storage::S3Options;

pub struct Server {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `source scripts/setup`, which installs the server and exports it")
    })
}

fn wait_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server not up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// moto (`s3s == false`, bucket created on the first request) or s3s-fs with bucket `bucket`.
pub fn start(s3s: bool) -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("AWS_ACCESS_KEY_ID"), "AK").unwrap();
    std::fs::write(creds.join("AWS_SECRET_ACCESS_KEY"), "SK").unwrap();
    let child = if s3s {
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("bucket")).unwrap();
        Command::new(env("STATOR_S3S_FS"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                "AK",
                "--secret-key",
                "SK",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    } else {
        Command::new(env("STATOR_MOTO_SERVER"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let server = Server { child, port, dir };
    wait_up(port);
    server
}

impl Server {
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            path_style: true,
            credentials_dir: Some(self.dir.path().join("creds")),
            multipart_threshold: 6 << 20,
            part_size: 5 << 20,
            copy_part_threshold: 8 << 20,
            ..Default::default()
        }
    }
}

/// moto with bucket `bucket` (moto creates a bucket on an unsigned PUT).
pub fn moto_with_bucket(bucket: &str) -> Server {
    use std::io::{Read, Write};
    let server = start(false);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    server
}
