//! Two server instances on one PostgreSQL and one Redis, against the emulated WeCom: one
//! `gettoken` per token lifetime between them, no event processed twice, one reconciliation at a
//! time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::emulated;
use std::time::Duration;

use crate::common::{Backend, CORP, TestDb};
use crate::emulated::{Instance, eventually, fresh_redis, point_callbacks};
use wecom_sdk::testkit::{NewCustomer, SeedSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_tokens_events_and_the_reconciliation() {
    let (emulator, wecom) = emulated::shared_token_emulator().await;
    let seeded = wecom.seed(
        CORP,
        &SeedSpec {
            staff: 8,
            departments: 2,
            customers: 120,
            follows_per_customer: (1, 2),
            group_chats: 4,
            rng_seed: 3,
            ..SeedSpec::default()
        },
    );
    let test_db = TestDb::create(Backend::Postgres).await;
    let redis_url = fresh_redis(7).await;
    // Both instances run the scheduler, checking every second; the first sync is due at once.
    let config = emulated::server_config(&test_db.url, &emulator.base_url(), "", Some(&redis_url))
        .replace(
            "[sync]\nenabled = false",
            "[sync]\nenabled = true\ncheck_interval_secs = 1",
        );
    let mut a = Instance::start(&config).await;
    let mut b = Instance::start(&config).await;
    let db = test_db.connect().await;

    // One reconciliation at a time: both schedulers find the sync due; one job runs.
    eventually("the first sync finished", || async {
        scrm::pipeline::jobs::last_finished_ms(&db, CORP, scrm::app::sync::JOB_KIND)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let jobs = scrm::pipeline::jobs::list(&db, Some(CORP), scrm::app::sync::JOB_KIND, 10)
        .await
        .unwrap();
    assert_eq!(
        jobs.len(),
        1,
        "one reconciliation for two instances: {jobs:?}"
    );
    assert_eq!(wecom.calls("externalcontact/get_follow_user_list"), 1);

    // WeCom delivers to one instance (as a load balancer would); both instances' workers share the
    // stored events.
    point_callbacks(&wecom, &a);
    let mut added = Vec::new();
    for i in 0..40 {
        let user = &seeded.staff[i % seeded.staff.len()];
        added.push((
            user.clone(),
            wecom.add_customer(CORP, user, NewCustomer::default()),
        ));
    }
    emulator.flush_callbacks().await;
    emulated::wait_idle(&db).await;
    let stats = scrm::pipeline::worker::stats(&db, None).await.unwrap();
    assert_eq!((stats.done, stats.dead), (40, 0), "{stats:?}");
    let rows = scrm::pipeline::inbox::list(&db, Some(CORP), 1000)
        .await
        .unwrap();
    assert_eq!(rows.len(), 40);
    assert!(
        rows.iter().all(|r| r.state == "done" && r.attempts == 1),
        "no event was processed twice"
    );
    for (user, ext) in &added {
        let history = scrm::domain::customers::relation_history(
            &db,
            crate::common::Rel::in_corp(CORP, user, ext).key(),
        )
        .await
        .unwrap();
        assert_eq!(history.len(), 1, "{history:?}");
    }
    assert_eq!(
        wecom.calls("externalcontact/get"),
        40,
        "each event fetched once"
    );
    assert_eq!(wecom.calls("gettoken"), 1, "one token for both instances");

    // The token expires in WeCom: one refresh between the two instances.
    wecom.advance_clock(Duration::from_secs(3700));
    point_callbacks(&wecom, &b);
    for i in 0..20 {
        let user = &seeded.staff[i % seeded.staff.len()];
        wecom.add_customer(CORP, user, NewCustomer::default());
    }
    emulator.flush_callbacks().await;
    emulated::wait_idle(&db).await;
    let stats = scrm::pipeline::worker::stats(&db, None).await.unwrap();
    assert_eq!((stats.done, stats.dead), (60, 0), "{stats:?}");
    assert_eq!(wecom.calls("gettoken"), 2, "one gettoken per expiry");

    a.stop().await;
    b.stop().await;
    db.close().await;
    test_db.drop_database().await;
}
