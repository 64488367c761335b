//! A real Prometheus scrapes a running AgentOS and answers a PromQL query about it.
//!
//! Runs the `prometheus` binary that [`provision::prometheus`] finds (`AGENTOS_PROMETHEUS`, then
//! `PATH`) or fetches into the build folder from Debian's package. Set
//! `AGENTOS_SKIP_PROMETHEUS=1` to skip; otherwise a binary that can be neither found nor
//! fetched fails the test, so a missing install is never mistaken for a pass.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{http, parse, repo, run_with};
use crate::provision;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every query of every board (each row, the control plane's included) is valid PromQL to a
/// real Prometheus, with Grafana's variables filled in as Grafana would.
fn check_board_queries(prom: SocketAddr) {
    let mut problems = Vec::new();
    for (file, d) in crate::dashboards::dashboards() {
        for (place, expr) in crate::dashboards::queries(&d) {
            if expr.starts_with("label_values(") {
                continue; // a Grafana function, not PromQL
            }
            let promql = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "5m")
                .replace("$agent", ".*");
            let (status, body) = http(
                prom,
                "GET",
                &format!("/api/v1/query?query={}", encode(&promql)),
            );
            if status != 200 || !body.contains("\"status\":\"success\"") {
                problems.push(format!("{file}: {place}: {promql}: {status} {body}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "Prometheus refused board queries:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn prometheus_scrapes_agentos_metrics() {
    if std::env::var_os("AGENTOS_SKIP_PROMETHEUS").is_some() {
        eprintln!("skipped: AGENTOS_SKIP_PROMETHEUS is set");
        return;
    }
    let prometheus = provision::prometheus();
    let data = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("config/demo.ron")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let probe: Box<dyn FnOnce(SocketAddr) -> String + Send> = Box::new(move |agentos| {
        let port = free_port();
        let cfg = work.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 200ms\nscrape_configs:\n  - job_name: agentos\n    static_configs:\n      - targets: ['{agentos}']\n"
            ),
        )
        .unwrap();
        let _prom = KillOnDrop(
            Command::new(&prometheus)
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    work.path().join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start prometheus"),
        );
        let prom: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // A counter: other tests in this binary share the process-wide recorder, and counters only grow.
        let query = "/api/v1/query?query=sum%28agentos_scheduler_tasks_finished_total%7Bstate%3D%22succeeded%22%7D%29";
        let deadline = std::time::Instant::now() + Duration::from_secs(45);
        loop {
            if let Ok(conn) = std::net::TcpStream::connect(prom) {
                drop(conn);
                let (status, body) = http(prom, "GET", query);
                if status == 200 && body.contains("\"result\":[{") {
                    check_board_queries(prom);
                    return body;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Prometheus never returned the metric"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let done = run_with(
        parse(&text),
        data.path(),
        Duration::from_secs(60),
        Some(probe),
    );
    let body = done.probe.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let value = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap();
    // At least the demo's five tasks.
    assert!(value >= 5.0, "{body}");
}
