//! Full sync and reconciliation against the emulated WeCom: imports a seeded corp with the fewest
//! calls the page sizes allow, repairs what callbacks missed, resumes from its checkpoint, and runs
//! once at a time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::emulated;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Backend, CORP};
use crate::emulated::EmulatedApp;
use scrm::app::sync::{self, SyncError, SyncProgress};
use scrm::domain::customers as contacts;
use scrm::domain::group_chats;
use scrm::pipeline::jobs;
use scrm::platform::config::Config;
use scrm::platform::wecom::Wecom;
use wecom_sdk::MemoryCoordinator;
use wecom_sdk::testkit::{DeliveryMode, Fault, FaultKind, NewCustomer, RelationEdit, SeedSpec};

fn wecom_for(app: &EmulatedApp) -> Wecom {
    let config = Config::from_toml(&app.config_text, &HashMap::new()).expect("config");
    Wecom::new(&config, Arc::new(MemoryCoordinator::new())).expect("client")
}

fn corp(staff: usize, customers: usize, chats: usize) -> SeedSpec {
    SeedSpec {
        staff,
        departments: 3,
        customers,
        follows_per_customer: (1, 2),
        tag_groups: 3,
        tags_per_group: 4,
        group_chats: chats,
        members_per_chat: (2, 6),
        rng_seed: 42,
    }
}

fn quiet(_: &SyncProgress) {}

/// A sync of the test corp by the test runner, without progress output.
async fn run_sync(
    app: &EmulatedApp,
    wecom: &Wecom,
) -> Result<(i64, scrm::app::sync::SyncSummary), SyncError> {
    sync::run(
        &app.db,
        wecom,
        &crate::common::corp(CORP),
        "test-runner",
        None,
        &quiet,
    )
    .await
}

both_backends!(
    export_writes_the_synced_corp_as_csv,
    full_sync_imports_the_corp_with_the_fewest_calls,
    reconciliation_repairs_missed_adds_edits_and_deletions,
    a_failed_sync_resumes_from_its_checkpoint,
    only_one_sync_of_a_corp_runs_at_a_time,
);

async fn full_sync_imports_the_corp_with_the_fewest_calls(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    let seeded = app.wecom().seed(CORP, &corp(30, 600, 12));
    let wecom = wecom_for(&app);

    let (job_id, summary) = run_sync(&app, &wecom).await.expect("sync");

    assert_eq!(summary.follow_users, 30);
    assert_eq!(contacts::count_customers(&app.db, CORP).await.unwrap(), 600);
    let active = contacts::count_relations(&app.db, CORP, "active")
        .await
        .unwrap();
    assert_eq!(u64::try_from(active).unwrap(), summary.relations_seen);
    assert_eq!(
        summary.added, summary.relations_seen,
        "all new on a first sync"
    );
    assert_eq!(summary.chats_seen, 12);
    assert_eq!(group_chats::count_live(&app.db, CORP).await.unwrap(), 12);
    assert_eq!(summary.tags, u64::try_from(seeded.tag_ids.len()).unwrap());
    // 30 users fit one call's user list: the minimum is ceil(rows / 100) pages.
    let pages = app.wecom().calls("externalcontact/batch/get_by_user");
    assert_eq!(
        pages,
        summary.relations_seen.div_ceil(100),
        "pages of 100 rows"
    );
    assert_eq!(app.wecom().calls("externalcontact/groupchat/get"), 12);
    assert_eq!(app.wecom().calls("externalcontact/groupchat/list"), 1);
    assert_eq!(app.wecom().calls("gettoken"), 1);
    assert_eq!(app.wecom().rate_limited(), 0);
    let job = jobs::get(&app.db, job_id).await.unwrap();
    assert_eq!(job.state, "done");
    assert_eq!(job.progress_done, job.progress_total);

    // A second run finds nothing to repair.
    let (_, again) = run_sync(&app, &wecom).await.expect("second sync");
    assert_eq!((again.added, again.edited, again.vanished), (0, 0, 0));
    app.stop().await;
}

async fn reconciliation_repairs_missed_adds_edits_and_deletions(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    app.wecom().seed(CORP, &corp(5, 40, 0));
    let wecom = wecom_for(&app);
    run_sync(&app, &wecom).await.expect("first sync");
    let users: Vec<String> = scrm::domain::staff::list(&app.db, CORP)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.user_id)
        .collect();
    let user = users[0].clone();
    let victim = scrm::domain::customers::unseen_active_relations(
        &app.db,
        &crate::common::corp(CORP),
        &crate::common::user(&user),
        -1,
        i64::MAX,
    )
    .await
    .unwrap()[0]
        .clone();
    let edited = scrm::domain::customers::unseen_active_relations(
        &app.db,
        &crate::common::corp(CORP),
        &crate::common::user(&user),
        -1,
        i64::MAX,
    )
    .await
    .unwrap()[1]
        .clone();

    // WeCom loses three callbacks: an add, an edit, and a relation vanishes without any event.
    app.wecom().set_delivery(DeliveryMode {
        drop_next: 2,
        ..DeliveryMode::default()
    });
    let missed = app
        .wecom()
        .add_customer(CORP, &user, NewCustomer::default());
    app.wecom().edit_relation(
        CORP,
        &user,
        &edited,
        RelationEdit {
            remark: Some("晚上沟通".to_owned()),
            ..RelationEdit::default()
        },
    );
    app.wecom().remove_relation_silently(CORP, &user, &victim);
    app.settle().await;
    assert!(
        contacts::get_relation(
            &app.db,
            crate::common::Rel::in_corp(CORP, &user, &missed).key()
        )
        .await
        .unwrap()
        .is_none(),
        "the add callback was dropped"
    );

    let (job_id, summary) = run_sync(&app, &wecom).await.expect("reconciliation");
    assert_eq!(
        (summary.added, summary.edited, summary.vanished),
        (1, 1, 1),
        "{summary:?}"
    );
    let repaired = contacts::get_relation(
        &app.db,
        crate::common::Rel::in_corp(CORP, &user, &missed).key(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(repaired.status, "active");
    let gone = contacts::get_relation(
        &app.db,
        crate::common::Rel::in_corp(CORP, &user, &victim).key(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(gone.status, "vanished");
    let remark = contacts::get_relation(
        &app.db,
        crate::common::Rel::in_corp(CORP, &user, &edited).key(),
    )
    .await
    .unwrap()
    .unwrap()
    .remark;
    assert_eq!(remark, "晚上沟通");
    let repairs = contacts::job_repairs(&app.db, CORP, job_id).await.unwrap();
    let mut kinds: Vec<&str> = repairs.iter().map(|r| r.change.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["added", "edited", "vanished"]);
    assert!(repairs.iter().all(|r| r.source == "sync"));
    app.stop().await;
}

async fn a_failed_sync_resumes_from_its_checkpoint(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    // 250 follow users: three chunks of 100 users, several pages each.
    app.wecom().seed(CORP, &corp(250, 900, 0));
    let wecom = wecom_for(&app);
    let state = app.wecom();
    let injected = Arc::new(Mutex::new(false));
    let flag = injected.clone();
    let break_after_first_page = move |p: &SyncProgress| {
        let mut done = flag.lock().unwrap();
        if p.phase == "customers" && p.summary.relations_seen > 0 && !*done {
            *done = true;
            state.inject_fault(Fault {
                api: Some("externalcontact/batch/get_by_user".to_owned()),
                kind: FaultKind::Http(502),
                times: 1000,
            });
        }
    };
    let first = sync::run(
        &app.db,
        &wecom,
        &crate::common::corp(CORP),
        "runner-1",
        None,
        &break_after_first_page,
    )
    .await;
    assert!(matches!(first, Err(SyncError::Api(_))), "{first:?}");
    let job = jobs::list(&app.db, Some(CORP), sync::JOB_KIND, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(job.state, "running", "the job stays resumable");
    let seen_before = contacts::count_relations(&app.db, CORP, "active")
        .await
        .unwrap();
    assert!(seen_before > 0);

    app.wecom().clear_faults();
    let good_pages_before = app.wecom().calls("externalcontact/batch/get_by_user");
    let (job_id, summary) = sync::run(
        &app.db,
        &wecom,
        &crate::common::corp(CORP),
        "runner-2",
        None,
        &quiet,
    )
    .await
    .expect("resumed sync");
    assert_eq!(job_id, job.id, "the same job resumed");
    assert_eq!(contacts::count_customers(&app.db, CORP).await.unwrap(), 900);
    let active = contacts::count_relations(&app.db, CORP, "active")
        .await
        .unwrap();
    assert_eq!(u64::try_from(active).unwrap(), summary.relations_seen);
    assert_eq!(
        summary.vanished, 0,
        "nothing seen before the failure is lost"
    );
    // The first page is not fetched again: the run went on from its cursor.
    let pages_after = app.wecom().calls("externalcontact/batch/get_by_user") - good_pages_before;
    assert!(pages_after < summary.relations_seen.div_ceil(100) + 3);
    app.stop().await;
}

async fn only_one_sync_of_a_corp_runs_at_a_time(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    app.wecom().seed(CORP, &corp(10, 100, 0));
    // Slow WeCom, so the first run is still going when the second starts.
    app.wecom().inject_fault(Fault {
        api: Some("externalcontact/batch/get_by_user".to_owned()),
        kind: FaultKind::Latency(Duration::from_millis(700)),
        times: 1000,
    });
    let wecom = wecom_for(&app);
    let db = app.db.clone();
    let first = {
        let wecom = wecom.clone();
        tokio::spawn(async move {
            sync::run(
                &db,
                &wecom,
                &crate::common::corp(CORP),
                "instance-a",
                None,
                &quiet,
            )
            .await
        })
    };
    emulated::eventually("the first sync is running", || async {
        jobs::list(&app.db, Some(CORP), sync::JOB_KIND, 1)
            .await
            .unwrap()
            .first()
            .is_some_and(|j| j.state == "running")
    })
    .await;
    let second = sync::run(
        &app.db,
        &wecom,
        &crate::common::corp(CORP),
        "instance-b",
        None,
        &quiet,
    )
    .await;
    assert!(matches!(second, Err(SyncError::Busy { .. })), "{second:?}");
    let (_, summary) = first.await.unwrap().expect("first sync");
    assert!(summary.relations_seen >= 100);
    assert_eq!(
        jobs::list(&app.db, Some(CORP), sync::JOB_KIND, 10)
            .await
            .unwrap()
            .len(),
        1,
        "one job"
    );
    app.stop().await;
}

/// `scrm export` after a sync: every customer, relation (tags by name, remark phones), tag and note
/// as CSV with a BOM, cells quoted and formulas defused; any page size writes the same bytes.
async fn export_writes_the_synced_corp_as_csv(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    let seeded = app.wecom().seed(CORP, &corp(3, 25, 0));
    let tag = seeded.tag_ids[0].clone();
    let ext = app.wecom().add_customer(
        CORP,
        &seeded.staff[0],
        NewCustomer {
            name: "=HYPERLINK(\"http://x\",\"点我\")".to_owned(),
            remark: Some("老客户,VIP".to_owned()),
            remark_mobiles: vec!["13800000000".to_owned()],
            tag_ids: vec![tag.clone()],
            ..NewCustomer::default()
        },
    );
    let wecom = wecom_for(&app);
    run_sync(&app, &wecom).await.expect("sync");
    scrm::domain::followup::create_note(
        &app.db,
        &crate::common::corp(CORP),
        &crate::common::ext(&ext),
        &seeded.staff[0],
        "第一次拜访，\"很满意\"",
        None,
        scrm::platform::db::now_ms(),
    )
    .await
    .expect("note");
    let customers = contacts::count_customers(&app.db, CORP).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    let exported = scrm::app::export::export(&app.db, CORP, dir.path(), |file, rows| {
        seen.push((file.to_owned(), rows));
    })
    .await
    .expect("export");
    let rows: HashMap<&str, u64> = exported.files.iter().copied().collect();
    assert_eq!(rows["customers.csv"], u64::try_from(customers).unwrap());
    assert_eq!(rows["customers.csv"], 26);
    assert!(rows["relations.csv"] >= 26, "{rows:?}");
    assert_eq!(rows["tags.csv"], 12);
    assert_eq!(rows["notes.csv"], 1);
    assert!(seen.contains(&("notes.csv".to_owned(), 1)), "{seen:?}");
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    for name in ["customers.csv", "relations.csv", "tags.csv", "notes.csv"] {
        let text = read(name);
        assert!(text.starts_with('\u{feff}'), "{name} has a BOM");
        // One line per row plus the header (no cell here holds a line break).
        assert_eq!(
            text.matches("\r\n").count() as u64,
            rows[name] + 1,
            "{name}"
        );
    }
    assert!(
        !std::fs::read_dir(dir.path())
            .unwrap()
            .any(|e| { e.unwrap().path().extension().is_some_and(|x| x == "part") })
    );
    let customers_csv = read("customers.csv");
    assert!(
        customers_csv.contains("\"'=HYPERLINK(\"\"http://x\"\",\"\"点我\"\")\""),
        "{customers_csv}"
    );
    let relations_csv = read("relations.csv");
    let line = relations_csv
        .lines()
        .find(|l| l.contains(&ext))
        .expect("the new customer's relation");
    let tag_name = read("tags.csv")
        .lines()
        .find(|l| l.contains(&tag))
        .and_then(|l| l.split(',').nth(3).map(str::to_owned))
        .expect("the tag's row");
    assert!(line.contains("\"老客户,VIP\""), "{line}");
    assert!(line.contains("13800000000"), "{line}");
    assert!(line.contains(&tag_name), "{line} / {tag_name}");
    assert!(line.contains("跟进中"), "{line}");
    assert!(read("notes.csv").contains("\"第一次拜访，\"\"很满意\"\"\""));
    // Pages of 7 rows: the same files, byte for byte.
    let small = tempfile::tempdir().unwrap();
    scrm::app::export::export_paged(&app.db, CORP, small.path(), 7, |_, _| {})
        .await
        .expect("paged export");
    for name in ["customers.csv", "relations.csv", "tags.csv", "notes.csv"] {
        assert_eq!(
            std::fs::read(small.path().join(name)).unwrap(),
            std::fs::read(dir.path().join(name)).unwrap(),
            "{name}"
        );
    }
    app.stop().await;
}
