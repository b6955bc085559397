//! The sidebar's first view of a customer under load: 50 salespeople at once, each opening their
//! customer (50 corp tags in the library and on the relation, 200 notes), against the release
//! `scrm serve` pinned to one core (the generator on another), over TCP to the database.
//!
//! ```text
//! cargo bench --bench sidebar -- --backend sqlite   [--clients 50] [--views 40] [--repeat 3]
//!                                                    [--pace-ms 1000 | --pace-ms 0]
//! ```
//!
//! Paced (the default): each salesperson opens a view every second, spread over the second — 50
//! views a second, far more than 50 people at work open. `--pace-ms 0`: back to back, the
//! saturation throughput of one core (latency is then queueing: 50 requests always waiting).
//!
//! Prints per run the view's latency (p50, p95, p99, as the client sees it over loopback), and
//! once the page weight: the shell, its assets and one customer view.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a test or benchmark fails loudly"
)]

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use scrm::domain::customers::{self, CustomerProfile, RelationSnapshot};
use scrm::domain::tags::{LibraryGroup, LibraryTag};
use scrm::platform::db::{Db, now_ms};

const CORP: &str = "ww1436e0e65a779aee";
const PINNED_MARK: &str = "SCRM_SIDEBAR_BENCH_PINNED";

struct Options {
    backend: String,
    clients: usize,
    views: usize,
    repeat: usize,
    server_core: usize,
    client_core: usize,
    /// Each salesperson opens a view every this many ms (0: back to back, the saturation run).
    pace_ms: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        backend: "sqlite".to_owned(),
        clients: 50,
        views: 40,
        repeat: 3,
        server_core: 1,
        client_core: 0,
        pace_ms: 1000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().context("a value after the flag");
        match a.as_str() {
            "--backend" => o.backend = value()?,
            "--clients" => o.clients = value()?.parse()?,
            "--views" => o.views = value()?.parse()?,
            "--repeat" => o.repeat = value()?.parse()?,
            "--server-core" => o.server_core = value()?.parse()?,
            "--client-core" => o.client_core = value()?.parse()?,
            "--pace-ms" => o.pace_ms = value()?.parse()?,
            "--bench" => {}
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

/// 50 tags in 5 groups; `clients` salespeople, each following one customer who carries every
/// tag and 200 notes; a session each. Returns (external_userid, session token) per salesperson.
async fn seed(db: &Db, clients: usize) -> anyhow::Result<Vec<(String, String)>> {
    let now = now_ms();
    let groups: Vec<LibraryGroup> = (0..5)
        .map(|g| LibraryGroup {
            group_id: format!("etgroup{g:04}"),
            name: format!("标签组 {g}"),
            sort_order: 0,
            created_at_ms: None,
            tags: (0..10)
                .map(|t| LibraryTag {
                    tag_id: format!("ettag{g:02}{t:02}"),
                    name: format!("标签{g}-{t}"),
                    sort_order: 0,
                    created_at_ms: None,
                })
                .collect(),
        })
        .collect();
    customers::record::replace_tag_library(db, CORP, &groups, now).await?;
    let all_tags: Vec<String> = groups
        .iter()
        .flat_map(|g| g.tags.iter().map(|t| t.tag_id.clone()))
        .collect();
    let corp = wecom_sdk::CorpId::try_from(CORP)?;
    let mut out = Vec::with_capacity(clients);
    for i in 0..clients {
        let user = wecom_sdk::UserId::try_from(format!("sales{i:03}"))?;
        let ext = wecom_sdk::ExternalUserId::try_from(format!("wmbenchcustomer{i:05}"))?;
        customers::upsert_customer(
            db,
            CORP,
            &CustomerProfile {
                external_user_id: ext.clone(),
                name: format!("客户{i}"),
                customer_type: 1,
                gender: 0,
                avatar: String::new(),
                corp_name: "某某科技有限公司".to_owned(),
                corp_full_name: String::new(),
                position: String::new(),
                unionid: None,
            },
            now,
        )
        .await?;
        customers::apply_relation(
            db,
            &corp,
            &RelationSnapshot {
                user_id: user.clone(),
                external_user_id: ext.clone(),
                remark: format!("王总{i}"),
                description: String::new(),
                remark_corp_name: String::new(),
                remark_mobiles: Vec::new(),
                tag_ids: all_tags.clone(),
                add_way: 1,
                state: Some("展会".to_owned()),
                oper_user_id: None,
                added_at_ms: Some(now),
            },
            now,
            None,
        )
        .await?;
        for n in 0..200 {
            scrm::domain::followup::create_note(
                db,
                &corp,
                &ext,
                user.as_str(),
                &format!("第 {n} 次跟进：客户对专业版有兴趣，约了下周演示，喜欢晚上沟通。"),
                None,
                now,
            )
            .await?;
        }
        let (token, _) =
            scrm::auth::session::create(db, &corp, scrm::auth::session::SignIn::Staff(&user), now)
                .await?;
        out.push((ext.to_string(), token));
    }
    Ok(out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn drive(
    port: u16,
    people: Arc<Vec<(String, String)>>,
    views: usize,
    pace: Duration,
) -> anyhow::Result<(Vec<f64>, Duration)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(people.len())
        .build()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let n = people.len().max(1) as u32;
    for (i, (ext, token)) in people.iter().cloned().enumerate() {
        let http = http.clone();
        // Spread the salespeople over the interval, as people are.
        let phase = pace / n * u32::try_from(i).unwrap_or(0);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(views);
            let mut next = tokio::time::Instant::now() + phase;
            for _ in 0..views {
                if !pace.is_zero() {
                    tokio::time::sleep_until(next).await;
                    next += pace;
                }
                let t = Instant::now();
                let r = http
                    .get(format!("http://127.0.0.1:{port}/sidebar/customer/{ext}"))
                    .header("Cookie", format!("scrm_session={token}"))
                    .send()
                    .await?;
                let status = r.status();
                let body = r.bytes().await?;
                if status != 200 || body.len() < 1000 {
                    bail!("view answered {status} with {} bytes", body.len());
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by(f64::total_cmp);
    Ok((all, started.elapsed()))
}

async fn page_weight(port: u16, token: &str, ext: &str) -> anyhow::Result<usize> {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let cookie = format!("scrm_session={token}");
        async move {
            let r = http
                .get(format!("http://127.0.0.1:{port}{path}"))
                .header("Cookie", cookie)
                .send()
                .await?;
            anyhow::Ok(r.text().await?)
        }
    };
    let shell = get(format!("/sidebar?corp={CORP}")).await?;
    let mut total = shell.len();
    for marker in ["href=\"/sidebar/assets/", "src=\"/sidebar/assets/"] {
        let name = shell
            .split(marker)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .context("asset in the shell")?;
        total += get(format!("/sidebar/assets/{name}")).await?.len();
    }
    total += get(format!("/sidebar/customer/{ext}")).await?.len();
    Ok(total)
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    common::pin_to_core(o.client_core, PINNED_MARK)?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let (db_url, pg) = common::fresh_database(&o.backend, dir.path()).await?;
        let db = Db::connect(&db_url).await?;
        db.migrate().await?;
        let t = Instant::now();
        let people = Arc::new(seed(&db, o.clients).await?);
        db.close().await;
        println!(
            "sidebar: backend {}, {} salespeople, 50 tags and 200 notes each, seeded in {:.1} s; server on core {}, generator on core {}",
            o.backend,
            o.clients,
            t.elapsed().as_secs_f64(),
            o.server_core,
            o.client_core
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{db_url}\"\n[log]\nlevel = \"warn\"\n\
             [sync]\nenabled = false\n[sidebar]\npublic_url = \"http://127.0.0.1:{port}\"\n\
             [[corps]]\ncorp_id = \"{CORP}\"\n[[corps.apps]]\nname = \"contacts\"\n\
             token = \"hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo\"\n\
             encoding_aes_key = \"6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt\"\n"
        );
        let config_path = dir.path().join("scrm.toml");
        std::fs::write(&config_path, config)?;
        let mut server = tokio::process::Command::new("taskset")
            .args(["-c", &o.server_core.to_string(), env!("CARGO_BIN_EXE_scrm"), "--config"])
            .arg(&config_path)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start the server under taskset")?;
        let mut ready = false;
        for _ in 0..400 {
            if reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if !ready {
            bail!("server did not start");
        }
        let (ext, token) = people[0].clone();
        let weight = page_weight(port, &token, &ext).await?;
        println!("page weight: {:.1} KB (shell, script, stylesheet, one customer view)", weight as f64 / 1024.0);
        drive(port, people.clone(), 2, Duration::ZERO).await?; // warm-up
        let pace = Duration::from_millis(o.pace_ms);
        if pace.is_zero() {
            println!("saturation: every salesperson opens the next view as soon as one arrives");
        } else {
            println!("paced: every salesperson opens a view every {} ms", o.pace_ms);
        }
        let mut p95s = Vec::new();
        for run in 1..=o.repeat {
            let (lat, elapsed) = drive(port, people.clone(), o.views, pace).await?;
            let p95 = percentile(&lat, 0.95);
            p95s.push(p95);
            println!(
                "run {run}: {} views by {} salespeople at once in {:.1} s ({:.0} views/s): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
                lat.len(),
                o.clients,
                elapsed.as_secs_f64(),
                lat.len() as f64 / elapsed.as_secs_f64(),
                percentile(&lat, 0.50),
                p95,
                percentile(&lat, 0.99)
            );
        }
        p95s.sort_by(f64::total_cmp);
        println!("median p95 over {} runs: {:.1} ms", o.repeat, p95s[p95s.len() / 2]);
        let _ = server.kill().await;
        common::drop_database(pg).await?;
        anyhow::Ok(())
    })
}
