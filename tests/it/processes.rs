//! Three real `scrm serve` processes on one PostgreSQL and one Redis, against the emulated WeCom,
//! with nothing in front of them: the test plays WeCom and sends each callback to any instance.
//! Shows that one reconciliation and one chat-archive puller run, that a web session signed in
//! on one instance is good on the others, that tag edits and a reassignment reach WeCom once,
//! that the token is fetched once per expiry, and that callbacks sent to all three while one is
//! killed with `kill -9` are stored once each and processed once, the dead instance's leases
//! taken over when they expire.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::archive::{fixture, standin};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use scrm::auth::Role;
use scrm::platform::db::{Db, now_ms};
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use wecom_sdk::testkit::{
    CallbackKind, ClientContext, EmulatorState, Fault, FaultKind, NewCustomer, NewStaff,
    TransferMode,
};
use wecom_sdk::{CallbackCrypto, sender};

use crate::common::{
    self, ARCHIVE_KEY, ARCHIVE_TOKEN, Backend, CORP, KEY, TOKEN, TestDb, dedup_key_of,
};
use crate::emulated::{self, Api, eventually, fresh_redis, wait_idle, wait_outbox_idle};
use crate::web_client::Browser;

/// The member whose customers are reassigned, and the two who take them over.
const HANDOVER: &str = "zhangsan";
const TAKERS: [&str; 2] = ["lisi", "wangwu"];
/// Salespeople whose customers get tag edits and new customers.
const SALES: [&str; 3] = ["zhaoliu", "sunqi", "zhouba"];
/// The handover member's customers.
const HANDED_OVER: usize = 12;
/// Customers per salesperson before the servers start (each gets two tag edits).
const TAGGED_PER_SALES: usize = 10;
/// Callbacks sent while an instance is killed.
const EVENTS: usize = 300;
/// Archived chat messages in WeCom before the servers start.
const ARCHIVED: usize = 40;
const ARCHIVE_SECRET: &str = "archive-secret-0123456789";
const PASSWORD: &str = "correct horse battery staple";
/// Which instance is killed (`scrm-c`), by the host name it puts in its lease tokens.
const VICTIM: usize = 2;

/// One `scrm serve` process.
struct Process {
    name: String,
    base_url: String,
    log: PathBuf,
    child: tokio::process::Child,
}

/// The processes of the test. Dropping it kills every one still running (a failed assert
/// included) and, on a panic, prints the end of each one's log.
struct Cluster(Vec<Process>);

impl Cluster {
    /// Starts `scrm --config FILE serve` per config text (`@BASE_URL@`: the instance's own
    /// address), all at once, and waits until each answers `/readyz`.
    async fn start(dir: &Path, config_text: &str, database_url: &str, count: usize) -> Self {
        let mut processes = Vec::new();
        let mut ports = Vec::new();
        for i in 0..count {
            let name = format!("scrm-{}", char::from(b'a' + u8::try_from(i).unwrap()));
            let port = common::free_port();
            let base_url = format!("http://127.0.0.1:{port}");
            // Its database sessions carry its name (`pg_stat_activity`).
            let separator = if database_url.contains('?') { '&' } else { '?' };
            let config = config_text
                .replace(
                    "listen = \"127.0.0.1:0\"",
                    &format!("listen = \"127.0.0.1:{port}\""),
                )
                .replace(
                    &format!("database_url = \"{database_url}\""),
                    &format!("database_url = \"{database_url}{separator}application_name={name}\""),
                )
                .replace("@BASE_URL@", &base_url);
            assert!(config.contains(&format!("127.0.0.1:{port}\"")));
            assert!(config.contains(&format!("application_name={name}\"")));
            let config_path = dir.join(format!("{name}.toml"));
            std::fs::write(&config_path, config).expect("write config");
            let log = dir.join(format!("{name}.log"));
            let out = std::fs::File::create(&log).expect("log file");
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrm"));
            command
                .arg("--config")
                .arg(&config_path)
                .arg("serve")
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::from(out.try_clone().expect("log file")))
                .stderr(Stdio::from(out))
                .kill_on_drop(true);
            // Only the file configures it.
            for (var, _) in std::env::vars().filter(|(v, _)| v.starts_with("SCRM_")) {
                command.env_remove(var);
            }
            // The lease tokens and locks of this process start with its name.
            command.env("HOSTNAME", &name).env("SCRM_LOG", "warn");
            let child = command.spawn().expect("start scrm");
            processes.push(Process {
                name,
                base_url,
                log,
                child,
            });
            ports.push(port);
        }
        let cluster = Self(processes);
        for (process, port) in cluster.0.iter().zip(ports) {
            assert!(
                common::wait_ready(port).await,
                "{} did not become ready on port {port}",
                process.name
            );
        }
        cluster
    }

    fn base_urls(&self) -> Vec<String> {
        self.0.iter().map(|p| p.base_url.clone()).collect()
    }

    /// `kill -9` (tokio's kill is SIGKILL on Unix), then reaps it.
    async fn kill(&mut self, i: usize) {
        let process = &mut self.0[i];
        process.child.start_kill().expect("kill -9");
        let status = process.child.wait().await.expect("reap");
        assert!(!status.success(), "{} was killed: {status:?}", process.name);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in &mut self.0 {
            let _ = process.child.start_kill();
        }
        if std::thread::panicking() {
            for process in &self.0 {
                let text = std::fs::read_to_string(&process.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!("--- {} (last lines) ---\n{}", process.name, tail.join("\n"));
            }
        }
    }
}

/// WeCom's side of callbacks, sent by the test straight to the instances.
#[derive(Clone)]
struct CallbackSender {
    http: reqwest::Client,
    instances: Arc<Vec<String>>,
    contacts: CallbackCrypto,
    directory: CallbackCrypto,
    /// Requests no instance acknowledged (refused connections, errors).
    unanswered: Arc<AtomicUsize>,
}

impl CallbackSender {
    fn new(instances: Vec<String>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            instances: Arc::new(instances),
            contacts: CallbackCrypto::new(TOKEN, KEY, CORP).expect("crypto"),
            directory: CallbackCrypto::new(ARCHIVE_TOKEN, ARCHIVE_KEY, CORP).expect("crypto"),
            unanswered: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Signs and encrypts `plaintext` (freshly, as WeCom does for each attempt) and posts it to
    /// instance `first`, then to the next ones until one answers 200 `success`. Returns the
    /// instance that acknowledged it.
    async fn deliver(&self, kind: CallbackKind, plaintext: &str, first: usize) -> usize {
        let (app, crypto) = match kind {
            CallbackKind::Contacts => ("contacts", &self.contacts),
            CallbackKind::Directory => ("directory", &self.directory),
            other => panic!("no callback configuration for {other:?}"),
        };
        let n = self.instances.len();
        for attempt in 0..20 * n {
            let i = (first + attempt) % n;
            let timestamp = chrono::Utc::now().timestamp().to_string();
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let request = sender::event(crypto, plaintext, &timestamp, &nonce, None);
            let answer = self
                .http
                .post(format!(
                    "{}/wecom/callback/{CORP}/{app}?{}",
                    self.instances[i], request.query
                ))
                .header("content-type", "text/xml")
                .body(request.body.unwrap_or_default())
                .send()
                .await;
            if let Ok(r) = answer
                && r.status() == 200
                && r.text().await.is_ok_and(|t| t == "success")
            {
                return i;
            }
            self.unanswered.fetch_add(1, Ordering::Relaxed);
            if (attempt + 1) % n == 0 {
                // Every instance failed this round: give them a moment.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("no instance acknowledged a {app} callback");
    }

    /// Sends every event from `workers` concurrent tasks, event `i` first to instance `i % n`.
    async fn deliver_all(&self, events: Vec<(CallbackKind, String)>, workers: usize) {
        let events = Arc::new(events);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let (sender, events, next) = (self.clone(), Arc::clone(&events), Arc::clone(&next));
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((kind, plaintext)) = events.get(i) else {
                        return;
                    };
                    sender.deliver(*kind, plaintext, i).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("sender task");
        }
    }
}

/// The callbacks the emulator queued since delivery `mark` (it has no callback target: the test
/// delivers them itself), oldest first.
fn queued_since(wecom: &EmulatorState, mark: usize) -> Vec<(CallbackKind, String)> {
    wecom
        .deliveries()
        .into_iter()
        .skip(mark)
        .map(|d| {
            assert!(!d.delivered, "the emulator delivers nothing itself: {d:?}");
            (d.kind, d.plaintext)
        })
        .collect()
}

/// A clock time (China Standard Time) twelve hours from now: the daily sync is not due again
/// during the test.
fn half_a_day_away() -> String {
    let minute = (chrono::Utc::now().timestamp() / 60 + 8 * 60 + 12 * 60).rem_euclid(24 * 60);
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// An inbox row: id, dedup key, state, attempts, when done, the last error.
type Row = (i64, String, String, i32, Option<i64>, Option<String>);

/// The inbox rows of these dedup keys.
async fn inbox_rows(db: &Db, keys: &[String]) -> Vec<Row> {
    sqlx::query_as(
        "SELECT id, dedup_key, state, attempts, processed_at_ms, last_error FROM inbox \
         WHERE corp_id = $1 AND dedup_key = ANY($2)",
    )
    .bind(CORP)
    .bind(keys)
    .fetch_all(pg(db))
    .await
    .expect("inbox rows")
}

fn pg(db: &Db) -> &sqlx::PgPool {
    match db {
        Db::Postgres(pool) => pool,
        Db::Sqlite(_) => panic!("this test runs on PostgreSQL"),
    }
}

/// Inbox rows a live lease of `process` (a lease token starting with its name) holds now.
async fn leased_by(db: &Db, process: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM inbox WHERE state = 'pending' AND lease_owner LIKE $1 \
         AND lease_until_ms > $2",
    )
    .bind(format!("{process}-%"))
    .bind(now_ms())
    .fetch_one(pg(db))
    .await
    .expect("leases")
}

/// The `scrm archive-worker` children of each process (Linux: read from `/proc`).
fn archive_workers(cluster: &Cluster) -> Vec<usize> {
    let parents: Vec<Option<u32>> = cluster.0.iter().map(|p| p.child.id()).collect();
    let mut workers = vec![0; parents.len()];
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid …`: the command name may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let Some(parent) = parents.iter().position(|p| p.is_some() && *p == ppid) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == b"archive-worker")
        {
            workers[parent] += 1;
        }
    }
    workers
}

fn staff(wecom: &EmulatorState, userid: &str) {
    assert!(wecom.add_staff(
        CORP,
        NewStaff {
            userid: userid.to_owned(),
            name: format!("员工{userid}"),
            department: Vec::new(),
        },
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_share_sessions_tokens_jobs_and_events_through_a_kill() {
    let (emulator, wecom) = emulated::shared_token_emulator().await;
    for userid in [HANDOVER].iter().chain(&TAKERS).chain(&SALES) {
        staff(&wecom, userid);
    }
    let vip = wecom.create_tag(CORP, "客户等级", "VIP");
    let regular = wecom.create_tag(CORP, "客户等级", "普通");
    // What the corp holds before we serve it; the servers learn it from the first sync.
    let handed_over: Vec<String> = (0..HANDED_OVER)
        .map(|i| {
            wecom.add_customer(
                CORP,
                HANDOVER,
                NewCustomer {
                    name: format!("老客户{i}"),
                    ..NewCustomer::default()
                },
            )
        })
        .collect();
    let mut tagged = Vec::new();
    for (s, user) in SALES.iter().enumerate() {
        for i in 0..TAGGED_PER_SALES {
            let name = format!("客户{s}-{i}");
            let ext = wecom.add_customer(
                CORP,
                user,
                NewCustomer {
                    name,
                    ..NewCustomer::default()
                },
            );
            tagged.push((user.to_owned(), ext));
        }
    }

    // The chat archive: WeCom's secret and the corp's public keys, and messages to pull.
    wecom.set_archive_secret(CORP, ARCHIVE_SECRET);
    for version in [1, 2] {
        let pem = std::fs::read_to_string(fixture(&format!("archive/keys/v{version}.pub.pem")))
            .expect("public key");
        wecom
            .add_archive_public_key(CORP, version, &pem)
            .expect("archive key");
    }
    for i in 0..ARCHIVED {
        let (user, ext) = &tagged[i % tagged.len()];
        wecom.archive_text(
            CORP,
            user,
            &[ext.as_str()],
            "",
            &format!("您好，资料已发到邮箱（{i}）"),
        );
    }

    let test_db = TestDb::create(Backend::Postgres).await;
    let db = test_db.connect().await;
    let redis_url = fresh_redis(9).await;
    let emulator_addr = emulator.addr();
    let extra = format!(
        "[outbox]\nlease_secs = 5\nbackoff_max_secs = 1\n\
         [transfers]\ntick_secs = 1\n\
         [sidebar]\npublic_url = \"@BASE_URL@\"\n\
         oauth_authorize_url = \"http://{emulator_addr}/connect/oauth2/authorize\"\n\
         jssdk_script_url = \"http://{emulator_addr}/jweixin.js\"\n\
         [archive]\nlibrary = \"{}\"\nworker_program = \"{}\"\npoll_interval_secs = 1\n\
         call_timeout_secs = 2\nrestart_backoff_max_secs = 1\nmedia = false\n\
         [archive.worker_env]\nWEWORK_FINANCE_STANDIN_URL = \"http://{emulator_addr}\"\n",
        standin().display(),
        env!("CARGO_BIN_EXE_scrm"),
    );
    let archive_keys = format!(
        "[corps.archive]\nsecret = \"{ARCHIVE_SECRET}\"\nkeys = [{{ version = 1, file = \"{}\" }}, \
         {{ version = 2, file = \"{}\" }}]\n",
        fixture("archive/keys/v1.pem").display(),
        fixture("archive/keys/v2.pem").display(),
    );
    // Every instance runs the scheduler, looking every second; the first sync is due at once.
    let config = emulated::server_config_with(
        &test_db.url,
        &emulator.base_url(),
        &extra,
        &archive_keys,
        Some(&redis_url),
    )
    .replace(
        "[sync]\nenabled = false",
        &format!(
            "[sync]\nenabled = true\ncheck_interval_secs = 1\ndaily_at = \"{}\"",
            half_a_day_away()
        ),
    );
    assert!(config.contains("lease_secs = 5") && config.contains("check_interval_secs = 1"));
    let mut cluster = Cluster::start(test_db.dir.path(), &config, &test_db.url, 3).await;
    let instances = cluster.base_urls();
    let corp = common::corp(CORP);
    let (_, key) = scrm::auth::create_key(&db, &corp, Role::Admin, None, "test", now_ms())
        .await
        .expect("API key");
    let api: Vec<Api> = instances.iter().map(|url| Api::new(url, &key)).collect();

    // The reconciliation: three schedulers find it due; one runs it.
    eventually("the first sync finished", || async {
        scrm::pipeline::jobs::last_finished_ms(&db, CORP, scrm::app::sync::JOB_KIND)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert_eq!(wecom.calls("gettoken"), 1, "one token for three processes");

    // ---- One chat-archive puller for the corp: one worker child among three processes. ----
    let archived = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT COUNT(*), COUNT(DISTINCT msgid) FROM archive_message WHERE corp_id = $1",
        )
        .bind(CORP)
        .fetch_one(pg(&db))
        .await
        .unwrap()
    };
    let all = i64::try_from(ARCHIVED).unwrap();
    eventually("the archive pulled", || async { archived().await.0 >= all }).await;
    assert_eq!(archived().await, (all, all), "each message stored once");
    let workers = archive_workers(&cluster);
    assert_eq!(
        workers.iter().sum::<usize>(),
        1,
        "one puller, one archive worker: {workers:?}"
    );

    // ---- A web session signed in on one instance is good on the others. ----
    scrm::auth::account::create(&db, &corp, "admin", PASSWORD, Role::Admin, "test", now_ms())
        .await
        .expect("console account");
    let mut console = Browser::new(&instances[0]);
    let signed = console
        .post_form(
            "/console/login",
            &[
                ("username", "admin"),
                ("password", PASSWORD),
                ("next", "/console"),
            ],
        )
        .await;
    assert_eq!(signed.status, 303, "{}", signed.text);
    assert!(console.cookies.contains_key("scrm_console"));
    let mut csrf = String::new();
    for base in &instances {
        let page = console.get(&format!("{base}/console")).await;
        assert_eq!(
            page.status, 200,
            "{base}: {:?} {}",
            page.location, page.text
        );
        assert!(!page.text.contains("name=\"password\""), "{base}");
        csrf = page.field("csrf");
    }
    let mut stranger = Browser::new(&instances[1]);
    assert_eq!(stranger.get("/console").await.status, 303, "signed out");
    // Signing out on the third instance ends it on the first too (the old cookie gets nowhere).
    let cookie = console.cookies["scrm_console"].clone();
    let out = console
        .post_form(
            &format!("{}/console/logout", instances[2]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(out.status, 303, "{}", out.text);
    console.cookies.insert("scrm_console".to_owned(), cookie);
    let after = console.get(&format!("{}/console", instances[0])).await;
    assert_eq!(after.status, 303, "the session ended everywhere");

    // The sidebar: WeCom's OAuth on the second instance, then the first and third serve it.
    wecom.set_client(Some(ClientContext {
        corp_id: CORP.to_owned(),
        userid: Some(SALES[0].to_owned()),
        entry: "single_chat_tools".to_owned(),
        external_userid: Some(tagged[0].1.clone()),
        ..Default::default()
    }));
    let mut sidebar = Browser::new(&instances[1]);
    let first = sidebar.get("/sidebar").await;
    assert_eq!(first.status, 302, "{}", first.text);
    let authorize = first.location.unwrap();
    let back = sidebar
        .get(authorize.trim_end_matches("#wechat_redirect"))
        .await;
    let with_code = back.location.expect("WeCom sends the code back");
    assert!(
        with_code.starts_with(&format!("{}/sidebar/oauth?code=", instances[1])),
        "{with_code}"
    );
    assert_eq!(sidebar.get(&with_code).await.status, 303);
    assert!(sidebar.cookies.contains_key("scrm_session"));
    for base in &instances {
        let home = sidebar.get(&format!("{base}/sidebar/home")).await;
        assert_eq!(home.status, 200, "{base}: {}", home.text);
    }
    let mut outsider = Browser::new(&instances[0]);
    assert_ne!(outsider.get("/sidebar/home").await.status, 200);

    // ---- Tag edits through the API of all three: each delivered to WeCom once, in order. ----
    let mut edits = JoinSet::new();
    for (i, (user, ext)) in tagged.iter().enumerate() {
        let (first, second) = (api[i % 3].clone(), api[(i + 1) % 3].clone());
        let path = format!("/api/v1/customers/{ext}/relations/{user}/tags");
        let (vip, regular) = (vip.clone(), regular.clone());
        edits.spawn(async move {
            let mut ids = Vec::new();
            for (api, tag) in [(first, vip), (second, regular)] {
                let (status, body) = api.put(&path, json!({"add": [tag]})).await;
                assert_eq!(status, 202, "{body}");
                ids.push(body["outbox_id"].as_i64().expect("an outbox item"));
            }
            ids
        });
    }
    let mut outbox_ids = Vec::new();
    while let Some(ids) = edits.join_next().await {
        outbox_ids.extend(ids.expect("edit task"));
    }
    wait_outbox_idle(&db).await;
    let marks = wecom.writes_for("externalcontact/mark_tag");
    assert_eq!(marks.len(), 2 * tagged.len(), "each edit once: {marks:?}");
    for (user, ext) in &tagged {
        let added: Vec<&Value> = marks
            .iter()
            .filter(|w| w.body["userid"] == *user && w.body["external_userid"] == *ext)
            .map(|w| &w.body["add_tag"])
            .collect();
        assert_eq!(
            added,
            [&json!([vip]), &json!([regular])],
            "{user}/{ext}: both edits, once each, in order"
        );
    }
    let delivered = scrm::pipeline::outbox::list(
        &db,
        &scrm::pipeline::outbox::OutboxFilter {
            limit: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(delivered.len(), outbox_ids.len());
    assert!(
        delivered.iter().all(|o| o.state == "done"
            && (o.attempts == 1 || o.last_error.is_some())
            && outbox_ids.contains(&o.id)),
        "every item delivered, retried only after an error: {delivered:?}"
    );

    // ---- A reassignment planned on one instance and run from another moves everyone once. ----
    let (status, planned) = api[0]
        .post(
            "/api/v1/transfers",
            json!({"handover_user_id": HANDOVER, "takeover_user_ids": TAKERS}),
        )
        .await;
    assert_eq!(status, 201, "{planned}");
    assert_eq!(planned["job"]["mode"], "on_job");
    assert_eq!(planned["customers"], HANDED_OVER);
    let job = planned["job"]["id"].as_i64().unwrap();
    let (status, body) = api[1]
        .post(&format!("/api/v1/transfers/{job}/run"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let progress = || async {
        scrm::domain::transfers::Progress::of(
            &scrm::domain::transfers::counts(&db, job).await.unwrap(),
        )
    };
    eventually("every customer handed to WeCom", || async {
        progress().await.in_flight() == 0
    })
    .await;
    wait_outbox_idle(&db).await;
    assert_eq!(
        wecom.writes_for("externalcontact/transfer_customer").len(),
        TAKERS.len(),
        "one call per taker"
    );

    // WeCom's 24 h pass: the customers are taken over, and the token has expired.
    let mark = wecom.deliveries().len();
    wecom.advance_clock(Duration::from_secs(25 * 3600));
    // ---- One gettoken per expiry: each instance calls WeCom at once, one of them refreshes. ----
    let listed_before = wecom.calls("externalcontact/get_unassigned_list");
    let mut refreshes = JoinSet::new();
    for api in api.clone() {
        refreshes.spawn(async move {
            api.post("/api/v1/transfers/departures/refresh", json!({}))
                .await
        });
    }
    while let Some(answer) = refreshes.join_next().await {
        let (status, body) = answer.expect("refresh task");
        assert_eq!(status, 200, "{body}");
    }
    assert!(wecom.calls("externalcontact/get_unassigned_list") >= listed_before + 3);
    assert_eq!(wecom.calls("gettoken"), 2, "one gettoken per expiry");
    let transferred = wecom.transfers(CORP);
    let takeovers = queued_since(&wecom, mark);
    assert!(!takeovers.is_empty());
    CallbackSender::new(instances.clone())
        .deliver_all(takeovers, 4)
        .await;
    eventually("the reassignment finished", || async {
        scrm::domain::transfers::job_by_id(&db, job)
            .await
            .unwrap()
            .state
            == "done"
    })
    .await;
    wait_idle(&db).await;
    wait_outbox_idle(&db).await;
    let mut per_customer: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &transferred {
        assert_eq!(t.mode, TransferMode::OnJob);
        assert_eq!(t.status, 1, "taken over: {t:?}");
        *per_customer.entry(t.external_userid.as_str()).or_default() += 1;
    }
    let once: BTreeMap<&str, usize> = handed_over.iter().map(|e| (e.as_str(), 1)).collect();
    assert_eq!(per_customer, once, "each customer transferred once");
    let p = progress().await;
    assert_eq!(
        p.customers.get("done").copied(),
        Some(i64::try_from(HANDED_OVER).unwrap()),
        "{p:?}"
    );
    let finished = scrm::auth::audit::search(
        &db,
        CORP,
        &scrm::auth::audit::AuditFilter {
            action: Some("transfer.finish".to_owned()),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(finished.len(), 1, "the job finished once: {finished:?}");
    for taker in TAKERS {
        let summaries = wecom
            .sent_messages()
            .into_iter()
            .filter(|m| m["touser"] == taker)
            .count();
        assert_eq!(summaries, 1, "one summary for {taker}");
    }

    // ---- Callbacks to all three; one instance is killed with SIGKILL halfway through. ----
    let mark = wecom.deliveries().len();
    let added: Vec<(&str, String)> = (0..EVENTS)
        .map(|i| {
            let user = SALES[i % SALES.len()];
            (user, wecom.add_customer(CORP, user, NewCustomer::default()))
        })
        .collect();
    let events = queued_since(&wecom, mark);
    assert_eq!(events.len(), EVENTS);
    let keys: Vec<String> = events.iter().map(|(_, p)| dedup_key_of(p)).collect();
    // Each event takes a while to process, so every instance holds leases while it works.
    wecom.inject_fault(Fault {
        api: Some("externalcontact/get".to_owned()),
        kind: FaultKind::Latency(Duration::from_millis(100)),
        times: u32::try_from(2 * EVENTS).unwrap(),
    });
    let gets_before = wecom.calls("externalcontact/get");
    let callbacks = CallbackSender::new(instances.clone());
    let events = Arc::new(events);
    let next = Arc::new(AtomicUsize::new(0));
    // (event, the instance that acknowledged it, whether it was first sent after the kill)
    let acknowledged = Arc::new(Mutex::new(Vec::<(usize, usize, bool)>::new()));
    let (killed_tx, killed_rx) = watch::channel(false);
    let mut senders = JoinSet::new();
    for _ in 0..4 {
        let (callbacks, events, next, acknowledged, mut killed) = (
            callbacks.clone(),
            Arc::clone(&events),
            Arc::clone(&next),
            Arc::clone(&acknowledged),
            killed_rx.clone(),
        );
        senders.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((kind, plaintext)) = events.get(i) else {
                    return;
                };
                // The second half goes out once the victim is dead.
                if i >= EVENTS / 2 {
                    let _ = killed.wait_for(|k| *k).await;
                }
                let after_kill = *killed.borrow();
                let by = callbacks.deliver(*kind, plaintext, i).await;
                acknowledged.lock().await.push((i, by, after_kill));
                // WeCom's pace, not a flood: the kill lands among requests.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    let victim = cluster.0[VICTIM].name.clone();
    eventually(
        "a third acknowledged and the victim holding leases",
        || async {
            acknowledged.lock().await.len() >= EVENTS / 3 && leased_by(&db, &victim).await > 0
        },
    )
    .await;
    cluster.kill(VICTIM).await;
    killed_tx.send(true).unwrap();
    // A statement the victim sent just before it died still runs (and may claim rows): wait until
    // PostgreSQL has closed its sessions.
    eventually("the victim's database sessions closed", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&victim)
        .fetch_one(pg(&db))
        .await
        .unwrap()
            == 0
    })
    .await;
    // The victim's leases: rows it claimed and never finished.
    let orphans: HashMap<i64, i64> = sqlx::query_as(
        "SELECT id, lease_until_ms FROM inbox WHERE state = 'pending' AND lease_owner LIKE $1",
    )
    .bind(format!("{victim}-%"))
    .fetch_all(pg(&db))
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(
        !orphans.is_empty(),
        "the victim died holding leases (it held some just before)"
    );
    while let Some(done) = senders.join_next().await {
        done.expect("sender task");
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert_eq!(acknowledged.len(), EVENTS, "every callback acknowledged");
    let (after, before): (Vec<_>, Vec<_>) = acknowledged.iter().partition(|a| a.2);
    assert!(
        before.iter().any(|(_, by, _)| *by == VICTIM),
        "the victim acknowledged callbacks before the kill"
    );
    assert!(
        after.len() >= EVENTS / 2 && after.iter().all(|(_, by, _)| *by != VICTIM),
        "the load went on after the kill, taken by the survivors"
    );
    assert!(
        callbacks.unanswered.load(Ordering::Relaxed) > 0,
        "callbacks sent to the dead instance went to another"
    );

    // Every acknowledged callback is stored, once.
    let rows = inbox_rows(&db, &keys).await;
    let mut stored: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, key, ..) in &rows {
        *stored.entry(key.as_str()).or_default() += 1;
    }
    for (i, ..) in &acknowledged {
        assert_eq!(
            stored.get(keys[*i].as_str()),
            Some(&1),
            "event {i} acknowledged and stored exactly once"
        );
    }

    // The survivors finish everything, the victim's rows once its leases ran out.
    wait_idle(&db).await;
    wecom.clear_faults();
    let rows = inbox_rows(&db, &keys).await;
    assert_eq!(rows.len(), EVENTS);
    let mut attempts_in_all = 0;
    for (id, key, state, attempts, processed_at_ms, last_error) in &rows {
        assert_eq!(state, "done", "{key}: {last_error:?}");
        attempts_in_all += usize::try_from(*attempts).unwrap();
        // One claim, two for a row the victim held; more only after a failed attempt, whose
        // error is kept (a transient one on a loaded machine): never a second claim of a live
        // lease.
        let held = orphans.get(id);
        let claims = if held.is_some() { 2 } else { 1 };
        assert!(
            *attempts == claims || (*attempts > claims && last_error.is_some()),
            "row {id}: {attempts} attempts, {claims} expected ({last_error:?})"
        );
        if let Some(lease_until_ms) = held {
            assert!(
                processed_at_ms.unwrap() >= *lease_until_ms,
                "row {id} taken over only after the victim's lease ran out"
            );
        }
    }
    let follow_ups = scrm::platform::config::ReminderSettings::default()
        .after_add_days
        .len();
    for (user, ext) in &added {
        let history = scrm::domain::customers::relation_history(
            &db,
            common::Rel::in_corp(CORP, user, ext).key(),
        )
        .await
        .unwrap();
        assert_eq!(history.len(), 1, "{user}/{ext} added once: {history:?}");
        let reminders = emulated::reminders_of(&db, ext).await;
        assert_eq!(
            reminders.len(),
            follow_ups,
            "{user}/{ext}: the new customer's follow-up reminders, once each: {reminders:?}"
        );
    }
    let gets = usize::try_from(wecom.calls("externalcontact/get") - gets_before).unwrap();
    assert!(
        (EVENTS..=attempts_in_all).contains(&gets),
        "an externalcontact/get per event, at most one per attempt: {gets}, {attempts_in_all} attempts"
    );

    // ---- Over all of it: one token per expiry, one reconciliation. ----
    assert_eq!(wecom.calls("gettoken"), 2, "one gettoken per expiry");
    let syncs = scrm::pipeline::jobs::list(&db, Some(CORP), scrm::app::sync::JOB_KIND, 10)
        .await
        .unwrap();
    assert_eq!(
        syncs.len(),
        1,
        "one reconciliation for three instances: {syncs:?}"
    );
    assert_eq!(wecom.calls("externalcontact/get_follow_user_list"), 1);

    drop(cluster);
    db.close().await;
    test_db.drop_database().await;
}
