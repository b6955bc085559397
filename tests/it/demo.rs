//! `scrm demo` as a newcomer runs it: the binary in a process of its own plays the day, every URL
//! it prints works in Chromium (the start page; compliance works the private-payment alert to a
//! close; the admin reassigns the departed salesperson's customers; the manager signs in through
//! WeCom's QR login and sees their team; the salesperson's sidebar opens in the chat), a restart
//! resumes without importing or playing anything twice, and `--fresh` refuses a folder that is not
//! a demo's. The screenshots are the README's tour.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::mpsc;

/// The demo's corp (`src/cli/demo`).
const CORP: &str = "wwdemo0000000000001";
/// The line the demo prints once the day is played.
const PLAYED: &str = "今天的剧情播放完毕";

/// A running `scrm demo`, killed on drop.
struct Demo {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(dir: &Path, port: u16) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrm"))
            .args([
                "demo",
                "--data-dir",
                &dir.to_string_lossy(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--pace-ms",
                "0",
                "--staff",
                "14",
                "--customers",
                "300",
            ])
            .env_remove("SCRM_CONFIG")
            .env_remove("SCRM_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start scrm demo");
        let (tx, lines) = mpsc::unbounded_channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for pipe in [
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (3 minutes at most) for a line containing `text`.
    async fn until(&mut self, text: &str) {
        assert!(
            self.wait_for(text).await,
            "scrm demo never printed {text:?}; it printed:\n{}",
            self.seen.join("\n")
        );
    }

    /// Whether a line containing `text` came (3 minutes at most) before the output ended.
    async fn wait_for(&mut self, text: &str) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        while !self.seen.iter().any(|l| l.contains(text)) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => self.seen.push(line),
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }

    /// Starts the demo on a free port and waits until the day is played: another port when the
    /// one picked was taken meanwhile (another test bound it). Returns it and its base URL.
    async fn played(dir: &Path) -> (Self, String) {
        for _ in 0..5 {
            let port = crate::common::free_port();
            let mut demo = Self::start(dir, port);
            if demo.wait_for(PLAYED).await {
                return (demo, format!("http://127.0.0.1:{port}"));
            }
            assert!(
                demo.seen.iter().any(|l| l.contains("cannot listen on")),
                "scrm demo never printed {PLAYED:?}; it printed:\n{}",
                demo.seen.join("\n")
            );
        }
        panic!("no free port for scrm demo in 5 tries");
    }

    /// The URLs it printed.
    fn urls(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
            .map(str::to_owned)
            .collect()
    }

    /// SIGTERM, as Ctrl-C or systemd would: the demo stops cleanly.
    async fn stop(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the demo stops within 30 s")
            .expect("wait");
        assert!(exit.success(), "scrm demo exited with {exit}");
    }
}

/// One number from the demo's SQLite file, read-only (the test shares no state with the
/// process).
fn count(db: &Path, sql: &str) -> i64 {
    number(db, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn number(db: &Path, sql: &str) -> Result<i64, sqlx::Error> {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use sqlx::Connection as _;
                let mut conn = sqlx::SqliteConnection::connect(&url).await?;
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut conn)
                    .await?;
                conn.close().await?;
                Ok(n)
            })
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_plays_a_day_and_every_url_it_prints_works() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let db = data.join("scrm.db");
    let (demo, base) = Demo::played(&data).await;

    // What the day left, all of it through callbacks, the archive and the API.
    let alerts = |kind: &str| {
        count(
            &db,
            &format!("SELECT COUNT(*) FROM alert WHERE corp_id = '{CORP}' AND kind = '{kind}'"),
        )
    };
    assert_eq!(alerts("staff_deleted_customer"), 1);
    assert_eq!(alerts("customer_deleted_staff"), 1);
    assert_eq!(alerts("mass_deletion"), 1);
    let rules = |rule: &str| {
        count(
            &db,
            &format!("SELECT COUNT(*) FROM alert WHERE kind = 'content' AND rule_id = '{rule}'"),
        )
    };
    assert_eq!(rules("private_transfer"), 1, "the private-payment message");
    assert_eq!(rules("contact_leak"), 1, "the personal WeChat");
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM job WHERE kind = 'sync'"),
        1,
        "one full sync imported the corp"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM staff WHERE name <> '' AND name <> user_id"
        ),
        14,
        "the sync read the directory: names"
    );
    assert!(
        count(
            &db,
            "SELECT COUNT(*) FROM staff WHERE leads_departments <> ''"
        ) >= 1
    );
    assert!(
        count(&db, "SELECT COUNT(*) FROM archive_message") > 100,
        "the archive's history was pulled"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM note"),
        1,
        "the salesperson's note"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM tag_assignment WHERE external_user_id LIKE 'wmDemoDay%'"
        ),
        2,
        "the channel's rule tagged the two customers who came through it"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM inbox WHERE state <> 'done'"),
        0
    );
    assert!(count(&db, "SELECT COUNT(*) FROM staff WHERE status = 5") == 1);

    // Every URL it printed answers, in a real browser, as the role it names.
    let urls = demo.urls();
    let by_path: BTreeMap<String, String> = urls
        .iter()
        .map(|u| (u.trim_start_matches(&base).to_owned(), u.clone()))
        .collect();
    for path in [
        "/demo",
        "/console",
        "/demo/login/admin",
        "/demo/login/compliance",
        "/demo/login/manager",
        "/demo/login/sales",
    ] {
        assert!(by_path.contains_key(path), "{path} printed: {urls:?}");
    }
    let shot = |name: &str| format!("demo-{name}");
    let mut browser = crate::webdriver::Browser::start(1280, 900).await;
    browser.goto(&format!("{base}/demo")).await;
    browser
        .wait_for(
            "the start page",
            "document.querySelector('main.demo .roles')",
        )
        .await;
    browser.screenshot(&shot("start")).await;

    // Compliance works the private-payment alert to a close.
    browser.goto(&format!("{base}/demo/login/compliance")).await;
    browser
        .wait_for(
            "the alert inbox",
            "location.pathname === '/console/alerts' && document.querySelector('table.list tbody tr')",
        )
        .await;
    browser.screenshot(&shot("alerts")).await;
    let alert = count(
        &db,
        "SELECT id FROM alert WHERE kind = 'content' AND rule_id = 'private_transfer'",
    );
    browser
        .goto(&format!("{base}/console/alerts/{alert}"))
        .await;
    browser
        .wait_for("the alert", "document.querySelector('form.steps')")
        .await;
    browser
        .acknowledge_and_resolve("已与成员核实：要求客户转个人账户，已上报")
        .await;
    browser.screenshot(&shot("alert-resolved")).await;
    assert_eq!(
        count(
            &db,
            &format!("SELECT COUNT(*) FROM alert WHERE id = {alert} AND state = 'resolved'")
        ),
        1
    );

    // The admin reassigns the departed salesperson's customers.
    browser.clear_cookies().await;
    browser.goto(&format!("{base}/demo/login/admin")).await;
    browser
        .wait_for("the overview", "document.querySelector('.tiles')")
        .await;
    browser.screenshot(&shot("overview")).await;
    browser.goto(&format!("{base}/console/transfers")).await;
    browser
        .wait_for(
            "the departures",
            "document.body.innerText.includes('待交接的离职成员') && document.querySelector(\"a[href^='/console/transfers/new?handover=']\")",
        )
        .await;
    browser
        .click("a[href^='/console/transfers/new?handover=']")
        .await;
    browser
        .wait_for("the wizard", "document.querySelector('form.wizard')")
        .await;
    browser.click("input[name='taker']").await;
    browser
        .type_into("textarea[name='handover_note']", "老客户优先跟进")
        .await;
    browser.click("form.wizard button[type='submit']").await;
    browser
        .wait_for(
            "the preview",
            "document.querySelector('[data-job-state]') && document.querySelector('[data-job-state]').innerText === '待确认'",
        )
        .await;
    browser.click("form[action$='/start'] button").await;
    browser
        .wait_for(
            "running",
            "document.querySelector('[data-job-state]').innerText === '执行中'",
        )
        .await;
    browser.screenshot(&shot("transfer")).await;
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM transfer_job WHERE state <> 'planned'"
        ),
        1
    );

    // The manager signs in through WeCom's QR login: the console of a department leader.
    browser.clear_cookies().await;
    browser.goto(&format!("{base}/demo/login/manager")).await;
    browser
        .wait_for(
            "the manager's console",
            "location.pathname.startsWith('/console') && document.querySelector('.who') && document.querySelector('.who').innerText.includes('部门负责人')",
        )
        .await;
    browser.screenshot(&shot("manager")).await;

    // The salesperson's sidebar, in the chat with the customer, at a phone's width.
    browser.clear_cookies().await;
    browser.resize(375, 812).await;
    browser.goto(&format!("{base}/demo/login/sales")).await;
    browser
        .wait_for(
            "the customer in the sidebar",
            "location.pathname === '/sidebar' && document.querySelector('[data-customer], .customer, main') && document.body.innerText.includes('老客户')",
        )
        .await;
    browser.screenshot(&shot("sidebar")).await;
    browser.quit().await;
    demo.stop().await;

    // A restart resumes: nothing imported or played twice, the same data.
    let inbox = count(&db, "SELECT COUNT(*) FROM inbox");
    let all_alerts = count(&db, "SELECT COUNT(*) FROM alert");
    let (mut again, base) = Demo::played(&data).await;
    assert!(
        again.seen.iter().any(|l| l.contains("继续上次的演示")),
        "says it resumes: {:?}",
        again.seen
    );
    again.until("/demo/login/sales").await;
    let answer = reqwest::get(format!("{base}/demo")).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("已播放"));
    again.stop().await;
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM job WHERE kind = 'sync'"),
        1
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox"), inbox);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM alert"), all_alerts);

    // --fresh never deletes a folder that is not a demo's.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "mine").unwrap();
    let out = crate::common::scrm(
        dir.path(),
        &[
            "demo",
            "--fresh",
            "--data-dir",
            "other",
            "--listen",
            "127.0.0.1:1",
        ],
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("not a demo's folder"), "{}", out.stderr);
    assert!(other.join("keep.txt").exists());
    // And it serves on loopback only.
    let out = crate::common::scrm(dir.path(), &["demo", "--listen", "0.0.0.0:0"]).await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("loopback only"), "{}", out.stderr);
}
