//! The server on a loopback port: what needs a real connection (limits, timeouts, the peer
//! address, the event stream over the wire).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::{fixture, Fixture, GOOD};
use crate::http::{bind, serve};

/// Starts the server for `f` on a free loopback port.
async fn start(f: &Fixture) -> SocketAddr {
    let (listener, addr) = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    actix_rt::spawn(serve(listener, f.state.clone()));
    addr
}

async fn connect(addr: SocketAddr, raw: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    s
}

/// Reads until `done` holds for what arrived, or the connection ends; fails after 5 s.
async fn read_until(s: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if done(&text) {
            return text;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("timed out; got so far: {text:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return text,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// One complete response with a `Content-Length` body.
fn complete(text: &str) -> bool {
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= len
}

/// Sends one request on its own connection and reads the response.
async fn request(addr: SocketAddr, raw: &str) -> String {
    let mut s = connect(addr, raw).await;
    read_until(&mut s, complete).await
}

fn body_of(response: &str) -> Value {
    serde_json::from_str(response.split_once("\r\n\r\n").map_or("", |(_, b)| b))
        .unwrap_or(Value::Null)
}

#[actix_rt::test]
async fn the_peer_address_names_who_submitted() {
    let f = fixture(None);
    let addr = start(&f).await;
    let raw = format!(
        "POST /api/workflows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{GOOD}",
        GOOD.len()
    );
    let resp = request(addr, &raw).await;
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let resp = request(addr, "GET /api/workflows/fix HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let by = body_of(&resp)["submitted_by"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(by.starts_with("api 127.0.0.1:"), "{resp}");
}

#[actix_rt::test]
async fn a_declared_length_over_the_limit_is_413_before_the_body_is_sent() {
    let f = fixture(None);
    let addr = start(&f).await;
    let resp = request(
        addr,
        "POST /api/workflows HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
}

#[actix_rt::test]
async fn a_chunked_body_over_the_limit_is_413_while_it_is_read() {
    let f = fixture(None);
    let addr = start(&f).await;
    let chunk = "x".repeat(1000);
    let mut raw =
        "POST /api/workflows HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned();
    for _ in 0..5 {
        raw.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    raw.push_str("0\r\n\r\n");
    let resp = request(addr, &raw).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
}

#[actix_rt::test]
async fn a_slow_body_is_408_and_a_slow_head_is_cut_off() {
    let mut f = fixture(None);
    f.state.api.request_timeout = Duration::from_millis(200);
    let addr = start(&f).await;
    let resp = request(
        addr,
        "POST /api/workflows HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    // Half a head, then silence: the server closes the connection.
    let mut s = connect(addr, "GET /healthz HTTP/1.1\r\nHo").await;
    let got = read_until(&mut s, |_| false).await;
    assert!(!got.starts_with("HTTP/1.1 200"), "{got}");
}

#[actix_rt::test]
async fn connections_beyond_the_limit_wait_for_a_free_one() {
    let mut f = fixture(None);
    f.state.api.max_connections = 1;
    let addr = start(&f).await;
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = connect(addr, get).await;
    let resp = read_until(&mut first, complete).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // `first` stays open (keep-alive) and holds the only slot.
    let mut second = connect(addr, get).await;
    let mut buf = [0u8; 64];
    let early = timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(early.is_err(), "answered while the slot was taken");
    drop(first);
    let resp = read_until(&mut second, complete).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[actix_rt::test]
async fn events_resume_over_the_wire_and_end_at_shutdown() {
    let f = fixture(Some("tok"));
    for t in ["w/a", "w/b", "v/c"] {
        f.state
            .trace
            .emit("task_state", json!({"task": t, "agent": "a"}));
    }
    let addr = start(&f).await;
    let denied = request(addr, "GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");

    let mut s = connect(
        addr,
        "GET /api/events?workflow=w HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n\
         Last-Event-ID: 1\r\n\r\n",
    )
    .await;
    let got = read_until(&mut s, |t| t.contains("id: 2\n")).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("content-type: text/event-stream"), "{got}");
    assert!(got.contains("\"task\":\"w/b\""), "{got}");
    assert!(!got.contains("id: 1\n"), "already seen: {got}");

    f.state
        .trace
        .emit("llm_call", json!({"task": "v/x", "instance": "a#0"}));
    f.state
        .trace
        .emit("llm_call", json!({"task": "w/y", "instance": "a#0"}));
    let got = read_until(&mut s, |t| t.contains("id: 5\n")).await;
    assert!(
        !got.contains("id: 3\n") && !got.contains("id: 4\n"),
        "filtered out: {got}"
    );

    f.stop.send_replace(true);
    let rest = read_until(&mut s, |_| false).await;
    assert!(
        rest.ends_with("0\r\n\r\n"),
        "the stream ends cleanly: {rest:?}"
    );
}
