//! Load benchmark of callback intake against the real `scrm` binary.
//!
//! Unique, signed, encrypted, realistic events (mean plaintext ≈ 600 bytes, Chinese text, every
//! plaintext distinct), each sent once over keep-alive HTTP/1.1 connections. The server runs pinned
//! to one core, this generator to the other. Reports durable callbacks/s, latency p50/p99/max, the
//! server's peak resident memory, and `lost = answered success − rows stored` (must be 0).
//!
//! ```text
//! cargo bench --bench callback_load -- --backend sqlite --connections 64 --events 200000 --repeat 3
//! cargo bench --bench callback_load -- --backend postgres
//! ```
//! Options: `--backend sqlite|postgres`, `--connections N`, `--events N`, `--repeat N`,
//! `--server-core N`, `--client-core N`, `--corps N` (N − 1 idle corps configured besides the one
//! the traffic is for: the cost of many corps on one instance). PostgreSQL: `SCRM_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) names the server; a database is created and dropped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use wecom_sdk::{CallbackCrypto, sender};

const CORP: &str = "ww1436e0e65a779aee";
const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const PINNED_MARK: &str = "SCRM_LOADGEN_PINNED";

#[derive(Debug, Clone)]
struct Options {
    backend: String,
    connections: usize,
    events: usize,
    repeat: usize,
    server_core: usize,
    client_core: usize,
    corps: usize,
}

fn options() -> anyhow::Result<Options> {
    let f = common::Flags::parse();
    Ok(Options {
        backend: f.backend()?,
        connections: f.number("--connections", 64)?,
        events: f.number("--events", 200_000)?,
        repeat: f.number("--repeat", 3)?,
        server_core: f.number("--server-core", 1)?,
        client_core: f.number("--client-core", 0)?,
        corps: f.number("--corps", 1)?.max(1),
    })
}

/// Realistic plaintexts: a mix of 客户联系 events and app messages with Chinese text; `n` makes
/// each one unique.
fn plaintext(n: usize, now: i64) -> String {
    let header = |event: &str, change: &str| {
        format!(
            "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
<CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>\
<ChangeType><![CDATA[{change}]]></ChangeType>"
        )
    };
    match n % 4 {
        0 => format!(
            "{}<UserID><![CDATA[zhangsan{:03}]]></UserID><ExternalUserID><![CDATA[wmQ2pCAAAA{n:022}]]></ExternalUserID>\
<State><![CDATA[2026秋季展会-华东区-二号展位-扫码-{n}]]></State><WelcomeCode><![CDATA[CALLBACK_CODE_{n:032x}]]></WelcomeCode>\
<Remark><![CDATA[上海某贸易有限公司采购部王经理，意向订购一批办公家具]]></Remark></xml>",
            header("change_external_contact", "add_external_contact"),
            n % 200
        ),
        1 => format!(
            "{}<UserID><![CDATA[lisi{:03}]]></UserID><ExternalUserID><![CDATA[wmQ2pCAAAA{n:022}]]></ExternalUserID>\
<Source><![CDATA[]]></Source><Note><![CDATA[客户要求本周五前回复报价，并提供增值税专用发票 {n}]]></Note></xml>",
            header("change_external_contact", "edit_external_contact"),
            n % 200
        ),
        2 => format!(
            "{}<ChatId><![CDATA[wrQ2pCAAAAgroup{n:016}]]></ChatId><UpdateDetail><![CDATA[add_member]]></UpdateDetail>\
<JoinScene>3</JoinScene><MemChangeCnt>2</MemChangeCnt><MemChangeList><Item><![CDATA[wmQ2pCAAAA{n:022}]]></Item>\
<Item><![CDATA[wmQ2pCAAAB{n:022}]]></Item></MemChangeList><LastMemVer>{:032x}</LastMemVer><CurMemVer>{:032x}</CurMemVer>\
<Name><![CDATA[华东区VIP客户交流群（第{n}期）]]></Name></xml>",
            header("change_external_chat", "update"),
            n * 7,
            n * 7 + 1
        ),
        _ => format!(
            "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[wangwu{:03}]]></FromUserName>\
<CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[帮我查一下客户王总上周的跟进记录和标签，\
顺便提醒我明天下午三点给他回电话确认合同细节，第{n}号请求]]></Content><MsgId>{}</MsgId><AgentID>1000002</AgentID></xml>",
            n % 200,
            7_382_910_012_345_678_901u64 + n as u64
        ),
    }
}

struct Prepared {
    uri: String,
    body: Bytes,
}

fn prepare(events: usize, port: u16) -> (Vec<Prepared>, f64) {
    let crypto = CallbackCrypto::new(TOKEN, KEY, CORP).expect("crypto");
    let now = chrono::Utc::now().timestamp();
    let mut total_len = 0usize;
    let requests = (0..events)
        .map(|n| {
            let text = plaintext(n, now);
            total_len += text.len();
            let r = sender::event(&crypto, &text, &now.to_string(), &n.to_string(), None);
            Prepared {
                uri: format!(
                    "http://127.0.0.1:{port}/wecom/callback/{CORP}/contacts?{}",
                    r.query
                ),
                body: Bytes::from(r.body.unwrap_or_default()),
            }
        })
        .collect();
    (requests, total_len as f64 / events.max(1) as f64)
}

struct RunResult {
    acked: usize,
    failed: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

async fn drive(
    requests: Arc<Vec<Prepared>>,
    start: usize,
    end: usize,
    connections: usize,
    port: u16,
) -> anyhow::Result<RunResult> {
    let next = Arc::new(AtomicUsize::new(start));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (requests, next) = (requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            stream.set_nodelay(true)?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let (mut acked, mut failed) = (0usize, 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let p = &requests[i];
                let req = hyper::Request::post(p.uri.as_str())
                    .header("host", "127.0.0.1")
                    .header("content-type", "text/xml")
                    .body(Full::new(p.body.clone()))?;
                let t = Instant::now();
                send.ready().await?;
                let response = send.send_request(req).await?;
                let ok = response.status() == 200;
                let body = response.into_body().collect().await?.to_bytes();
                latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                if ok && body.as_ref() == b"success" {
                    acked += 1;
                } else {
                    failed += 1;
                }
            }
            anyhow::Ok((acked, failed, latencies))
        }));
    }
    let mut result = RunResult {
        acked: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (a, f, l) = t.await??;
        result.acked += a;
        result.failed += f;
        result.latencies_us.extend(l);
    }
    result.elapsed = started.elapsed();
    Ok(result)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)]) / 1000.0
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Measurement {
    rate: f64,
    p50: f64,
    p99: f64,
    max: f64,
    rss: f64,
    lost: i64,
    failed: usize,
}

async fn one_run(o: &Options, run: usize) -> anyhow::Result<Measurement> {
    let dir = tempfile::tempdir()?;
    let (db_url, pg_name) = if o.backend == "postgres" {
        let admin = std::env::var("SCRM_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("scrm_bench_{}", uuid::Uuid::new_v4().simple());
        let db = scrm::platform::db::Db::connect(&admin)
            .await
            .with_context(|| format!("PostgreSQL at {admin}"))?;
        if let scrm::platform::db::Db::Postgres(pool) = &db {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(pool)
                .await?;
        }
        db.close().await;
        (
            scrm::platform::db::with_database_name(&admin, &name),
            Some((admin, name)),
        )
    } else {
        (
            format!("sqlite://{}", dir.path().join("scrm.db").display()),
            None,
        )
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // `--corps N`: N − 1 idle corps configured before the one the traffic is for.
    let idle_corps: String = (1..o.corps)
        .map(|i| {
            format!(
                "[[corps]]\ncorp_id = \"ww{i:016x}\"\n[[corps.apps]]\nname = \"contacts\"\n\
                 token = \"{TOKEN}\"\nencoding_aes_key = \"{KEY}\"\n"
            )
        })
        .collect();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{db_url}\"\n[log]\nlevel = \"warn\"\n{idle_corps}[[corps]]\ncorp_id = \"{CORP}\"\n[[corps.apps]]\nname = \"contacts\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{KEY}\"\n"
    );
    let config_path = dir.path().join("scrm.toml");
    std::fs::write(&config_path, config)?;
    let mut server = tokio::process::Command::new("taskset")
        .args([
            "-c",
            &o.server_core.to_string(),
            env!("CARGO_BIN_EXE_scrm"),
            "--config",
        ])
        .arg(&config_path)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("start the server under taskset")?;
    let pid = server.id().context("server pid")?;
    let mut ready = false;
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !ready {
        bail!("server did not start");
    }
    let warmup = (o.events / 20).max(1000);
    let (requests, mean_len) = prepare(o.events + warmup, port);
    let requests = Arc::new(requests);
    drive(requests.clone(), 0, warmup, o.connections, port).await?;
    let r = drive(
        requests.clone(),
        warmup,
        warmup + o.events,
        o.connections,
        port,
    )
    .await?;
    let rss = peak_rss_mib(pid);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), server.wait()).await;

    let db = scrm::platform::db::Db::connect(&db_url).await?;
    let stored = scrm::pipeline::inbox::count(&db, None).await?;
    db.close().await;
    if let Some((admin, name)) = pg_name {
        let db = scrm::platform::db::Db::connect(&admin).await?;
        if let scrm::platform::db::Db::Postgres(pool) = &db {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(pool)
            .await?;
        }
        db.close().await;
    }
    // Warm-up callbacks were acknowledged and stored too.
    let acked_total = (r.acked + warmup) as i64;
    let mut lat = r.latencies_us;
    lat.sort_unstable();
    let m = Measurement {
        rate: r.acked as f64 / r.elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        max: percentile(&lat, 1.0),
        rss,
        lost: acked_total - stored,
        failed: r.failed,
    };
    println!(
        "run {run}: {} events, mean plaintext {mean_len:.0} B, {} connections: {:.0} callbacks/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, server peak RSS {:.1} MiB, failed {}, lost {}",
        o.events, o.connections, m.rate, m.p50, m.p99, m.max, m.rss, m.failed, m.lost
    );
    Ok(m)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    common::pin_to_core(o.client_core, PINNED_MARK)?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!(
            "callback_load: backend {}, server on core {}, generator on core {}, {} corps configured",
            o.backend, o.server_core, o.client_core, o.corps
        );
        let mut runs = Vec::new();
        for run in 1..=o.repeat.max(1) {
            runs.push(one_run(&o, run).await?);
        }
        let lost: i64 = runs.iter().map(|m| m.lost).sum();
        println!(
            "median of {}: {:.0} callbacks/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, peak RSS {:.1} MiB; lost in all runs: {lost}",
            runs.len(),
            median(runs.iter().map(|m| m.rate).collect()),
            median(runs.iter().map(|m| m.p50).collect()),
            median(runs.iter().map(|m| m.p99).collect()),
            median(runs.iter().map(|m| m.max).collect()),
            median(runs.iter().map(|m| m.rss).collect()),
        );
        if lost != 0 {
            bail!("{lost} acknowledged callbacks were not stored");
        }
        anyhow::Ok(())
    })
}
