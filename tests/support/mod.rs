//! Helpers for end-to-end tests: free ports and a proxy child process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A base port such that `base .. base + count` are all free right now.
///
/// Blocks come from below the kernel's ephemeral range (32768 and up, where
/// the in-process mock clusters bind), and no two blocks handed out in one
/// test process overlap: a proxy binds its broker ports only after its first
/// health check, and a parallel test must not take them in between.
pub fn free_port_block(count: u16) -> u16 {
    static HANDED_OUT: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    let mut handed_out = HANDED_OUT.lock().unwrap();
    for attempt in 0..500u64 {
        let base = 10_000
            + ((seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(attempt * 7919))
                % 22_000) as u16;
        let overlaps = handed_out
            .iter()
            .any(|&(b, c)| base < b + c && b < base + count);
        if overlaps {
            continue;
        }
        if (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            handed_out.push((base, count));
            return base;
        }
    }
    panic!("no free block of {count} ports");
}

/// A running proxy; killed (by its own pid) when dropped.
pub struct ProxyProcess {
    pub child: Child,
    pub port: u16,
    pub http_port: u16,
    pub capture_dir: Option<PathBuf>,
    pub log: Arc<Mutex<String>>,
}

impl ProxyProcess {
    /// Starts the proxy in front of `bootstrap`, listening on `port` with
    /// brokers at `port + 1 + node_id`.
    pub fn start(
        bootstrap: &str,
        capture_dir: Option<&Path>,
        extra: &[(&str, &str)],
    ) -> ProxyProcess {
        let port = free_port_block(12);
        let http_port = free_port_block(1);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafka-lfs-proxy"));
        cmd.env("KAFSCALE_LFS_PROXY_ADDR", format!("127.0.0.1:{port}"))
            .env("KAFSCALE_LFS_PROXY_ADVERTISED_HOST", "localhost")
            .env("KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS", bootstrap)
            .env(
                "KAFSCALE_LFS_PROXY_HTTP_ADDR",
                format!("127.0.0.1:{http_port}"),
            )
            .env("KAFSCALE_LFS_PROXY_HEALTH_INTERVAL_MS", "500")
            .env("KAFSCALE_LFS_PROXY_LOG_LEVEL", "info,kafka_lfs_proxy=debug")
            .env(
                "KAFSCALE_LFS_PROXY_STORAGE_DIR",
                std::env::temp_dir().join(format!("kafka-lfs-proxy-test-{port}")),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(dir) = capture_dir {
            cmd.env("KAFSCALE_LFS_PROXY_CAPTURE_DIR", dir);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start kafka-lfs-proxy");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[proxy] {line}");
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        wait_for_port(port, Duration::from_secs(10));
        ProxyProcess {
            child,
            port,
            http_port,
            capture_dir: capture_dir.map(Path::to_owned),
            log,
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// The port serving upstream node `node`, once it listens: broker
    /// listeners are bound when the proxy first learns the node from the
    /// upstream's metadata, shortly after the bootstrap port opens.
    pub fn broker_port(&self, node: u16) -> u16 {
        let port = self.port + 1 + node;
        wait_for_port(port, Duration::from_secs(10));
        port
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// GET a path on the HTTP port; returns (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).expect("connect http");
        use std::io::Write;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Runs `inspect-capture` and returns (success, output).
    pub fn inspect_capture(&self, forbid: &[String]) -> (bool, String) {
        let dir = self.capture_dir.as_ref().expect("capture dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafka-lfs-proxy"));
        cmd.arg("inspect-capture").arg(dir);
        for f in forbid {
            cmd.arg("--forbid").arg(f);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listening on port {port} after {within:?}");
}

/// A raw Kafka connection: send encoded requests, read whole response frames.
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        RawClient { stream }
    }

    /// Encodes header + body, sends it, returns the frame sent (with prefix).
    pub fn send<T: kafka_protocol::protocol::Encodable>(
        &mut self,
        api_key: i16,
        version: i16,
        correlation_id: i32,
        body: &T,
    ) -> Vec<u8> {
        self.send_as(api_key, version, version, correlation_id, body)
    }

    /// Encodes the body at `version` but names `wire_version` in the header:
    /// a request from a client newer than the proxy.
    pub fn send_as<T: kafka_protocol::protocol::Encodable>(
        &mut self,
        api_key: i16,
        version: i16,
        wire_version: i16,
        correlation_id: i32,
        body: &T,
    ) -> Vec<u8> {
        let mut frame = encode_request(api_key, version, correlation_id, body);
        frame[6..8].copy_from_slice(&wire_version.to_be_bytes());
        self.send_raw(&frame);
        frame
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one response frame (with its length prefix), or None on EOF.
    pub fn read_frame(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut frame = len.to_vec();
        frame.resize(4 + i32::from_be_bytes(len) as usize, 0);
        self.stream.read_exact(&mut frame[4..]).ok()?;
        Some(frame)
    }

    /// True when the peer has closed the connection (EOF or reset).
    pub fn is_closed_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
        }
    }
}

/// A request frame (length prefix included) from a header and a body.
pub fn encode_request<T: kafka_protocol::protocol::Encodable>(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Vec<u8> {
    use kafka_protocol::messages::{ApiKey, RequestHeader};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")));
    let hv = ApiKey::try_from(api_key)
        .map(|k| k.request_header_version(version))
        .unwrap_or(1);
    let mut buf = bytes::BytesMut::new();
    header.encode(&mut buf, hv).unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    frame
}

/// The correlation id of a response frame (length prefix included).
pub fn correlation_id(frame: &[u8]) -> i32 {
    i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]])
}

/// Bytes one connection carried: (towards upstream, towards the client).
pub type Recorded = Arc<Mutex<(Vec<u8>, Vec<u8>)>>;

/// A TCP relay that records, per connection, the bytes each way.
pub struct RecordingTap {
    pub port: u16,
    pub connections: Arc<Mutex<Vec<Recorded>>>,
}

impl RecordingTap {
    pub fn start(target: String) -> RecordingTap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let conns = Arc::clone(&connections);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                let record: Recorded = Arc::default();
                conns.lock().unwrap().push(Arc::clone(&record));
                pump(
                    client.try_clone().unwrap(),
                    upstream.try_clone().unwrap(),
                    Arc::clone(&record),
                    true,
                );
                pump(upstream, client, record, false);
            }
        });
        RecordingTap { port, connections }
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    record: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
    upstream_bound: bool,
) {
    use std::io::Write;
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Ok(n) => {
                    {
                        let mut r = record.lock().unwrap();
                        if upstream_bound {
                            r.0.extend_from_slice(&buf[..n])
                        } else {
                            r.1.extend_from_slice(&buf[..n])
                        }
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Reads a Prometheus sample value from /metrics text (0 when absent).
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// A TCP relay that corrupts what upstream sends: flips bytes, and sometimes
/// cuts the connection mid-stream. Deterministic for a given seed.
pub struct CorruptingRelay {
    pub port: u16,
}

impl CorruptingRelay {
    pub fn start(target: String, seed: u64) -> CorruptingRelay {
        use std::io::Write;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut rng = seed | 1;
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let Ok(mut upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                rng = xorshift(rng);
                let mut conn_rng = rng;
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match upstream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        conn_rng = xorshift(conn_rng);
                        match conn_rng % 8 {
                            0 => break, // cut
                            1..=4 => {
                                for _ in 0..1 + conn_rng % 4 {
                                    conn_rng = xorshift(conn_rng);
                                    let i = (conn_rng as usize) % n;
                                    buf[i] ^= (conn_rng >> 17) as u8 | 1;
                                }
                            }
                            _ => {}
                        }
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CorruptingRelay { port }
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}
