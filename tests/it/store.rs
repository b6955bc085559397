//! Store functions on both backends, each on a fresh database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common::{Backend, CORP, TestDb, add_contact_event, contact_row};
use scrm::pipeline::inbox::{self, NewInboxRow, Stored};

fn row(n: u64) -> NewInboxRow {
    let body = add_contact_event(n, 1_700_000_000);
    contact_row(
        body,
        "add_external_contact",
        1_700_000_000,
        1_700_000_000_123,
    )
}

/// A batch mixing new rows, rows stored earlier and a repeat within the batch.
async fn insert_batch_tells_new_from_repeated_rows(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let (a, b, c) = (row(1), row(2), row(3));
    assert_eq!(
        inbox::insert_batch(&db, &[&a, &b]).await.unwrap(),
        vec![Stored::New, Stored::New]
    );
    let outcome = inbox::insert_batch(&db, &[&b, &c, &c, &a]).await.unwrap();
    assert_eq!(
        outcome,
        vec![
            Stored::Duplicate,
            Stored::New,
            Stored::Duplicate,
            Stored::Duplicate
        ]
    );
    assert_eq!(inbox::count(&db, None).await.unwrap(), 3);
    // Another corp may carry the same key.
    let mut other = row(1);
    other.corp_id = "wwother".to_owned();
    assert_eq!(
        inbox::insert_batch(&db, &[&other]).await.unwrap(),
        vec![Stored::New]
    );
    assert_eq!(inbox::count(&db, Some(CORP)).await.unwrap(), 3);
    assert_eq!(inbox::count(&db, Some("wwother")).await.unwrap(), 1);
    assert!(inbox::insert_batch(&db, &[]).await.unwrap().is_empty());
    db.close().await;
    test_db.drop_database().await;
}

/// Listing is newest first, filtered by corp; `get` returns the exact plaintext; unknown ids are NotFound.
async fn list_and_get_return_what_was_stored(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let rows: Vec<NewInboxRow> = (10..15).map(row).collect();
    let refs: Vec<&NewInboxRow> = rows.iter().collect();
    inbox::insert_batch(&db, &refs).await.unwrap();
    let listed = inbox::list(&db, Some(CORP), 3).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed[0].id > listed[1].id && listed[1].id > listed[2].id);
    assert!(
        listed
            .iter()
            .all(|r| r.body.is_none() && r.state == "pending" && r.attempts == 0)
    );
    let newest = inbox::get(&db, listed[0].id).await.unwrap();
    assert_eq!(newest.body.as_deref(), Some(rows[4].body.as_str()));
    assert_eq!(newest.create_time, Some(1_700_000_000));
    assert_eq!(newest.received_at_ms, 1_700_000_000_123);
    assert!(matches!(
        inbox::get(&db, 987_654).await,
        Err(scrm::platform::db::StoreError::NotFound)
    ));
    assert!(
        inbox::list(&db, Some("wwnobody"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    db.close().await;
    test_db.drop_database().await;
}

/// Corp settings: unset reads `None`, a set value reads back (also inside a transaction), a second
/// set replaces it, and another corp's setting of the same name is its own.
async fn settings_are_per_corp_and_replaced(backend: Backend) {
    use scrm::domain::settings;
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    assert_eq!(settings::get(&db, CORP, "stages").await.unwrap(), None);
    settings::set(&db, CORP, "stages", r#"["新客户"]"#, "admin", 1)
        .await
        .unwrap();
    settings::set(&db, "wwother", "stages", r#"["别家"]"#, "admin", 2)
        .await
        .unwrap();
    settings::set(&db, CORP, "stages", r#"["新客户","成交"]"#, "lisi", 3)
        .await
        .unwrap();
    assert_eq!(
        settings::get(&db, CORP, "stages").await.unwrap().as_deref(),
        Some(r#"["新客户","成交"]"#)
    );
    let mut tx = db.begin().await.unwrap();
    assert_eq!(
        settings::get_in(&mut tx, "wwother", "stages")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"["别家"]"#)
    );
    tx.commit().await.unwrap();
    db.close().await;
    test_db.drop_database().await;
}

/// A reassigned chat's owner changes, and only that chat's.
async fn a_chat_owner_is_set_by_its_owner_module(backend: Backend) {
    use scrm::domain::group_chats::{self, ChatSnapshot};
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    for chat in ["wrA", "wrB"] {
        let snapshot = ChatSnapshot {
            chat_id: crate::common::chat(chat),
            name: format!("群 {chat}"),
            owner_user_id: crate::common::user("zhangsan"),
            notice: String::new(),
            created_at_ms: Some(1),
            member_version: "v1".to_owned(),
            members: Vec::new(),
        };
        group_chats::apply(&db, &crate::common::corp(CORP), &snapshot, Some(0), None, 1)
            .await
            .unwrap();
    }
    group_chats::set_owner(
        &db,
        &crate::common::corp(CORP),
        &crate::common::chat("wrA"),
        &crate::common::user("lisi"),
        2,
    )
    .await
    .unwrap();
    let owner = |chat: &'static str| {
        let db = db.clone();
        async move {
            group_chats::get(&db, &crate::common::corp(CORP), &crate::common::chat(chat))
                .await
                .unwrap()
                .map(|c| c.owner_user_id.to_string())
        }
    };
    assert_eq!(owner("wrA").await.as_deref(), Some("lisi"));
    assert_eq!(owner("wrB").await.as_deref(), Some("zhangsan"));
    db.close().await;
    test_db.drop_database().await;
}

both_backends!(
    insert_batch_tells_new_from_repeated_rows,
    list_and_get_return_what_was_stored,
    settings_are_per_corp_and_replaced,
    a_chat_owner_is_set_by_its_owner_module
);

/// A test that ends early (a panic) does not leave its PostgreSQL database behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_database_is_dropped_with_its_handle() {
    let test_db = TestDb::create(Backend::Postgres).await;
    let name = test_db.pg_name.clone().unwrap();
    drop(test_db);
    let admin = scrm::platform::db::Db::connect(&crate::common::pg_admin_url())
        .await
        .unwrap();
    let scrm::platform::db::Db::Postgres(pool) = &admin else {
        unreachable!()
    };
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "{name} was not dropped");
    admin.close().await;
}
