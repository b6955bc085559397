//! The server on the open internet: slow and greedy clients cannot hold connections, starve
//! WeCom's callbacks or make a metrics scrape query the database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::{common, emulated};
use std::time::{Duration, Instant};

use crate::common::{Backend, TestApp, add_contact_event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `[callback]` lines, then the tables the hardening tests need.
fn limits(extra: &str) -> String {
    format!("timestamp_window_secs = 0\n{extra}")
}

/// Sends one signed callback on a fresh connection: status, body and how long it took.
async fn timed_callback(app: &TestApp, n: u64) -> (u16, String, Duration) {
    let request = app.event_request(&add_contact_event(n, 1_718_000_000));
    let started = Instant::now();
    let response = app.post_callback(&request).await;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    (status, body, started.elapsed())
}

/// 1,000 connections send a request head one byte a second. Each is closed once the head
/// timeout passes, and WeCom's callbacks sent meanwhile are answered `success` within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_cut_off_and_callbacks_are_still_answered_within_a_second() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &limits("[http]\nheader_read_timeout_ms = 2000\n"),
    )
    .await;
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    let head = b"POST /wecom/callback/x/y HTTP/1.1\r\nHost: scrm\r\n";
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..1_000 {
        let addr = addr.clone();
        slow.spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            let opened = Instant::now();
            let mut buf = [0u8; 256];
            for byte in head.iter().cycle() {
                if stream.write_all(&[*byte]).await.is_err() {
                    return opened.elapsed();
                }
                // Closed by the server: the read sees EOF (or a reset) before the next byte.
                let read =
                    tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
                if let Ok(Ok(0) | Err(_)) = read {
                    return opened.elapsed();
                }
                if opened.elapsed() > Duration::from_secs(30) {
                    return opened.elapsed();
                }
            }
            opened.elapsed()
        });
    }
    // WeCom's callbacks while the slow connections hold on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut slowest = Duration::ZERO;
    for n in 0..20 {
        let (status, body, took) = timed_callback(&app, n).await;
        assert_eq!((status, body.as_str()), (200, "success"));
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest callback {slowest:?}"
    );
    let mut held = Vec::new();
    while let Some(lasted) = slow.join_next().await {
        held.push(lasted.unwrap());
    }
    held.sort();
    let longest = *held.last().unwrap();
    println!(
        "1000 slow connections closed after {:?} (median) … {longest:?} (longest); slowest callback {slowest:?}",
        held[held.len() / 2]
    );
    assert!(
        longest < Duration::from_millis(4_500),
        "a slow connection was held {longest:?} (head timeout 2 s)"
    );
    app.stop().await;
}

/// A body that stops arriving is answered 408 once `[http] body_timeout_ms` passes, for a
/// callback and for an API body alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, &limits("[http]\nbody_timeout_ms = 1000\n")).await;
    let (_, key) = scrm::auth::create_key(
        &app.db,
        &crate::common::corp(common::CORP),
        scrm::auth::Role::Admin,
        None,
        "test",
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    for path in [
        format!(
            "/wecom/callback/{}/contacts?msg_signature=a&timestamp=1&nonce=b",
            common::CORP
        ),
        "/api/v1/transfers".to_owned(),
    ] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: scrm\r\nAuthorization: Bearer {key}\r\nContent-Type: text/xml\r\nContent-Length: 1000\r\n\r\n<xml>"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{path}: {took:?}"
        );
    }
    app.stop().await;
}

/// API clients that fill their in-flight pool get 503 at once; WeCom's callbacks have a pool of
/// their own and are still answered `success` within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_flood_cannot_take_the_callbacks_capacity() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &limits("[http]\napi_in_flight = 8\nbody_timeout_ms = 5000\n"),
    )
    .await;
    let (_, key) = scrm::auth::create_key(
        &app.db,
        &crate::common::corp(common::CORP),
        scrm::auth::Role::Admin,
        None,
        "test",
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    // Eight API requests that never finish their bodies hold the API pool.
    let mut holders = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/v1/transfers HTTP/1.1\r\nHost: scrm\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        holders.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let shed = app.get("/api/v1/transfers").await;
    assert_eq!(shed.status(), 503, "the API pool is full");
    assert_eq!(
        shed.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "shed at once"
    );
    for n in 0..10 {
        let (status, body, took) = timed_callback(&app, 100 + n).await;
        assert_eq!((status, body.as_str()), (200, "success"));
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    drop(holders);
    app.stop().await;
}

/// A scrape reads the recorder only: with the database unreachable it still answers, with the
/// gauges the background task set. With `[metrics] token` it needs the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_never_queries_the_database_and_can_require_a_token() {
    let app = TestApp::spawn_with(
        Backend::Postgres,
        &limits("[metrics]\ntoken = \"scrape-token-0123456789\"\nrefresh_secs = 1\n"),
    )
    .await;
    let request = app.event_request(&add_contact_event(1, 1_718_000_000));
    assert_eq!(app.post_callback(&request).await.status(), 200);
    assert_eq!(app.get("/metrics").await.status(), 401);
    let scrape = || async {
        app.client
            .get(format!("{}/metrics", app.base_url))
            .bearer_auth("scrape-token-0123456789")
            .send()
            .await
            .unwrap()
    };
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape().await.text().await.unwrap();
        if text.contains("scrm_inbox_pending") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains("scrm_outbox_pending"), "{text}");

    // The database goes away: no new connection, every open one cut.
    let name = app.test_db.pg_name.clone().unwrap();
    let admin = scrm::platform::db::Db::connect(&common::pg_admin_url())
        .await
        .unwrap();
    let scrm::platform::db::Db::Postgres(pool) = &admin else {
        unreachable!()
    };
    let run = |sql: String| async move {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .unwrap();
    };
    run(format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"
    ))
    .await;
    run(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;
    let started = Instant::now();
    let response = scrape().await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("scrm_inbox_pending")
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        app.get("/readyz").await.status(),
        503,
        "the database is gone"
    );
    run(format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")).await;
    admin.close().await;
    app.stop().await;
}

/// `[metrics] listen`: `/metrics` on its own address, not on the public listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_a_listener_of_their_own() {
    let port = common::free_port();
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &limits(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")),
    )
    .await;
    assert_eq!(app.get("/metrics").await.status(), 404);
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(r) = app
            .client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            answered = Some(r.status().as_u16());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered, Some(200));
    app.stop().await;
}

/// An envelope with a second `Encrypt` (say, a valid signed one after an attacker's) is refused
/// as ambiguous instead of taking the last; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_with_a_repeated_element_is_refused() {
    let app = TestApp::spawn_with(Backend::Sqlite, &limits("")).await;
    let request = app.event_request(&add_contact_event(7, 1_718_000_000));
    let body = request.body.clone().unwrap();
    let doubled = body.replacen("<xml>", "<xml><Encrypt><![CDATA[AAAA]]></Encrypt>", 1);
    assert_ne!(doubled, body);
    let response = app.post_raw("contacts", &request.query, doubled).await;
    assert_eq!(response.status(), 400);
    assert_eq!(app.inbox_count().await, 0);
    assert_eq!(
        app.post_callback(&request).await.status(),
        200,
        "the plain one is fine"
    );
    app.stop().await;
}

both_backends!(searches_match_percent_and_underscore_literally_and_ignore_case);

/// `%`, `_` and `\` in a search match themselves, and case is ignored the same way on both
/// backends; a salesperson's search matches only their own remarks.
async fn searches_match_percent_and_underscore_literally_and_ignore_case(backend: Backend) {
    let test_db = common::TestDb::create(backend).await;
    let db = test_db.connect().await;
    for (ext, name, user, remark) in [
        ("wmA", "100%_真", "lisi", "VIP Client"),
        ("wmB", "100x真", "lisi", ""),
        ("wmC", "Wang\\Wu", "lisi", ""),
        ("wmD", "other", "wangwu", "wangwu's vip"),
        ("wmD", "other", "lisi", ""),
    ] {
        common::seed_relation(&db, ext, name, user, remark).await;
    }
    let search = |staff: Option<&'static str>, q: &'static str| {
        let db = db.clone();
        async move {
            scrm::domain::customers::list_customers(
                &db,
                &crate::common::corp(common::CORP),
                &scrm::domain::customers::CustomerSearch {
                    staff,
                    query: Some(q),
                    ..Default::default()
                },
                50,
            )
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.external_user_id)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(search(None, "100%").await, ["wmA"]);
    assert_eq!(
        search(None, "0_").await,
        Vec::<String>::new(),
        "_ is not a wildcard"
    );
    assert_eq!(search(None, "%_").await, ["wmA"]);
    assert_eq!(search(None, "g\\w").await, ["wmC"]);
    assert_eq!(search(None, "vip client").await, ["wmA"], "case ignored");
    assert_eq!(search(None, "VIP").await, ["wmA", "wmD"]);
    assert_eq!(
        search(Some("lisi"), "vip").await,
        ["wmA"],
        "lisi's search does not see wangwu's remark"
    );
    db.close().await;
    test_db.drop_database().await;
}

both_backends!(searches_follow_renames_remark_edits_and_ended_relations);

/// A search sees a customer's new name and a remark written later, forgets the remark of a
/// relation that ended and a customer nobody follows any more, and never matches across a name and
/// a remark.
async fn searches_follow_renames_remark_edits_and_ended_relations(backend: Backend) {
    let test_db = common::TestDb::create(backend).await;
    let db = test_db.connect().await;
    for (ext, name, user, remark) in [
        ("wmA", "张三", "lisi", "老客户"),
        ("wmA", "张三", "wangwu", "展会"),
        ("wmB", "李四", "lisi", ""),
    ] {
        common::seed_relation(&db, ext, name, user, remark).await;
    }
    let search = |q: &'static str| {
        let db = db.clone();
        async move {
            scrm::domain::customers::list_customers(
                &db,
                &crate::common::corp(common::CORP),
                &scrm::domain::customers::CustomerSearch {
                    query: Some(q),
                    ..Default::default()
                },
                50,
            )
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.external_user_id, c.followers))
            .collect::<Vec<_>>()
        }
    };
    let found = |ids: &[&str], followers: &[&str]| {
        ids.iter()
            .zip(followers)
            .map(|(i, f)| ((*i).to_owned(), (*f).to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(search("展会").await, found(&["wmA"], &["lisi,wangwu"]));
    assert_eq!(
        search("三\n老").await,
        [],
        "name and remark are searched apart"
    );

    common::seed_relation(&db, "wmB", "李四光", "lisi", "VIP").await;
    assert_eq!(search("四光").await, found(&["wmB"], &["lisi"]), "renamed");
    assert_eq!(
        search("vip").await,
        found(&["wmB"], &["lisi"]),
        "remark edited"
    );

    let now = scrm::platform::db::now_ms() + 1;
    let (corp, a) = (common::corp(common::CORP), common::ext("wmA"));
    for user in ["wangwu", "lisi"] {
        let user = common::user(user);
        let key = scrm::domain::customers::RelationKey {
            corp_id: &corp,
            user_id: &user,
            external_user_id: &a,
        };
        let reason = scrm::domain::customers::EndReason::DeletedByCustomer;
        assert!(
            scrm::domain::customers::end_relation(&db, key, reason, now, ended_note(now))
                .await
                .unwrap()
        );
        if user.as_str() == "wangwu" {
            assert_eq!(search("展会").await, [], "an ended relation's remark");
            assert_eq!(search("张三").await, found(&["wmA"], &["lisi"]));
        }
    }
    assert_eq!(search("张三").await, [], "nobody follows 张三 any more");
    db.close().await;
    test_db.drop_database().await;
}

/// The SQLite database (and its WAL) is readable by its user only.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = format!("sqlite://{}", data.join("scrm.db").display());
    let db = scrm::platform::db::Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("scrm.db")), 0o600);
    assert_eq!(mode(&data.join("scrm.db-wal")), 0o600);
    db.close().await;
}

/// `serve` refuses the published sample Token / EncodingAESKey on a public address, and
/// `http://` for a WeCom API that is not on this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_sample_keys_and_plain_http_are_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("scrm.db").display());
    std::fs::write(
        dir.path().join("scrm.toml"),
        common::config_toml(&db_url, ""),
    )
    .unwrap();
    let port = common::free_port();
    let out = common::scrm(
        dir.path(),
        &["serve", "--listen", &format!("0.0.0.0:{port}")],
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("published sample") && out.stderr.contains("contacts"),
        "{}",
        out.stderr
    );
    let remote = format!(
        "{}\n[wecom]\napi_base_url = \"http://qyapi.example.com/cgi-bin/\"\n",
        common::config_toml(&db_url, "")
    );
    std::fs::write(dir.path().join("scrm.toml"), remote).unwrap();
    let out = common::scrm(dir.path(), &["migrate"]).await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("wecom.api_base_url"), "{}", out.stderr);
}

both_backends!(customer_search_filters_by_phone_tag_stage_channel_and_dates);

/// Each filter of the customer search narrows it to what it names, the filters combine on one
/// relation, and a search of ended relations finds customers nobody follows any more (both
/// backends: the tag test reads JSON differently on each).
async fn customer_search_filters_by_phone_tag_stage_channel_and_dates(backend: Backend) {
    use scrm::domain::customers::{
        self, CustomerSearch, EndReason, RelationKey, RelationSnapshot, Span, StageFilter,
    };
    let test_db = common::TestDb::create(backend).await;
    let db = test_db.connect().await;
    const DAY: i64 = 86_400_000;
    let t0 = 1_767_225_600_000_i64; // 2026-01-01 08:00 China time
    /// A relation to seed: customer, staff, mobiles, tags, channel, day added.
    type Seed<'a> = (
        &'a str,
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        Option<&'a str>,
        i64,
    );
    let rows: [Seed<'_>; 5] = [
        (
            "wmA",
            "lisi",
            &["13800001111"],
            &["etVIP"],
            Some("expo2026"),
            0,
        ),
        ("wmB", "lisi", &[], &["etvip", "etNew"], Some("web"), 10),
        (
            "wmC",
            "wangwu",
            &["+86 139-0000-2222"],
            &[],
            Some("expo2025"),
            20,
        ),
        ("wmD", "wangwu", &[], &["etVIP"], None, 30),
        ("wmD", "lisi", &["13800001111"], &[], None, 31),
    ];
    for (ext, user, mobiles, tags, channel, day) in rows {
        common::seed_customer(&db, ext, ext, t0).await;
        customers::apply_relation(
            &db,
            &common::corp(common::CORP),
            &RelationSnapshot {
                user_id: common::user(user),
                external_user_id: common::ext(ext),
                remark: String::new(),
                description: String::new(),
                remark_corp_name: String::new(),
                remark_mobiles: mobiles.iter().map(|m| (*m).to_owned()).collect(),
                tag_ids: tags.iter().map(|t| (*t).to_owned()).collect(),
                add_way: 1,
                state: channel.map(str::to_owned),
                oper_user_id: None,
                added_at_ms: Some(t0 + day * DAY),
            },
            t0 + 40 * DAY,
            None,
        )
        .await
        .unwrap();
    }
    // wmC was deleted by wangwu on day 35: nobody follows them now.
    let (corp, wangwu, wm_c) = (
        common::corp(common::CORP),
        common::user("wangwu"),
        common::ext("wmC"),
    );
    customers::end_relation(
        &db,
        RelationKey {
            corp_id: &corp,
            user_id: &wangwu,
            external_user_id: &wm_c,
        },
        EndReason::DeletedByStaff,
        t0 + 41 * DAY,
        ended_note(t0 + 35 * DAY),
    )
    .await
    .unwrap();
    scrm::domain::followup::set_customer_stage(&db, &corp, &common::ext("wmB"), "成交", "lisi", t0)
        .await
        .unwrap();
    let find = |search: CustomerSearch<'static>| {
        let db = db.clone();
        async move {
            customers::list_customers(&db, &common::corp(common::CORP), &search, 50)
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.external_user_id, c.followers))
                .collect::<Vec<_>>()
        }
    };
    let ids = |found: Vec<(String, String)>| found.into_iter().map(|(e, _)| e).collect::<Vec<_>>();
    let all = CustomerSearch::default();
    assert_eq!(ids(find(all).await), ["wmA", "wmB", "wmD"], "active only");
    let phone = |p: &'static str| CustomerSearch {
        phone: Some(p),
        ..all
    };
    assert_eq!(ids(find(phone("0000111")).await), ["wmA", "wmD"]);
    assert_eq!(
        ids(find(phone("2222")).await),
        Vec::<String>::new(),
        "wmC ended"
    );
    let tag = |t: &'static str| CustomerSearch {
        tag_id: Some(t),
        ..all
    };
    assert_eq!(ids(find(tag("etVIP")).await), ["wmA", "wmD"], "case kept");
    assert_eq!(ids(find(tag("etvip")).await), ["wmB"]);
    assert_eq!(
        ids(find(tag("etV")).await),
        Vec::<String>::new(),
        "whole ids"
    );
    let stage = |s| CustomerSearch {
        stage: Some(s),
        ..all
    };
    assert_eq!(ids(find(stage(StageFilter::Named("成交"))).await), ["wmB"]);
    assert_eq!(ids(find(stage(StageFilter::Unset)).await), ["wmA", "wmD"]);
    let channel = |c: &'static str| CustomerSearch {
        channel: Some(c),
        ..all
    };
    assert_eq!(ids(find(channel("expo2026")).await), ["wmA"]);
    assert_eq!(ids(find(channel("expo")).await), Vec::<String>::new());
    assert_eq!(ids(find(channel("expo*")).await), ["wmA"], "wmC ended");
    let added = |from: i64, to: i64| CustomerSearch {
        added: Span {
            from_ms: Some(t0 + from * DAY),
            to_ms: Some(t0 + to * DAY),
        },
        ..all
    };
    assert_eq!(ids(find(added(5, 31)).await), ["wmB", "wmD"]);
    assert_eq!(ids(find(added(31, 32)).await), ["wmD"]);
    // Filters combine on one relation: lisi's relation with wmD has the phone, wangwu's the tag.
    assert_eq!(
        ids(find(CustomerSearch {
            phone: Some("13800001111"),
            tag_id: Some("etVIP"),
            ..all
        })
        .await),
        ["wmA"]
    );
    // One member's customers, filtered on their own relation.
    assert_eq!(
        ids(find(CustomerSearch {
            staff: Some("wangwu"),
            tag_id: Some("etVIP"),
            ..all
        })
        .await),
        ["wmD"]
    );
    assert_eq!(
        ids(find(CustomerSearch {
            staff: Some("lisi"),
            tag_id: Some("etVIP"),
            ..all
        })
        .await),
        ["wmA"]
    );
    // Ended relations: who was lost, when; the followers column is who follows now.
    let ended = |from: i64, to: i64| CustomerSearch {
        ended: Span {
            from_ms: Some(t0 + from * DAY),
            to_ms: Some(t0 + to * DAY),
        },
        ..all
    };
    assert_eq!(
        find(ended(30, 40)).await,
        [("wmC".to_owned(), String::new())]
    );
    assert_eq!(ids(find(ended(36, 40)).await), Vec::<String>::new());
    assert_eq!(
        ids(find(CustomerSearch {
            staff: Some("wangwu"),
            ..ended(0, 40)
        })
        .await),
        ["wmC"]
    );
    assert_eq!(
        ids(find(CustomerSearch {
            staff: Some("lisi"),
            ..ended(0, 40)
        })
        .await),
        Vec::<String>::new()
    );
    // A manager's team: lisi's team sees wmD (lisi follows) but not through wangwu's tag.
    let team: &'static [String] = Box::leak(Box::new(["lisi".to_owned()]));
    assert_eq!(
        ids(find(CustomerSearch {
            team: Some(team),
            ..all
        })
        .await),
        ["wmA", "wmB", "wmD"]
    );
    assert_eq!(
        ids(find(CustomerSearch {
            team: Some(team),
            tag_id: Some("etVIP"),
            ..all
        })
        .await),
        ["wmA"]
    );
    db.close().await;
    test_db.drop_database().await;
}

both_backends!(a_salesperson_sees_only_their_own_relation_and_reminders);

/// lisi and wangwu both follow a customer: lisi's key shows lisi's relation only (not wangwu's
/// remark and tags), lisi's reminders only, and none of a customer lisi no longer follows.
async fn a_salesperson_sees_only_their_own_relation_and_reminders(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let db = &app.db;
    let now = scrm::platform::db::now_ms();
    for (ext, user, remark) in [
        ("wmShared", "lisi", "李四的备注"),
        ("wmShared", "wangwu", "王五的私人备注"),
        ("wmGone", "lisi", ""),
    ] {
        common::seed_relation(db, ext, "客户", user, remark).await;
        scrm::domain::followup::create_reminder(
            db,
            &scrm::domain::followup::NewReminder {
                corp_id: &crate::common::corp(common::CORP),
                external_user_id: &crate::common::ext(ext),
                assignee: &crate::common::user(user),
                title: "回访",
                due_at_ms: now + 60_000,
                created_by: user,
            },
            now,
        )
        .await
        .unwrap();
    }
    scrm::domain::customers::end_relation(
        db,
        crate::common::Rel::in_corp(common::CORP, "lisi", "wmGone").key(),
        scrm::domain::customers::EndReason::DeletedByStaff,
        scrm::platform::db::now_ms() + 1,
        ended_note(scrm::platform::db::now_ms() + 1),
    )
    .await
    .unwrap();
    let (_, key) = scrm::auth::create_key(
        db,
        &crate::common::corp(common::CORP),
        scrm::auth::Role::Sales,
        Some(&crate::common::user("lisi")),
        "test",
        now,
    )
    .await
    .unwrap();
    let get = |path: String| {
        let (client, key, base) = (app.client.clone(), key.clone(), app.base_url.clone());
        async move {
            let r = client
                .get(format!("{base}{path}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, body) = get("/api/v1/customers/wmShared".to_owned()).await;
    assert_eq!(status, 200, "{body}");
    let relations = body["relations"].as_array().unwrap();
    assert_eq!(relations.len(), 1, "{body}");
    assert_eq!(relations[0]["user_id"], "lisi");
    assert!(!body.to_string().contains("王五的私人备注"), "{body}");
    let (_, body) = get("/api/v1/customers/wmShared/reminders".to_owned()).await;
    let assignees: Vec<&str> = body["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["assignee"].as_str())
        .collect();
    assert_eq!(assignees, ["lisi"], "{body}");
    let (_, body) = get("/api/v1/reminders".to_owned()).await;
    let customers: Vec<&str> = body["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["external_user_id"].as_str())
        .collect();
    assert_eq!(
        customers,
        ["wmShared"],
        "wmGone is no longer lisi's: {body}"
    );

    // Two keys of lisi write notes: the audit log names lisi and tells the keys apart.
    let (second_id, second) = scrm::auth::create_key(
        db,
        &crate::common::corp(common::CORP),
        scrm::auth::Role::Sales,
        Some(&crate::common::user("lisi")),
        "phone",
        now,
    )
    .await
    .unwrap();
    for k in [&key, &second] {
        let r = app
            .client
            .post(format!("{}/api/v1/customers/wmShared/notes", app.base_url))
            .bearer_auth(k)
            .json(&serde_json::json!({"body": "客户下周再联系"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let rows: Vec<(String, Option<i64>)> = scrm::on_db!(db, |pool| sqlx::query_as(
        "SELECT actor, key_id FROM audit_log WHERE action = 'note.create' ORDER BY id"
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|(actor, _)| actor == "lisi"), "{rows:?}");
    assert_eq!(rows[1].1, Some(second_id), "{rows:?}");
    assert!(rows[0].1.is_some() && rows[0].1 != rows[1].1, "{rows:?}");
    app.stop().await;
}

/// One API key looping on an endpoint gets 429 with `Retry-After` past its rate; another key is
/// not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_over_its_rate_gets_429_and_others_do_not() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &limits("[http]\napi_key_requests_per_minute = 60\n"),
    )
    .await;
    let key = |name: &'static str| {
        let db = app.db.clone();
        async move {
            scrm::auth::create_key(
                &db,
                &crate::common::corp(common::CORP),
                scrm::auth::Role::Admin,
                None,
                name,
                scrm::platform::db::now_ms(),
            )
            .await
            .unwrap()
            .1
        }
    };
    let (looping, other) = (key("loop").await, key("other").await);
    let get = |k: String| {
        let (client, base) = (app.client.clone(), app.base_url.clone());
        async move {
            client
                .get(format!("{base}/api/v1/transfers"))
                .bearer_auth(k)
                .send()
                .await
                .unwrap()
        }
    };
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..30 {
        let r = get(looping.clone()).await;
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
        }
        statuses.push(r.status().as_u16());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    // 60 a minute is 10 per 10-second window (one window boundary may fall inside the loop).
    assert!((10..=20).contains(&ok), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        retry_after.is_some_and(|s| (1..=10).contains(&s)),
        "{retry_after:?}"
    );
    assert_eq!(
        get(other).await.status(),
        200,
        "another key has its own budget"
    );
    app.stop().await;
}

/// A client looping on unknown corp tag ids makes us read WeCom's tag library at most once per
/// 30 s for the corp, and every edit is refused with the field; bounds on personal tags and
/// reminders hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tags_cannot_spend_the_corps_wecom_quota_and_lists_are_bounded() {
    let app = emulated::EmulatedApp::spawn(Backend::Sqlite).await;
    let ext = app.wecom().add_customer(
        common::CORP,
        "lisi",
        wecom_sdk::testkit::NewCustomer {
            name: "王总".to_owned(),
            ..Default::default()
        },
    );
    app.settle().await;
    let sales = app.api("sales", Some("lisi")).await;
    let before = app.wecom().calls("externalcontact/get_corp_tag_list");
    for i in 0..20 {
        let (status, body) = sales
            .put(
                &format!("/api/v1/customers/{ext}/relations/lisi/tags"),
                serde_json::json!({"add": [format!("etUnknown{i}")]}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["field"], "add[0]", "{body}");
    }
    let refreshes = app.wecom().calls("externalcontact/get_corp_tag_list") - before;
    assert!(refreshes <= 1, "{refreshes} library reads for 20 edits");
    // Personal tags per edit are bounded like corp tags.
    let (status, body) = sales
        .put(
            &format!("/api/v1/customers/{ext}/personal-tags"),
            serde_json::json!({"add": (0..101).collect::<Vec<i64>>()}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("add")),
        "{body}"
    );
    // At most 100 open reminders per customer.
    let due = scrm::platform::db::now_ms() + 3_600_000;
    let mut last = 0;
    for _ in 0..101 {
        let (status, _) = sales
            .post(
                &format!("/api/v1/customers/{ext}/reminders"),
                serde_json::json!({"title": "回访", "due_at_ms": due}),
            )
            .await;
        last = status;
    }
    assert_eq!(last, 422, "the 101st open reminder is refused");
    let open = scrm::domain::followup::list_reminders(
        &app.db,
        common::CORP,
        &scrm::domain::followup::ReminderFilter {
            external_user_id: Some(ext.clone()),
            state: Some("open".to_owned()),
            limit: 500,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Two default reminders came with the new relation.
    assert_eq!(open.len(), 100);
    app.stop().await;
}

/// Peak resident memory of this process (server and client alike), KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Ten 100 MB archive media files downloaded at once stream from disk: the process stays under
/// 150 MiB (reading them whole would take a gigabyte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_large_media_downloads_stream_in_bounded_memory() {
    const SIZE: u64 = 100 << 20;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let path = app.test_db.dir.path().join("big-video.mp4");
    // Sparse: 100 MB to read, nothing to write.
    std::fs::File::create(&path).unwrap().set_len(SIZE).unwrap();
    let path_text = path.display().to_string();
    let mut ids = Vec::new();
    for i in 0..10 {
        let id: i64 = scrm::on_db!(&app.db, |pool| {
            sqlx::query_scalar(
            "INSERT INTO archive_media (corp_id, sdkfileid, msgid, kind, size, file_name, state, \
             path, updated_at_ms) VALUES ($1, $2, $3, 'video', $4, '会议录像.mp4', 'done', $5, 0) \
             RETURNING id"
        )
        .bind(common::CORP)
        .bind(format!("sdkfile{i}"))
        .bind(format!("msg{i}"))
        .bind(i64::try_from(SIZE).unwrap())
        .bind(&path_text)
        .fetch_one(pool)
        .await
        })
        .unwrap();
        ids.push(id);
    }
    let (_, key) = scrm::auth::create_key(
        &app.db,
        &crate::common::corp(common::CORP),
        scrm::auth::Role::Compliance,
        None,
        "test",
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let mut downloads = tokio::task::JoinSet::new();
    for id in ids {
        let (client, key, url) = (
            client.clone(),
            key.clone(),
            format!("{}/api/v1/archive/media/{id}", app.base_url),
        );
        downloads.spawn(async move {
            let mut response = client.get(url).bearer_auth(key).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let mut n = 0u64;
            while let Some(chunk) = response.chunk().await.unwrap() {
                n += chunk.len() as u64;
            }
            n
        });
    }
    while let Some(n) = downloads.join_next().await {
        assert_eq!(n.unwrap(), SIZE);
    }
    let peak = peak_rss_kib();
    println!("ten 100 MB downloads at once: peak RSS {} MiB", peak / 1024);
    assert!(peak < 150 * 1024, "peak RSS {} MiB", peak / 1024);
    app.stop().await;
}

/// The passwords in the database and Redis URLs appear in no log line and no error, whatever
/// fails: a Redis that does not answer, a database that cannot be reached, and a normal run with
/// debug logging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_or_error_prints_a_password() {
    const DB_PASSWORD: &str = "db-hunter2-pw";
    const REDIS_PASSWORD: &str = "redis-hunter2-pw";
    let test_db = common::TestDb::create(Backend::Postgres).await;
    let dir = test_db.dir.path();
    // PostgreSQL here trusts local connections, so any password in the URL is accepted.
    let db_url = test_db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{DB_PASSWORD}@"),
        1,
    );
    assert!(db_url.contains(DB_PASSWORD), "{db_url}");
    let mut logs = String::new();
    let run = |config: String, args: Vec<String>| async move {
        std::fs::write(dir.join("scrm.toml"), config).unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrm"))
            .args(&args)
            .current_dir(dir)
            .env_remove("SCRM_CONFIG")
            .env("SCRM_LOG", "debug")
            .output()
            .await
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // Redis does not answer.
    let closed = common::free_port();
    logs += &run(
        format!(
            "database_url = \"{db_url}\"\nredis_url = \"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed}/0\"\n"
        ),
        vec!["serve".into(), "--listen".into(), "127.0.0.1:0".into()],
    )
    .await;
    // The database cannot be reached.
    let unreachable = db_url.replace(":5432/", &format!(":{closed}/"));
    logs += &run(
        format!("database_url = \"{unreachable}\"\n"),
        vec!["migrate".into()],
    )
    .await;
    assert!(logs.contains("***"), "the URLs are shown, redacted: {logs}");
    // A normal run with debug logs: migrate, serve, a callback, shutdown.
    logs += &run(
        format!("database_url = \"{db_url}\"\n"),
        vec!["migrate".into()],
    )
    .await;
    let port = common::free_port();
    std::fs::write(
        dir.join("scrm.toml"),
        common::config_toml(&db_url, "timestamp_window_secs = 0"),
    )
    .unwrap();
    let server = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrm"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .env_remove("SCRM_CONFIG")
        .env("SCRM_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(common::wait_ready(port).await);
    let crypto = wecom_sdk::CallbackCrypto::new(common::TOKEN, common::KEY, common::CORP).unwrap();
    let request = wecom_sdk::sender::event(
        &crypto,
        &add_contact_event(3, 1_718_000_000),
        "1718000000",
        "nonce1",
        None,
    );
    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/wecom/callback/{}/contacts?{}",
            common::CORP,
            request.query
        ))
        .body(request.body.clone().unwrap_or_default())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let pid = server.id().unwrap().to_string();
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await;
    let out = server.wait_with_output().await.unwrap();
    logs += &String::from_utf8_lossy(&out.stderr);
    logs += &String::from_utf8_lossy(&out.stdout);
    assert!(logs.contains("serving"), "the server logged: {logs}");
    assert!(
        logs.contains("timestamp_window_secs = 0"),
        "a disabled timestamp window is warned about: {logs}"
    );
    for secret in [DB_PASSWORD, REDIS_PASSWORD] {
        assert!(!logs.contains(secret), "{secret} printed:\n{logs}");
    }
    test_db.drop_database().await;
}

/// New reminders (each an app message when due) are capped per corp and hour: past the cap the
/// API answers 429, whatever key asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_reminders_are_capped_per_corp_and_hour() {
    let app = emulated::EmulatedApp::spawn_with(
        Backend::Sqlite,
        emulated::Options {
            extra_config: "[reminders]\nmax_new_per_corp_per_hour = 5\nafter_add_days = []\n"
                .to_owned(),
            ..Default::default()
        },
    )
    .await;
    let ext = app.wecom().add_customer(
        common::CORP,
        "lisi",
        wecom_sdk::testkit::NewCustomer {
            name: "赵总".to_owned(),
            ..Default::default()
        },
    );
    app.settle().await;
    let due = scrm::platform::db::now_ms() + 3_600_000;
    let mut statuses = Vec::new();
    for role in ["sales", "admin"] {
        let api = app
            .api(role, if role == "sales" { Some("lisi") } else { None })
            .await;
        for _ in 0..4 {
            let (status, _) = api
                .post(
                    &format!("/api/v1/customers/{ext}/reminders"),
                    serde_json::json!({"title": "回访", "due_at_ms": due, "assignee": "lisi"}),
                )
                .await;
            statuses.push(status);
        }
    }
    assert_eq!(
        statuses,
        [201, 201, 201, 201, 201, 429, 429, 429],
        "{statuses:?}"
    );
    app.stop().await;
}

/// The history note of a relation ended by hand in a test (as by a sync job).
fn ended_note(at_ms: i64) -> scrm::domain::customers::ChangeNote<'static> {
    scrm::domain::customers::ChangeNote {
        source: scrm::domain::customers::Source::Sync(0),
        detail: "",
        at_ms,
    }
}
