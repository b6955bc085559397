//! `kill -9` of the real `scrm` binary under load loses no callback it answered `success` to.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::{Backend, CORP, TestDb, add_contact_event, config_toml, dedup_key_of};
use tokio::sync::Mutex;
use wecom_sdk::{CallbackCrypto, sender};

async fn start_server(config_path: &std::path::Path, port: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrm"))
        .arg("--config")
        .arg(config_path)
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("SCRM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start scrm");
    if common::wait_ready(port).await {
        return child;
    }
    panic!("scrm did not become ready on port {port}");
}

async fn kill_9_under_load_loses_no_acknowledged_callback(backend: Backend) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let test_db = TestDb::create(backend).await;
    let config_path = test_db.dir.path().join("scrm.toml");
    std::fs::write(&config_path, config_toml(&test_db.url, "")).expect("write config");
    let port = common::free_port();
    let mut server = start_server(&config_path, port).await;

    let crypto = Arc::new(CallbackCrypto::new(common::TOKEN, common::KEY, CORP).expect("crypto"));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/wecom/callback/{CORP}/contacts");
    let mut senders = Vec::new();
    for _ in 0..16 {
        let (crypto, acknowledged, stop, next, client, url) = (
            crypto.clone(),
            acknowledged.clone(),
            stop.clone(),
            next.clone(),
            client.clone(),
            url.clone(),
        );
        senders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let now = chrono::Utc::now().timestamp();
                let plaintext = add_contact_event(n, now);
                let request =
                    sender::event(&crypto, &plaintext, &now.to_string(), &n.to_string(), None);
                let answer = client
                    .post(format!("{url}?{}", request.query))
                    .body(request.body.unwrap_or_default())
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == 200 => {
                        if r.text().await.is_ok_and(|t| t == "success") {
                            acknowledged.lock().await.push(dedup_key_of(&plaintext));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    // Let load build up, then pull the plug mid-flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start_kill().expect("kill -9");
    server.wait().await.expect("reap");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.expect("sender");
    }

    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        acknowledged.len() > 100,
        "only {} callbacks acknowledged before the kill",
        acknowledged.len()
    );
    // Restart on the same database (SQLite recovers its WAL) and check every acknowledged key.
    let server = start_server(&config_path, port).await;
    let db = test_db.connect().await;
    let mut lost = Vec::new();
    for key in &acknowledged {
        if !scrm::pipeline::inbox::contains(&db, CORP, key)
            .await
            .expect("query")
        {
            lost.push(key.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged callbacks lost: {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
    let stored = scrm::pipeline::inbox::count(&db, None)
        .await
        .expect("count");
    assert!(stored >= i64::try_from(acknowledged.len()).unwrap_or(i64::MAX));
    drop(server);
    db.close().await;
    test_db.drop_database().await;
}

both_backends!(kill_9_under_load_loses_no_acknowledged_callback);

/// Deletions stored before the server starts: the workers process them in batches (claims of many
/// rows, outcomes committed together, on connections that do not wait for the disk).
const BACKLOG: usize = 5_000;

/// A `del_follow_user` (the customer deleted the member) of relation `n`: no WeCom call needed.
fn deletion(n: usize, create_time: i64) -> scrm::pipeline::inbox::NewInboxRow {
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[del_follow_user]]></ChangeType>\
<UserID><![CDATA[sales{}]]></UserID><ExternalUserID><![CDATA[wmBatch{n:08}]]></ExternalUserID></xml>",
        n % 7
    );
    common::contact_row(
        body,
        "del_follow_user",
        create_time,
        scrm::platform::db::now_ms(),
    )
}

async fn scalar(db: &scrm::platform::db::Db, sql: &'static str) -> i64 {
    scrm::on_db!(db, |pool| sqlx::query_scalar(sql).fetch_one(pool).await).expect("query")
}

async fn kill_9_while_workers_process_a_backlog_loses_and_doubles_nothing(backend: Backend) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let test_db = TestDb::create(backend).await;
    let config_path = test_db.dir.path().join("scrm.toml");
    // Leases of 5 s (the least allowed): the rows the killed process held come back soon after the
    // restart.
    let config = config_toml(&test_db.url, "") + "\n[worker]\nlease_secs = 5\nconcurrency = 32\n";
    std::fs::write(&config_path, config).expect("write config");
    let db = test_db.connect().await;
    let base = chrono::Utc::now().timestamp() - 3600;
    let rows: Vec<_> = (0..BACKLOG)
        .map(|n| deletion(n, base + i64::try_from(n).unwrap()))
        .collect();
    for chunk in rows.chunks(500) {
        let refs: Vec<_> = chunk.iter().collect();
        scrm::pipeline::inbox::insert_batch(&db, &refs)
            .await
            .expect("store the backlog");
    }

    // Pull the plug once the workers are into the backlog, not through it.
    let port = common::free_port();
    let mut server = start_server(&config_path, port).await;
    const DONE: &str = "SELECT COUNT(*) FROM inbox WHERE state = 'done'";
    let started = std::time::Instant::now();
    let done_at_kill = loop {
        let done = scalar(&db, DONE).await;
        if done > 0 {
            break done;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the workers processed nothing in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    server.start_kill().expect("kill -9");
    server.wait().await.expect("reap");
    let backlog = i64::try_from(BACKLOG).unwrap();
    let done_after_kill = scalar(&db, DONE).await;
    assert!(
        done_after_kill < backlog,
        "the backlog was through before the kill ({done_at_kill} done when it was sent)"
    );

    // Restart: the dead process's leases run out and everything is processed.
    let server = start_server(&config_path, port).await;
    let started = std::time::Instant::now();
    while scalar(&db, DONE).await < backlog {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} of {BACKLOG} done 90 s after the restart",
            scalar(&db, DONE).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once each: every relation ended, one history entry per relation, no dead letter, and no
    // row took more than the attempt the kill interrupted plus one.
    let ended = scalar(
        &db,
        "SELECT COUNT(*) FROM follow_relation WHERE status = 'deleted_by_customer'",
    )
    .await;
    let history = scalar(
        &db,
        "SELECT COUNT(*) FROM relation_event WHERE change = 'deleted_by_customer'",
    )
    .await;
    let distinct = scalar(
        &db,
        "SELECT COUNT(*) FROM (SELECT DISTINCT user_id, external_user_id FROM relation_event) d",
    )
    .await;
    assert_eq!((ended, history, distinct), (backlog, backlog, backlog));
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM inbox WHERE state <> 'done'").await,
        0
    );
    assert!(
        scalar(
            &db,
            "SELECT CAST(COALESCE(MAX(attempts), 0) AS BIGINT) FROM inbox"
        )
        .await
            <= 2
    );
    assert!(
        done_after_kill > 0,
        "nothing recorded done before the kill survived it"
    );
    drop(server);
    db.close().await;
    test_db.drop_database().await;
}

both_backends!(kill_9_while_workers_process_a_backlog_loses_and_doubles_nothing);
