//! The two peers: how to start them and how to speak to them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use prost::Message;
use stator_core::frame::{decode_frame, encode_frame};
use stator_core::proto::{self, Request, Response, request::Op, response::Result as R, write_op};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Workload {
    Get,
    Put,
    Mix,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::Get => "get",
            Workload::Put => "put",
            Workload::Mix => "50/50",
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    Stator,
    Resp,
}

const STATE: &str = "bench";

impl Protocol {
    /// Appends one get or put request.
    pub fn encode(self, id: u64, put: bool, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
        match self {
            Protocol::Stator => {
                let op = if put {
                    Op::Write(proto::WriteBatch {
                        ops: vec![proto::WriteOp {
                            op: Some(write_op::Op::ValuePut(proto::ValuePut {
                                state: STATE.into(),
                                key: key.to_vec().into(),
                                value: value.to_vec().into(),
                            })),
                        }],
                    })
                } else {
                    Op::Get(proto::GetRequest {
                        state: STATE.into(),
                        key: key.to_vec().into(),
                    })
                };
                let mut buf = BytesMut::new();
                encode_frame(&Request { id, op: Some(op) }, &mut buf);
                out.extend_from_slice(&buf);
            }
            Protocol::Resp => {
                if put {
                    out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
                } else {
                    out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
                }
                resp_bulk(key, out);
                if put {
                    resp_bulk(value, out);
                }
            }
        }
    }

    /// Appends puts for keys `range` of `space`, as few requests as the protocol allows;
    /// returns how many answers to expect.
    pub fn encode_load(
        self,
        space: &crate::Keyspace,
        range: std::ops::Range<u64>,
        out: &mut Vec<u8>,
    ) -> usize {
        match self {
            Protocol::Stator => {
                let ops = range
                    .map(|i| proto::WriteOp {
                        op: Some(write_op::Op::ValuePut(proto::ValuePut {
                            state: STATE.into(),
                            key: space.key(i).into(),
                            value: space.value(i).into(),
                        })),
                    })
                    .collect();
                let mut buf = BytesMut::new();
                encode_frame(
                    &Request {
                        id: 0,
                        op: Some(Op::Write(proto::WriteBatch { ops })),
                    },
                    &mut buf,
                );
                out.extend_from_slice(&buf);
                1
            }
            Protocol::Resp => {
                let n = range.end - range.start;
                out.extend_from_slice(format!("*{}\r\n$4\r\nMSET\r\n", 1 + 2 * n).as_bytes());
                for i in range {
                    resp_bulk(&space.key(i), out);
                    resp_bulk(&space.value(i), out);
                }
                1
            }
        }
    }

    /// Takes one answer off `input`: `Some(true)` success, `Some(false)` an error or a missing
    /// value (every key is loaded, so a miss is wrong), `None` when incomplete.
    pub fn decode(self, input: &mut BytesMut) -> anyhow::Result<Option<bool>> {
        match self {
            Protocol::Stator => {
                let Some(frame) = decode_frame(input, u32::MAX)? else {
                    return Ok(None);
                };
                let response = Response::decode(frame)?;
                Ok(Some(match response.result {
                    Some(R::Value(v)) => v.value.is_some(),
                    Some(R::Write(_)) => true,
                    _ => false,
                }))
            }
            Protocol::Resp => {
                let Some(line_end) = input.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                let (kind, rest) = (input[0], &input[1..line_end]);
                match kind {
                    b'+' | b'-' => {
                        input.advance(line_end + 2);
                        Ok(Some(kind == b'+'))
                    }
                    b'$' => {
                        let len: i64 = std::str::from_utf8(rest)?.parse()?;
                        if len < 0 {
                            input.advance(line_end + 2);
                            return Ok(Some(false));
                        }
                        let total = line_end + 2 + len as usize + 2;
                        if input.len() < total {
                            return Ok(None);
                        }
                        input.advance(total);
                        Ok(Some(true))
                    }
                    other => bail!("unexpected RESP reply type {:?}", other as char),
                }
            }
        }
    }
}

fn resp_bulk(a: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
    out.extend_from_slice(a);
    out.extend_from_slice(b"\r\n");
}

pub struct Peer {
    pub name: &'static str,
    pub socket: PathBuf,
    pub protocol: Protocol,
    child: Option<Child>,
}

impl Peer {
    pub async fn start_sidecar(bin: &Path, dir: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let socket = dir.join("sidecar.sock");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(bin)
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("sidecar-data"))
            .args(["--admin-addr", &format!("127.0.0.1:{port}")])
            .args(["--state", &format!("{STATE}:value"), "--log-format", "text"])
            .args(extra)
            .env("STATOR_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start the sidecar {}", bin.display()))?;
        Self::ready(Self {
            name: "sidecar",
            socket,
            protocol: Protocol::Stator,
            child: Some(child),
        })
        .await
    }

    pub async fn start_redis(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let socket = dir.join("redis.sock");
        let child = Command::new(bin)
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (apt-get install redis-server)",
                    bin.display()
                )
            })?;
        Self::ready(Self {
            name: "redis",
            socket,
            protocol: Protocol::Resp,
            child: Some(child),
        })
        .await
    }

    pub fn external_sidecar(socket: PathBuf) -> Self {
        Self {
            name: "sidecar",
            socket,
            protocol: Protocol::Stator,
            child: None,
        }
    }

    async fn ready(mut self) -> anyhow::Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::UnixStream::connect(&self.socket).await.is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten()
            {
                bail!("{} exited during start-up: {status}", self.name);
            }
            if Instant::now() > deadline {
                bail!("{} did not open its socket in 30 s", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(self)
    }

    /// The peer's resident memory in MiB (NaN for a sidecar this program did not start).
    pub fn rss_mib(&self) -> f64 {
        let Some(child) = &self.child else {
            return f64::NAN;
        };
        std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib / 1024.0)
            })
            .unwrap_or(f64::NAN)
    }

    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
    }
}
