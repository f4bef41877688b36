//! A fault-injecting HTTP proxy for tests, in front of a real S3 server: it answers 503, loses a
//! reply after the server applied the request, cuts a response body off (cleanly or with a TCP
//! reset) or delays, for the requests a [`Rule`] matches, and counts every request it forwards.
//! Each connection carries one request (the proxy asks both sides to close after it), so the
//! proxy only parses request heads and relays everything else byte for byte.
//!
//! Shared by the storage and sidecar tests (the sidecar's `tests/common` includes this file).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer `503 Service Unavailable` without contacting the server.
    Unavailable,
    /// Forward the request, read the server's whole reply, then close the connection without
    /// sending any of it: the request was applied, the client never learns.
    LoseReply,
    /// Relay the reply's head and the first `n` bytes of its body, then close (FIN).
    TruncateBody(usize),
    /// Relay the reply's head and the first `n` bytes of its body, then reset the connection.
    ResetBody(usize),
    /// Wait this long before forwarding.
    Delay(Duration),
}

/// Which requests get a fault: `method` (empty: any), a substring of the path (with the query),
/// and optionally a header line substring (lowercase, e.g. `if-none-match`). `times` counts down
/// the requests still to hit (`usize::MAX`: every one).
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub path_contains: String,
    pub header_contains: Option<String>,
    pub times: usize,
    pub fault: Fault,
}

impl Rule {
    pub fn new(method: &'static str, path_contains: &str, fault: Fault) -> Self {
        Self {
            method,
            path_contains: path_contains.to_owned(),
            header_contains: None,
            times: usize::MAX,
            fault,
        }
    }

    pub fn with_header(mut self, header: &str) -> Self {
        self.header_contains = Some(header.to_ascii_lowercase());
        self
    }

    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    fn matches(&self, head: &Head) -> bool {
        self.times > 0
            && (self.method.is_empty() || self.method == head.method)
            && head.path.contains(&self.path_contains)
            && self
                .header_contains
                .as_ref()
                .is_none_or(|h| head.headers.iter().any(|l| l.contains(h.as_str())))
    }
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub fault: Option<Fault>,
}

pub struct FaultProxy {
    pub port: u16,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

struct Head {
    method: String,
    path: String,
    /// Lowercased header lines.
    headers: Vec<String>,
    /// The head as it goes upstream, asking for the connection to close after this request.
    bytes: Vec<u8>,
    /// Body bytes that arrived with the head.
    rest: Vec<u8>,
    content_length: usize,
}

impl FaultProxy {
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let rules: Arc<Mutex<Vec<Rule>>> = Default::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (rules.clone(), seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let (r, s) = (r.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = client.set_nonblocking(false);
                    handle(client, target, &r, &s);
                });
            }
        });
        Self {
            port,
            rules,
            seen,
            stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn add(&self, rule: Rule) {
        self.rules.lock().unwrap().push(rule);
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests with `method` had a path containing `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.contains(path_contains))
            .count()
    }

    /// How many requests a fault hit.
    pub fn faults(&self) -> usize {
        self.seen().iter().filter(|s| s.fault.is_some()).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn read_head(client: &mut TcpStream) -> Option<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = client.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let first = lines.next()?.to_owned();
    let mut parts = first.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    let mut out = format!("{first}\r\n");
    let mut content_length = 0;
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        out.push_str(line);
        out.push_str("\r\n");
        headers.push(lower);
    }
    out.push_str("connection: close\r\n\r\n");
    Some(Head {
        method,
        path,
        headers,
        bytes: out.into_bytes(),
        rest: buf[end + 4..].to_vec(),
        content_length,
    })
}

fn handle(mut client: TcpStream, target: u16, rules: &Mutex<Vec<Rule>>, seen: &Mutex<Vec<Seen>>) {
    let Some(head) = read_head(&mut client) else {
        return;
    };
    let fault = {
        let mut rules = rules.lock().unwrap();
        rules.iter_mut().find(|r| r.matches(&head)).map(|r| {
            if r.times != usize::MAX {
                r.times -= 1;
            }
            r.fault
        })
    };
    seen.lock().unwrap().push(Seen {
        method: head.method.clone(),
        path: head.path.clone(),
        fault,
    });
    if let Some(Fault::Delay(d)) = fault {
        std::thread::sleep(d);
    }
    if fault == Some(Fault::Unavailable) {
        // Read the body first, so the client sees the answer rather than a reset.
        let mut left = head.content_length.saturating_sub(head.rest.len());
        let mut chunk = [0u8; 8192];
        let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
        while left > 0 {
            match client.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
        let _ = client.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    if upstream.write_all(&head.bytes).is_err() || upstream.write_all(&head.rest).is_err() {
        return;
    }
    // The rest of the request body (and anything else the client sends) goes up as it comes.
    {
        let mut from = client.try_clone().unwrap();
        let mut to = upstream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
    let mut buf = vec![0u8; 64 << 10];
    let mut head_end: Option<usize> = None;
    let mut relayed = 0usize;
    let mut pending = Vec::new();
    loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if fault == Some(Fault::LoseReply) {
            continue;
        }
        let cut_after = match fault {
            Some(Fault::TruncateBody(n) | Fault::ResetBody(n)) => Some(n),
            _ => None,
        };
        let Some(limit) = cut_after else {
            if client.write_all(&buf[..n]).is_err() {
                break;
            }
            continue;
        };
        // Find the end of the reply's head, then pass `limit` bytes of body.
        pending.extend_from_slice(&buf[..n]);
        if head_end.is_none() {
            head_end = pending
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| i + 4);
        }
        let Some(h) = head_end else { continue };
        let allowed = (h + limit).saturating_sub(relayed).min(pending.len());
        let _ = client.write_all(&pending[..allowed]);
        relayed += allowed;
        pending.drain(..allowed);
        if relayed >= h + limit {
            let _ = client.flush();
            let _ = upstream.shutdown(Shutdown::Both);
            if matches!(fault, Some(Fault::ResetBody(_))) {
                reset(client);
            } else {
                let _ = client.shutdown(Shutdown::Both);
            }
            return;
        }
    }
    if fault == Some(Fault::LoseReply) {
        reset(client);
    } else {
        let _ = client.shutdown(Shutdown::Both);
    }
}

/// Closes `stream` with a TCP reset instead of a FIN. Only the read side is shut down first (that
/// ends the thread relaying the request, which holds a clone); the last close then resets.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Read);
}
