//! Callbacks from the emulated WeCom turn into customers, follow relations, staff and group chats:
//! WeCom pushes, our server stores and acknowledges, the inbox workers fetch and apply.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common::{Backend, CORP};
use crate::emulated::{EmulatedApp, Options};
use scrm::domain::customers as contacts;
use scrm::domain::{group_chats, staff};
use wecom_sdk::testkit::{CallbackKind, Fault, FaultKind, NewCustomer, NewStaff, SeedSpec};

fn small_corp() -> SeedSpec {
    SeedSpec {
        staff: 3,
        departments: 2,
        customers: 0,
        group_chats: 0,
        rng_seed: 7,
        ..SeedSpec::default()
    }
}

both_backends!(
    added_customer_is_fetched_and_stored_with_its_relation,
    deletions_end_relations_and_keep_history,
    customer_unknown_to_wecom_becomes_a_dead_letter_with_the_reason,
    wecom_faults_are_retried_until_the_event_is_processed,
    staff_are_created_and_marked_departed,
    group_chat_members_follow_the_callbacks,
    duplicate_deliveries_change_nothing_twice,
    expired_token_and_a_silent_wecom_are_survived,
    a_retry_finishes_what_a_killed_attempt_left_after_storing_the_relation,
);

async fn added_customer_is_fetched_and_stored_with_its_relation(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    let seeded = app.wecom().seed(CORP, &small_corp());
    let user = seeded.staff[0].clone();

    let ext = app.wecom().add_customer(
        CORP,
        &user,
        NewCustomer {
            name: "王总".to_owned(),
            state: Some("expo2024".to_owned()),
            ..NewCustomer::default()
        },
    );
    app.settle().await;

    let customer = contacts::get_customer(
        &app.db,
        &crate::common::corp(CORP),
        &crate::common::ext(&ext),
    )
    .await
    .unwrap()
    .expect("customer stored");
    assert_eq!(customer.name, "王总");
    let relation = contacts::get_relation(
        &app.db,
        crate::common::Rel::in_corp(CORP, &user, &ext).key(),
    )
    .await
    .unwrap()
    .expect("relation stored");
    assert_eq!(relation.status, "active");
    assert_eq!(relation.state.as_deref(), Some("expo2024"));
    assert!(relation.added_at_ms.is_some());
    let history = contacts::relation_history(
        &app.db,
        crate::common::Rel::in_corp(CORP, &user, &ext).key(),
    )
    .await
    .unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].change, "added");
    assert_eq!(history[0].source, "callback");
    assert!(app.wecom().calls("externalcontact/get") >= 1);
    app.stop().await;
}

async fn deletions_end_relations_and_keep_history(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    let seeded = app.wecom().seed(CORP, &small_corp());
    let (a, b) = (seeded.staff[0].clone(), seeded.staff[1].clone());
    let ext = app.wecom().add_customer(CORP, &a, NewCustomer::default());
    app.wecom().add_follow(CORP, &b, &ext, None);
    app.settle().await;
    assert_eq!(
        contacts::get_relation(&app.db, crate::common::Rel::in_corp(CORP, &b, &ext).key())
            .await
            .unwrap()
            .map(|r| r.status.as_str()),
        Some("active")
    );

    // 员工删客户, then 客户删员工 on the other relation.
    app.wecom().staff_deletes_customer(CORP, &a, &ext);
    app.wecom().customer_deletes_staff(CORP, &b, &ext);
    app.settle().await;

    let ra = contacts::get_relation(&app.db, crate::common::Rel::in_corp(CORP, &a, &ext).key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ra.status, "deleted_by_staff");
    assert!(ra.ended_at_ms.is_some());
    let rb = contacts::get_relation(&app.db, crate::common::Rel::in_corp(CORP, &b, &ext).key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rb.status, "deleted_by_customer");
    let changes: Vec<String> =
        contacts::relation_history(&app.db, crate::common::Rel::in_corp(CORP, &a, &ext).key())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.change)
            .collect();
    assert_eq!(changes, ["added", "deleted_by_staff"]);

    // A handover removal is not a deletion by the staff member.
    let c = seeded.staff[2].clone();
    let ext2 = app.wecom().add_customer(CORP, &c, NewCustomer::default());
    app.settle().await;
    let now = app.wecom().now();
    app.wecom().push_raw(
        CORP,
        CallbackKind::Contacts,
        &format!(
            "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
             <CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[del_external_contact]]></ChangeType>\
             <UserID><![CDATA[{c}]]></UserID><ExternalUserID><![CDATA[{ext2}]]></ExternalUserID>\
             <Source><![CDATA[DELETE_BY_TRANSFER]]></Source></xml>"
        ),
    );
    app.settle().await;
    let rc = contacts::get_relation(&app.db, crate::common::Rel::in_corp(CORP, &c, &ext2).key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rc.status, "transferred");
    app.stop().await;
}

async fn customer_unknown_to_wecom_becomes_a_dead_letter_with_the_reason(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    let seeded = app.wecom().seed(CORP, &small_corp());
    // WeCom keeps saying "not an external contact" for ever.
    app.wecom().inject_fault(Fault {
        api: Some("externalcontact/get".to_owned()),
        kind: FaultKind::Errcode(84061),
        times: 1000,
    });
    let ext = app
        .wecom()
        .add_customer(CORP, &seeded.staff[0], NewCustomer::default());
    app.settle().await;

    let stats = scrm::pipeline::worker::stats(&app.db, None).await.unwrap();
    assert_eq!(stats.dead, 1, "{stats:?}");
    let dead = scrm::pipeline::worker::dead_letters(&app.db, None, 10)
        .await
        .unwrap();
    let reason = format!("{dead:?}");
    assert!(
        reason.contains("84061"),
        "dead letter names the errcode: {reason}"
    );
    // max_attempts = 4 in the test config: four tries, no loop.
    assert_eq!(app.wecom().calls("externalcontact/get"), 4);
    assert!(
        contacts::get_relation(
            &app.db,
            crate::common::Rel::in_corp(CORP, &seeded.staff[0], &ext).key()
        )
        .await
        .unwrap()
        .is_none()
    );
    app.stop().await;
}

async fn wecom_faults_are_retried_until_the_event_is_processed(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    let seeded = app.wecom().seed(CORP, &small_corp());
    for kind in [FaultKind::Busy, FaultKind::Http(502), FaultKind::Garbage] {
        app.wecom().inject_fault(Fault {
            api: Some("externalcontact/get".to_owned()),
            kind,
            times: 1,
        });
    }
    let ext = app
        .wecom()
        .add_customer(CORP, &seeded.staff[0], NewCustomer::default());
    app.settle().await;
    let relation = contacts::get_relation(
        &app.db,
        crate::common::Rel::in_corp(CORP, &seeded.staff[0], &ext).key(),
    )
    .await
    .unwrap();
    assert_eq!(relation.map(|r| r.status.as_str()), Some("active"));
    assert_eq!(
        app.wecom().calls("externalcontact/get"),
        4,
        "three faults, then the answer"
    );
    let stats = scrm::pipeline::worker::stats(&app.db, None).await.unwrap();
    assert_eq!((stats.dead, stats.pending), (0, 0), "{stats:?}");
    app.stop().await;
}

async fn staff_are_created_and_marked_departed(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    app.wecom().seed(CORP, &small_corp());
    app.wecom().add_staff(
        CORP,
        NewStaff {
            userid: "liuyang".to_owned(),
            name: "刘洋".to_owned(),
            department: vec![1],
        },
    );
    app.settle().await;
    let member = staff::get(
        &app.db,
        &crate::common::corp(CORP),
        &crate::common::user("liuyang"),
    )
    .await
    .unwrap()
    .expect("staff stored");
    assert_eq!(member.name, "刘洋");
    assert_eq!(member.departed_at_ms, None);

    app.wecom().depart_staff(CORP, "liuyang");
    app.settle().await;
    let member = staff::get(
        &app.db,
        &crate::common::corp(CORP),
        &crate::common::user("liuyang"),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(member.departed_at_ms.is_some(), "{member:?}");
    assert_eq!(member.status, 5);
    app.stop().await;
}

async fn group_chat_members_follow_the_callbacks(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    let seeded = app.wecom().seed(CORP, &small_corp());
    let owner = seeded.staff[0].clone();
    let c1 = app
        .wecom()
        .add_customer(CORP, &owner, NewCustomer::default());
    let c2 = app
        .wecom()
        .add_customer(CORP, &owner, NewCustomer::default());
    let chat = app
        .wecom()
        .create_group_chat(CORP, &owner, vec![c1.clone()]);
    app.settle().await;
    let mut members = group_chats::current_members(
        &app.db,
        &crate::common::corp(CORP),
        &crate::common::chat(&chat),
    )
    .await
    .unwrap();
    members.sort();
    let mut expected = vec![owner.clone(), c1.clone()];
    expected.sort();
    assert_eq!(members, expected);

    app.wecom().add_chat_members(CORP, &chat, vec![c2.clone()]);
    app.settle().await;
    assert!(
        group_chats::current_members(
            &app.db,
            &crate::common::corp(CORP),
            &crate::common::chat(&chat)
        )
        .await
        .unwrap()
        .contains(&c2)
    );
    app.wecom()
        .remove_chat_members(CORP, &chat, vec![c1.clone()]);
    app.settle().await;
    let members = group_chats::current_members(
        &app.db,
        &crate::common::corp(CORP),
        &crate::common::chat(&chat),
    )
    .await
    .unwrap();
    assert!(!members.contains(&c1), "{members:?}");
    app.wecom().dismiss_group_chat(CORP, &chat);
    app.settle().await;
    let stored = group_chats::get(
        &app.db,
        &crate::common::corp(CORP),
        &crate::common::chat(&chat),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(stored.dismissed_at_ms.is_some());
    app.stop().await;
}

async fn duplicate_deliveries_change_nothing_twice(backend: Backend) {
    let app = EmulatedApp::spawn_with(backend, Options::default()).await;
    let seeded = app.wecom().seed(CORP, &small_corp());
    app.wecom().set_delivery(wecom_sdk::testkit::DeliveryMode {
        duplicate: true,
        ..Default::default()
    });
    let ext = app
        .wecom()
        .add_customer(CORP, &seeded.staff[0], NewCustomer::default());
    app.wecom()
        .staff_deletes_customer(CORP, &seeded.staff[0], &ext);
    app.settle().await;
    assert_eq!(
        scrm::pipeline::inbox::count(&app.db, None).await.unwrap(),
        2,
        "duplicates are stored once"
    );
    let changes: Vec<String> = contacts::relation_history(
        &app.db,
        crate::common::Rel::in_corp(CORP, &seeded.staff[0], &ext).key(),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|e| e.change)
    .collect();
    assert!(
        changes == ["added", "deleted_by_staff"] || changes == ["deleted_by_staff"],
        "{changes:?}"
    );
    // Replaying every event changes nothing.
    let replayed = scrm::pipeline::inbox::replay(
        &app.db,
        &scrm::pipeline::inbox::ReplayFilter {
            corp_id: Some(CORP.to_owned()),
            ..Default::default()
        },
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(replayed, 2);
    app.settle().await;
    let after: Vec<String> = contacts::relation_history(
        &app.db,
        crate::common::Rel::in_corp(CORP, &seeded.staff[0], &ext).key(),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|e| e.change)
    .collect();
    assert_eq!(after, changes);
    let r = contacts::get_relation(
        &app.db,
        crate::common::Rel::in_corp(CORP, &seeded.staff[0], &ext).key(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.status, "deleted_by_staff");
    app.stop().await;
}

async fn expired_token_and_a_silent_wecom_are_survived(backend: Backend) {
    let app = EmulatedApp::spawn(backend).await;
    let seeded = app.wecom().seed(CORP, &small_corp());
    let first = app
        .wecom()
        .add_customer(CORP, &seeded.staff[0], NewCustomer::default());
    app.settle().await;
    assert_eq!(app.wecom().calls("gettoken"), 1);

    // WeCom drops our token early (42001 once), then does not answer one call at all.
    app.wecom().inject_fault(Fault {
        api: Some("externalcontact/get".to_owned()),
        kind: FaultKind::Errcode(42001),
        times: 1,
    });
    app.wecom().inject_fault(Fault {
        api: Some("externalcontact/get".to_owned()),
        kind: FaultKind::Silence,
        times: 1,
    });
    let second = app
        .wecom()
        .add_customer(CORP, &seeded.staff[1], NewCustomer::default());
    app.settle().await;
    for (user, ext) in [(&seeded.staff[0], &first), (&seeded.staff[1], &second)] {
        let r = contacts::get_relation(&app.db, crate::common::Rel::in_corp(CORP, user, ext).key())
            .await
            .unwrap();
        assert_eq!(r.map(|r| r.status.as_str()), Some("active"));
    }
    assert_eq!(
        app.wecom().calls("gettoken"),
        2,
        "42001 drops the token and fetches one new one"
    );
    let stats = scrm::pipeline::worker::stats(&app.db, None).await.unwrap();
    assert_eq!(
        (stats.dead, stats.pending, stats.done),
        (0, 0, 2),
        "{stats:?}"
    );
    app.stop().await;
}

/// A worker killed (`kill -9`, a lost lease) after it stored a new relation and before what
/// follows: the relation and its history entry are one transaction, and the retry, which finds
/// the relation unchanged, sees from that entry that its event added it and makes the follow-up
/// reminders; the history keeps one entry. (Before, the retry recorded nothing and made no
/// reminder: `tests/it/processes.rs` found it.)
async fn a_retry_finishes_what_a_killed_attempt_left_after_storing_the_relation(backend: Backend) {
    use scrm::pipeline::{inbox, worker};
    use std::sync::Arc;

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let emulator = wecom_sdk::testkit::Emulator::start(crate::emulated::quick_emulator())
        .await
        .unwrap();
    let wecom = emulator.state();
    wecom.add_app(
        CORP,
        crate::emulated::SECRET,
        Some(crate::emulated::AGENT_ID),
    );
    let user = "zhangsan";
    // No callback target: the test stores the event itself.
    let ext = wecom.add_customer(CORP, user, NewCustomer::default());
    let body = wecom.deliveries().last().unwrap().plaintext.clone();
    let test_db = crate::common::TestDb::create(backend).await;
    let db = test_db.connect().await;
    let now = scrm::platform::db::now_ms();
    let row = inbox::NewInboxRow {
        corp_id: CORP.to_owned(),
        app: "contacts".to_owned(),
        agent_id: None,
        dedup_key: crate::common::dedup_key_of(&body),
        msg_type: "event".to_owned(),
        event: Some("change_external_contact".to_owned()),
        change_type: Some("add_external_contact".to_owned()),
        create_time: None,
        received_at_ms: now,
        body,
    };
    inbox::insert_batch(&db, &[&row]).await.unwrap();

    // The attempt that died: it claimed the row (its lease has run out since) and stored the
    // relation as WeCom reported it.
    let lease = std::time::Duration::from_secs(60);
    let claimed = inbox::claim(&db, "killed#1", now - 120_000, lease, 1)
        .await
        .unwrap();
    let id = claimed[0].id;
    let corp = crate::common::corp(CORP);
    let snapshot = contacts::RelationSnapshot {
        user_id: crate::common::user(user),
        external_user_id: crate::common::ext(&ext),
        remark: String::new(),
        description: String::new(),
        remark_corp_name: String::new(),
        remark_mobiles: Vec::new(),
        tag_ids: Vec::new(),
        add_way: 1,
        state: None,
        oper_user_id: Some(user.to_owned()),
        added_at_ms: Some(wecom.now_ms()),
    };
    let note = contacts::ChangeNote {
        source: contacts::Source::Callback(id),
        detail: "",
        at_ms: now,
    };
    let change = contacts::apply_relation_noted(&db, &corp, &snapshot, now, None, note)
        .await
        .unwrap();
    assert_eq!(change, contacts::RelationChange::Added);

    // The retry, by a live worker.
    let config_text = crate::emulated::server_config(&test_db.url, &emulator.base_url(), "", None);
    let config =
        scrm::platform::config::Config::from_toml(&config_text, &std::collections::HashMap::new())
            .unwrap();
    let client =
        scrm::platform::wecom::Wecom::new(&config, Arc::new(wecom_sdk::MemoryCoordinator::new()))
            .unwrap();
    let processor = scrm::app::events::EventProcessor::new(db.clone(), client);
    worker::drain(
        &db,
        &processor,
        &worker::WorkerSettings::from(&config.worker),
    )
    .await
    .unwrap();
    let stored = inbox::get(&db, id).await.unwrap();
    assert_eq!((stored.state.as_str(), stored.attempts), ("done", 2));
    let key = crate::common::Rel::in_corp(CORP, user, &ext);
    let history = contacts::relation_history(&db, key.key()).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].change, "added");
    let reminders = crate::emulated::reminders_of(&db, &ext).await;
    assert_eq!(
        reminders.len(),
        scrm::platform::config::ReminderSettings::default()
            .after_add_days
            .len(),
        "the follow-up reminders of the new customer: {reminders:?}"
    );
    db.close().await;
    test_db.drop_database().await;
}
