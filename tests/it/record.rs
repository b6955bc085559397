//! The customer record through `/api/v1` against the emulated WeCom: tag edits flow to WeCom by
//! the outbox (in order, once, surviving faults, outages and a `kill -9`), authorization by role
//! and scope, validation, the tag library both ways, auto-tagging rules, and the OpenAPI document.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::{common, emulated};
use std::process::Stdio;
use std::time::Duration;

use crate::common::{Backend, CORP};
use crate::emulated::{Api, EmulatedApp, Options, eventually, wait_outbox_idle};
use serde_json::{Value, json};
use wecom_sdk::testkit::{Fault, FaultKind, NewCustomer, RelationEdit, SeedSpec};

both_backends!(
    a_tag_edit_reaches_wecom_and_shows_who_set_it,
    credentials_roles_and_scope_are_enforced_and_change_nothing,
    bad_input_gets_a_field_and_a_reason,
    a_tag_deleted_in_wecom_while_pending_is_dropped_and_the_rest_delivered,
    wecom_refusing_mark_tag_ends_as_a_dead_letter_with_the_reason,
    a_40068_for_a_tag_wecom_still_lists_is_retried,
    concurrent_edits_by_two_salespeople_are_all_delivered,
    pending_edits_survive_a_fresh_snapshot_from_wecom,
    remark_and_description_go_out_by_remark,
    the_tag_library_is_edited_both_ways,
    a_repeated_add_corp_tag_does_not_create_twice,
    auto_tagging_rules_tag_by_channel_group_and_keyword_once,
    every_documented_endpoint_requires_credentials,
);
both_backends!(an_outage_of_a_minute_loses_and_doubles_nothing);
both_backends!(pending_items_are_delivered_after_kill_9);

fn corp() -> SeedSpec {
    SeedSpec {
        staff: 3,
        departments: 1,
        customers: 0,
        group_chats: 0,
        rng_seed: 11,
        ..SeedSpec::default()
    }
}

/// A corp with three staff, two tags (known to us through the callbacks) and one customer of the
/// first staff member.
struct Fixture {
    app: EmulatedApp,
    staff: Vec<String>,
    tags: Vec<String>,
    ext: String,
}

async fn fixture_with(backend: Backend, options: Options) -> Fixture {
    let app = EmulatedApp::spawn_with(backend, options).await;
    let seeded = app.wecom().seed(CORP, &corp());
    let tags = vec![
        app.wecom().create_tag(CORP, "客户等级", "重要客户"),
        app.wecom().create_tag(CORP, "客户等级", "普通客户"),
        app.wecom().create_tag(CORP, "来源", "展会"),
    ];
    let ext = app.wecom().add_customer(
        CORP,
        &seeded.staff[0],
        NewCustomer {
            name: "王总".to_owned(),
            ..NewCustomer::default()
        },
    );
    app.settle().await;
    Fixture {
        app,
        staff: seeded.staff,
        tags,
        ext,
    }
}

async fn fixture(backend: Backend) -> Fixture {
    fixture_with(backend, Options::default()).await
}

fn tags_path(ext: &str, user: &str) -> String {
    format!("/api/v1/customers/{ext}/relations/{user}/tags")
}

fn wecom_tags(f: &Fixture, user: &str) -> Vec<String> {
    let mut tags = f
        .app
        .wecom()
        .relation(CORP, user, &f.ext)
        .expect("relation")
        .tag_ids;
    tags.sort();
    tags
}

async fn our_tags(f: &Fixture, user: &str) -> Vec<String> {
    scrm::domain::customers::get_relation(
        &f.app.db,
        crate::common::Rel::in_corp(CORP, user, &f.ext).key(),
    )
    .await
    .unwrap()
    .expect("relation")
    .tags()
}

async fn outbox(f: &Fixture, state: &str) -> Vec<scrm::pipeline::outbox::OutboxEntry> {
    scrm::pipeline::outbox::list(
        &f.app.db,
        &scrm::pipeline::outbox::OutboxFilter {
            state: Some(state.to_owned()),
            limit: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn a_tag_edit_reaches_wecom_and_shows_who_set_it(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let sales = f.app.api("sales", Some(user)).await;

    let (status, body) = sales
        .put(&tags_path(&f.ext, user), json!({"add": [f.tags[0]]}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(body["outbox_id"].as_i64().is_some(), "{body}");
    assert_eq!(body["tag_ids"], json!([f.tags[0]]));

    wait_outbox_idle(&f.app.db).await;
    assert_eq!(wecom_tags(&f, user), vec![f.tags[0].clone()]);
    let (status, record) = sales.get(&format!("/api/v1/customers/{}", f.ext)).await;
    assert_eq!(status, 200, "{record}");
    let relation = &record["relations"][0];
    assert_eq!(relation["user_id"], json!(user));
    assert_eq!(relation["tags"][0]["tag_id"], json!(f.tags[0]));
    assert_eq!(relation["tags"][0]["name"], json!("重要客户"));
    assert_eq!(relation["tags"][0]["set_by"], json!(user));
    assert_eq!(relation["pending"], json!([]), "delivered: nothing pending");

    // Adding what is there changes nothing and sends nothing.
    let (status, body) = sales
        .put(&tags_path(&f.ext, user), json!({"add": [f.tags[0]]}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(body["outbox_id"], Value::Null);
    let (status, _) = sales
        .put(
            &tags_path(&f.ext, user),
            json!({"add": [f.tags[1]], "remove": [f.tags[0]]}),
        )
        .await;
    assert_eq!(status, 202);
    wait_outbox_idle(&f.app.db).await;
    assert_eq!(wecom_tags(&f, user), vec![f.tags[1].clone()]);
    assert_eq!(our_tags(&f, user).await, vec![f.tags[1].clone()]);
    assert_eq!(
        f.app.wecom().writes_for("externalcontact/mark_tag").len(),
        2
    );
    // The write is in the audit log with the acting staff member.
    let actors: Vec<String> = scrm::on_db!(&f.app.db, |pool| sqlx::query_scalar(
        "SELECT actor FROM audit_log WHERE action = 'relation.tags'"
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(actors, vec![user.clone(), user.clone()]);
    f.app.stop().await;
}

async fn credentials_roles_and_scope_are_enforced_and_change_nothing(backend: Backend) {
    let f = fixture(backend).await;
    let (owner, other) = (&f.staff[0], &f.staff[1]);
    let path = tags_path(&f.ext, owner);
    let edit = json!({"add": [f.tags[0]]});

    let nobody = Api::new(&f.app.server.base_url, "");
    assert_eq!(nobody.put(&path, edit.clone()).await.0, 401);
    let garbage = Api::new(&f.app.server.base_url, "scrm_0123456789ab_notarealkey");
    let (status, body) = garbage.get("/api/v1/customers").await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], json!("unauthenticated"));

    // A salesperson who does not follow the customer sees and changes nothing of it.
    let stranger = f.app.api("sales", Some(other)).await;
    assert_eq!(
        stranger
            .get(&format!("/api/v1/customers/{}", f.ext))
            .await
            .0,
        403
    );
    assert_eq!(stranger.put(&path, edit.clone()).await.0, 403);
    assert_eq!(
        stranger
            .put(&tags_path(&f.ext, other), edit.clone())
            .await
            .0,
        403
    );
    let (status, list) = stranger.get("/api/v1/customers").await;
    assert_eq!(status, 200);
    assert_eq!(list["customers"], json!([]));
    assert_eq!(
        stranger
            .get(&format!("/api/v1/customers?staff={owner}"))
            .await
            .0,
        403
    );
    // The owner may not edit a colleague's relation either, nor manage the library.
    let sales = f.app.api("sales", Some(owner)).await;
    assert_eq!(
        sales.put(&tags_path(&f.ext, other), edit.clone()).await.0,
        403
    );
    assert_eq!(
        sales.delete(&format!("/api/v1/tags/{}", f.tags[0])).await.0,
        403
    );
    assert_eq!(sales.get("/api/v1/outbox").await.0, 403);
    // Compliance reads everything and writes nothing.
    let compliance = f.app.api("compliance", None).await;
    assert_eq!(
        compliance
            .get(&format!("/api/v1/customers/{}", f.ext))
            .await
            .0,
        200
    );
    assert_eq!(compliance.put(&path, edit.clone()).await.0, 403);
    assert_eq!(compliance.get("/api/v1/outbox").await.0, 200);
    // A revoked key is refused.
    let (id, key) = scrm::auth::create_key(
        &f.app.db,
        &crate::common::corp(CORP),
        scrm::auth::Role::Admin,
        None,
        "t",
        0,
    )
    .await
    .unwrap();
    let admin = Api::new(&f.app.server.base_url, &key);
    assert_eq!(admin.get("/api/v1/customers").await.0, 200);
    assert!(scrm::auth::revoke_key(&f.app.db, id, 1).await.unwrap());
    assert_eq!(admin.get("/api/v1/customers").await.0, 401);

    assert!(outbox(&f, "pending").await.is_empty() && outbox(&f, "done").await.is_empty());
    assert!(our_tags(&f, owner).await.is_empty());
    assert!(wecom_tags(&f, owner).is_empty());
    f.app.stop().await;
}

async fn bad_input_gets_a_field_and_a_reason(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let sales = f.app.api("sales", Some(user)).await;
    let path = tags_path(&f.ext, user);
    let calls_before = f.app.wecom().calls("externalcontact/get_corp_tag_list");

    let (status, body) = sales
        .put(&path, json!({"add": ["etNOSUCHTAG000000000000000000000"]}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], json!("add[0]"));
    assert!(
        body["reason"].as_str().unwrap().contains("不存在"),
        "{body}"
    );
    assert!(
        f.app.wecom().calls("externalcontact/get_corp_tag_list") > calls_before,
        "an unknown tag makes us fetch the library once before refusing"
    );
    let (status, body) = sales.put(&path, json!({"add": [7]})).await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("add[0]")),
        "{body}"
    );
    let (status, body) = sales.put(&path, json!({})).await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("add")),
        "{body}"
    );
    let (status, body) = sales
        .put(&path, json!({"add": [f.tags[0]], "colour": 1}))
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = sales.call(reqwest::Method::PUT, &path, None).await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("body")),
        "{body}"
    );
    let remark = format!("/api/v1/customers/{}/relations/{user}", f.ext);
    let (status, body) = sales
        .patch(
            &remark,
            json!({"remark": "一二三四五六七八九十一二三四五六七八九十多"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("remark")),
        "{body}"
    );
    let admin = f.app.api("admin", None).await;
    let (status, body) = admin
        .post("/api/v1/tag-groups", json!({"name": "空组", "tags": []}))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("tags")),
        "{body}"
    );
    let (status, body) = admin
        .post("/api/v1/tag-groups", json!({"name": "组", "tags": [{"name": "这是一个超过三十个字的标签名称这是一个超过三十个字的标签名称多"}]}))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("tags[0].name")),
        "{body}"
    );
    let (status, body) = admin.get("/api/v1/outbox?state=lost").await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("state")),
        "{body}"
    );
    let (status, body) = admin.get("/api/v1/outbox/notanumber").await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("path")),
        "{body}"
    );
    // A relation that does not exist is a conflict, not a crash.
    let (status, body) = admin
        .put(&tags_path(&f.ext, &f.staff[2]), json!({"add": [f.tags[0]]}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(outbox(&f, "pending").await.is_empty() && outbox(&f, "done").await.is_empty());
    f.app.stop().await;
}

async fn a_tag_deleted_in_wecom_while_pending_is_dropped_and_the_rest_delivered(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let sales = f.app.api("sales", Some(user)).await;
    // Hold the delivery back while the admin deletes one of the tags in the WeCom console.
    f.app.wecom().inject_fault(Fault {
        api: Some("externalcontact/mark_tag".to_owned()),
        kind: FaultKind::Http(502),
        times: 8,
    });
    let (status, _) = sales
        .put(
            &tags_path(&f.ext, user),
            json!({"add": [f.tags[0], f.tags[2]]}),
        )
        .await;
    assert_eq!(status, 202);
    assert!(f.app.wecom().delete_tag(CORP, &f.tags[0]));
    f.app.settle().await;
    wait_outbox_idle(&f.app.db).await;

    assert_eq!(wecom_tags(&f, user), vec![f.tags[2].clone()]);
    assert_eq!(our_tags(&f, user).await, vec![f.tags[2].clone()]);
    let done = outbox(&f, "done").await;
    assert_eq!(done.len(), 1);
    let result: Value = serde_json::from_str(done[0].result.as_deref().unwrap()).unwrap();
    assert_eq!(result["dropped_tags"], json!([f.tags[0]]), "{result}");
    assert!(outbox(&f, "dead").await.is_empty());
    f.app.stop().await;
}

async fn wecom_refusing_mark_tag_ends_as_a_dead_letter_with_the_reason(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let admin = f.app.api("admin", None).await;
    // WeCom no longer has the relation, and said nothing (no callback).
    assert!(f.app.wecom().remove_relation_silently(CORP, user, &f.ext));
    let (status, body) = admin
        .put(&tags_path(&f.ext, user), json!({"add": [f.tags[0]]}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["outbox_id"].as_i64().unwrap();
    eventually("the item is dead", || async {
        scrm::pipeline::outbox::get(&f.app.db, id)
            .await
            .unwrap()
            .state
            == "dead"
    })
    .await;
    let (status, item) = admin.get(&format!("/api/v1/outbox/{id}")).await;
    assert_eq!(status, 200);
    let reason = item["last_error"].as_str().unwrap();
    assert!(
        reason.contains("84061") && reason.contains("不再跟进"),
        "{reason}"
    );
    assert_eq!(
        item["attempts"],
        json!(1),
        "a refusal is not retried: {item}"
    );
    let (status, list) = admin.get("/api/v1/outbox?state=dead").await;
    assert_eq!(status, 200);
    assert_eq!(list["stats"]["dead"], json!(1), "{list}");
    let metrics =
        common::scrape_until(&f.app.server.base_url, |t| t.contains("scrm_outbox_dead 1")).await;
    assert!(metrics.contains("scrm_outbox_dead 1"), "{metrics}");
    // Retrying puts it back; WeCom refuses again; retrying what is not dead is a conflict.
    let (status, body) = admin
        .post(&format!("/api/v1/outbox/{id}/retry"), json!({}))
        .await;
    assert_eq!((status, body["retried"].clone()), (200, json!(1)), "{body}");
    eventually("dead again", || async {
        scrm::pipeline::outbox::get(&f.app.db, id)
            .await
            .unwrap()
            .state
            == "dead"
    })
    .await;
    assert_eq!(
        f.app.wecom().writes_for("externalcontact/mark_tag").len(),
        0
    );
    f.app.stop().await;
}

async fn a_40068_for_a_tag_wecom_still_lists_is_retried(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let admin = f.app.api("admin", None).await;
    // WeCom refuses a tag its own listing shows (its caches lag): we look, and try again.
    f.app.wecom().inject_fault(Fault {
        api: Some("externalcontact/mark_tag".to_owned()),
        kind: FaultKind::Errcode(40068),
        times: 1,
    });
    let (status, _) = admin
        .put(&tags_path(&f.ext, user), json!({"add": [f.tags[0]]}))
        .await;
    assert_eq!(status, 202);
    wait_outbox_idle(&f.app.db).await;
    assert_eq!(wecom_tags(&f, user), vec![f.tags[0].clone()]);
    let done = outbox(&f, "done").await;
    assert_eq!(done[0].attempts, 2, "{done:?}");
    assert!(
        done[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("40068"))
    );
    f.app.stop().await;
}

async fn concurrent_edits_by_two_salespeople_are_all_delivered(backend: Backend) {
    let f = fixture(backend).await;
    let (a, b) = (f.staff[0].clone(), f.staff[1].clone());
    assert!(f.app.wecom().add_follow(CORP, &b, &f.ext, None));
    f.app.settle().await;
    let (sales_a, sales_b) = (
        f.app.api("sales", Some(&a)).await,
        f.app.api("sales", Some(&b)).await,
    );
    let admin = f.app.api("admin", None).await;
    let mut edits = Vec::new();
    for round in 0..6 {
        let tag = f.tags[round % 3].clone();
        for (api, user) in [(&sales_a, &a), (&sales_b, &b), (&admin, &a)] {
            let (api, path, tag) = (api.clone(), tags_path(&f.ext, user), tag.clone());
            let body = if round % 2 == 0 {
                json!({"add": [tag]})
            } else {
                json!({"remove": [tag]})
            };
            edits.push(tokio::spawn(async move { api.put(&path, body).await }));
        }
    }
    for e in edits {
        let (status, body) = e.await.unwrap();
        assert_eq!(status, 202, "{body}");
    }
    wait_outbox_idle(&f.app.db).await;
    for user in [&a, &b] {
        let mut ours = our_tags(&f, user).await;
        ours.sort();
        assert_eq!(
            ours,
            wecom_tags(&f, user),
            "relation of {user}: ours and WeCom's agree"
        );
    }
    assert!(outbox(&f, "dead").await.is_empty());
    let delivered = outbox(&f, "done").await.len();
    assert_eq!(
        f.app.wecom().writes_for("externalcontact/mark_tag").len(),
        delivered,
        "each item delivered exactly once"
    );
    f.app.stop().await;
}

async fn pending_edits_survive_a_fresh_snapshot_from_wecom(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let sales = f.app.api("sales", Some(user)).await;
    f.app.wecom().inject_fault(Fault {
        api: Some("externalcontact/mark_tag".to_owned()),
        kind: FaultKind::Http(502),
        times: 8,
    });
    let (status, _) = sales
        .put(&tags_path(&f.ext, user), json!({"add": [f.tags[0]]}))
        .await;
    assert_eq!(status, 202);
    // Meanwhile the salesperson edits the remark in the WeCom client: WeCom calls back, we fetch
    // the relation (without our tag, not delivered yet) and apply it.
    assert!(f.app.wecom().edit_relation(
        CORP,
        user,
        &f.ext,
        RelationEdit {
            remark: Some("王总-采购".to_owned()),
            ..RelationEdit::default()
        }
    ));
    f.app.settle().await;
    let relation = scrm::domain::customers::get_relation(
        &f.app.db,
        crate::common::Rel::in_corp(CORP, user, &f.ext).key(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(relation.remark, "王总-采购");
    assert_eq!(
        relation.tags(),
        vec![f.tags[0].clone()],
        "our pending tag is kept"
    );
    wait_outbox_idle(&f.app.db).await;
    assert_eq!(wecom_tags(&f, user), vec![f.tags[0].clone()]);
    f.app.stop().await;
}

async fn remark_and_description_go_out_by_remark(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let sales = f.app.api("sales", Some(user)).await;
    let path = format!("/api/v1/customers/{}/relations/{user}", f.ext);
    let (status, body) = sales
        .patch(
            &path,
            json!({"remark": "王总", "description": "喜欢晚上沟通"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    wait_outbox_idle(&f.app.db).await;
    let relation = f.app.wecom().relation(CORP, user, &f.ext).unwrap();
    assert_eq!(
        (relation.remark.as_str(), relation.description.as_str()),
        ("王总", "喜欢晚上沟通")
    );
    let (_, record) = sales.get(&format!("/api/v1/customers/{}", f.ext)).await;
    assert_eq!(record["relations"][0]["description"], json!("喜欢晚上沟通"));
    f.app.stop().await;
}

async fn the_tag_library_is_edited_both_ways(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let admin = f.app.api("admin", None).await;
    let (status, body) = admin
        .post("/api/v1/tag-groups", json!({"name": "意向", "order": 5, "tags": [{"name": "高"}, {"name": "低", "order": 1}]}))
        .await;
    assert_eq!(status, 202, "{body}");
    wait_outbox_idle(&f.app.db).await;
    let (_, library) = admin.get("/api/v1/tag-groups").await;
    let group = library["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == json!("意向"))
        .unwrap_or_else(|| panic!("{library}"))
        .clone();
    let high = group["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == json!("高"))
        .unwrap()["tag_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(library["pending"], json!([]));
    // Use it, rename it, then delete it: the customer loses it here and in WeCom.
    let (status, _) = admin
        .put(&tags_path(&f.ext, user), json!({"add": [high]}))
        .await;
    assert_eq!(status, 202);
    let (status, _) = admin
        .patch(&format!("/api/v1/tags/{high}"), json!({"name": "很高"}))
        .await;
    assert_eq!(status, 202);
    wait_outbox_idle(&f.app.db).await;
    assert_eq!(wecom_tags(&f, user), vec![high.clone()]);
    let (status, _) = admin.delete(&format!("/api/v1/tags/{high}")).await;
    assert_eq!(status, 202);
    assert!(our_tags(&f, user).await.is_empty(), "gone here at once");
    wait_outbox_idle(&f.app.db).await;
    assert!(wecom_tags(&f, user).is_empty(), "and in WeCom");
    assert_eq!(
        f.app.wecom().writes_for("externalcontact/edit_corp_tag")[0].body["name"],
        json!("很高")
    );
    assert_eq!(admin.delete(&format!("/api/v1/tags/{high}")).await.0, 404);
    // A tag created in the WeCom console arrives by callback.
    let console = f.app.wecom().create_tag(CORP, "来源", "官网");
    f.app.settle().await;
    assert!(
        scrm::domain::tags::get_tag(&f.app.db, CORP, &console)
            .await
            .unwrap()
            .is_some()
    );
    f.app.stop().await;
}

async fn a_repeated_add_corp_tag_does_not_create_twice(backend: Backend) {
    let f = fixture(backend).await;
    let admin = f.app.api("admin", None).await;
    // The first call times out on our side (3 s) but WeCom creates the tags a little later.
    f.app.wecom().inject_fault(Fault {
        api: Some("externalcontact/add_corp_tag".to_owned()),
        kind: FaultKind::Latency(Duration::from_millis(3200)),
        times: 1,
    });
    let (status, _) = admin
        .post(
            "/api/v1/tag-groups",
            json!({"name": "行业", "tags": [{"name": "制造"}]}),
        )
        .await;
    assert_eq!(status, 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while scrm::pipeline::outbox::stats(&f.app.db, None, 0)
        .await
        .unwrap()
        .pending
        > 0
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let groups: Vec<String> = scrm::domain::tags::library(&f.app.db, CORP)
        .await
        .unwrap()
        .into_iter()
        .filter(|g| g.name == "行业")
        .flat_map(|g| g.tags.into_iter().map(|t| t.name))
        .collect();
    assert_eq!(groups, vec!["制造".to_owned()]);
    assert_eq!(
        f.app
            .wecom()
            .writes_for("externalcontact/add_corp_tag")
            .len(),
        1,
        "WeCom created the tags once"
    );
    let done = outbox(&f, "done").await;
    assert_eq!(done[0].attempts, 2, "{done:?}");
    f.app.stop().await;
}

async fn auto_tagging_rules_tag_by_channel_group_and_keyword_once(backend: Backend) {
    let f = fixture(backend).await;
    let user = f.staff[0].clone();
    let admin = f.app.api("admin", None).await;
    let (status, personal) = admin
        .post(
            "/api/v1/personal-tags",
            json!({"name": "展会线索", "color": "#ff8800"}),
        )
        .await;
    assert_eq!(status, 201, "{personal}");
    let (status, rule) = admin
        .post(
            "/api/v1/auto-tag-rules",
            json!({"name": "展会渠道", "trigger": "channel", "patterns": ["expo*"], "corp_tag_ids": [f.tags[2]], "personal_tag_ids": [personal["id"]]}),
        )
        .await;
    assert_eq!(status, 201, "{rule}");
    let rule_id = rule["id"].as_i64().unwrap();
    let ext = f.app.wecom().add_customer(
        CORP,
        &user,
        NewCustomer {
            name: "李经理".to_owned(),
            state: Some("expo2026".to_owned()),
            ..NewCustomer::default()
        },
    );
    f.app.settle().await;
    wait_outbox_idle(&f.app.db).await;
    assert_eq!(
        f.app.wecom().relation(CORP, &user, &ext).unwrap().tag_ids,
        vec![f.tags[2].clone()]
    );
    let (_, record) = admin.get(&format!("/api/v1/customers/{ext}")).await;
    assert_eq!(
        record["relations"][0]["tags"][0]["rule_id"],
        json!(rule_id),
        "{record}"
    );
    assert_eq!(
        record["relations"][0]["tags"][0]["set_by"],
        json!(format!("rule:{rule_id}"))
    );
    assert_eq!(
        record["personal_tags"][0]["rule_id"],
        json!(rule_id),
        "{record}"
    );
    // A replayed add event applies the rule again: nothing new goes to WeCom.
    let writes = f.app.wecom().writes_for("externalcontact/mark_tag").len();
    scrm::pipeline::inbox::replay(
        &f.app.db,
        &scrm::pipeline::inbox::ReplayFilter {
            corp_id: Some(CORP.to_owned()),
            ..Default::default()
        },
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    f.app.settle().await;
    wait_outbox_idle(&f.app.db).await;
    assert_eq!(
        f.app.wecom().writes_for("externalcontact/mark_tag").len(),
        writes
    );

    // Joining a group chat.
    let (status, _) = admin
        .post("/api/v1/auto-tag-rules", json!({"name": "VIP 群", "trigger": "group_join", "patterns": ["PLACEHOLDER"], "corp_tag_ids": [f.tags[0]]}))
        .await;
    assert_eq!(status, 201);
    let chat = f.app.wecom().create_group_chat(CORP, &user, vec![]);
    scrm::on_db!(&f.app.db, |pool| sqlx::query(
        "UPDATE auto_tag_rule SET patterns = $1 WHERE name = 'VIP 群'"
    )
    .bind(json!([chat]).to_string())
    .execute(pool)
    .await
    .map(|_| ()))
    .unwrap();
    f.app.settle().await;
    assert!(
        f.app
            .wecom()
            .add_chat_members(CORP, &chat, vec![f.ext.clone()])
    );
    f.app.settle().await;
    wait_outbox_idle(&f.app.db).await;
    assert_eq!(wecom_tags(&f, &user), vec![f.tags[0].clone()]);

    // Keywords in archived chat (the chat-archive feature calls this hook).
    let (status, _) = admin
        .post("/api/v1/auto-tag-rules", json!({"name": "问报价", "trigger": "keyword", "patterns": ["报价"], "corp_tag_ids": [f.tags[1]]}))
        .await;
    assert_eq!(status, 201);
    let fired = scrm::domain::customers::record::on_customer_message(
        &f.app.db,
        crate::common::Rel::in_corp(CORP, &user, &f.ext).key(),
        "麻烦发一下报价单",
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(fired.len(), 1);
    let none = scrm::domain::customers::record::on_customer_message(
        &f.app.db,
        crate::common::Rel::in_corp(CORP, &user, &f.ext).key(),
        "好的谢谢",
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    assert!(none.is_empty());
    wait_outbox_idle(&f.app.db).await;
    let mut expected = vec![f.tags[0].clone(), f.tags[1].clone()];
    expected.sort();
    assert_eq!(wecom_tags(&f, &user), expected);
    f.app.stop().await;
}

async fn every_documented_endpoint_requires_credentials(backend: Backend) {
    let f = fixture(backend).await;
    let document: Value = reqwest::get(format!("{}/api/openapi.json", f.app.server.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["openapi"], json!("3.1.0"));
    let paths = document["paths"].as_object().unwrap();
    for expected in [
        "/api/v1/customers",
        "/api/v1/customers/{external_user_id}",
        "/api/v1/customers/{external_user_id}/relations/{user_id}/tags",
        "/api/v1/tag-groups",
        "/api/v1/outbox",
        "/api/v1/jobs",
    ] {
        assert!(paths.contains_key(expected), "{expected} not documented");
    }
    let nobody = Api::new(&f.app.server.base_url, "");
    let mut checked = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            assert!(op["responses"]["401"].is_object(), "{method} {path}");
            let concrete = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "1" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (method != reqwest::Method::GET && method != reqwest::Method::DELETE)
                .then(|| json!({}));
            let (status, answer) = nobody.call(method.clone(), &concrete, body).await;
            assert_eq!(status, 401, "{method} {concrete}: {answer}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations documented");
    // An unknown API path is a JSON 404.
    let admin = f.app.api("admin", None).await;
    let (status, body) = admin.get("/api/v1/nothing-here").await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));
    f.app.stop().await;
}

async fn an_outage_of_a_minute_loses_and_doubles_nothing(backend: Backend) {
    let options = Options {
        // Retried every few seconds for the whole minute, never given up on.
        extra_config: "[outbox]\nbackoff_max_secs = 4\nmax_attempts = 100\n".to_owned(),
        ..Options::default()
    };
    let f = fixture_with(backend, options).await;
    let user = &f.staff[0];
    let sales = f.app.api("sales", Some(user)).await;
    f.app.wecom().set_down(true);
    let mut items = 0;
    for i in 0..6 {
        let body = if i % 2 == 0 {
            json!({"add": [f.tags[i % 3]]})
        } else {
            json!({"remove": [f.tags[(i - 1) % 3]], "add": [f.tags[i % 3]]})
        };
        let (status, answer) = sales.put(&tags_path(&f.ext, user), body).await;
        assert_eq!(status, 202, "{answer}");
        items += usize::from(answer["outbox_id"].is_i64());
    }
    assert!(items >= 4, "{items} real changes");
    let expected = {
        let mut t = our_tags(&f, user).await;
        t.sort();
        t
    };
    tokio::time::sleep(Duration::from_secs(60)).await;
    let waiting = outbox(&f, "pending").await;
    assert_eq!(waiting.len(), items, "nothing given up during the outage");
    assert!(
        waiting
            .iter()
            .any(|i| i.last_error.as_deref().is_some_and(|e| e.contains("503"))),
        "{waiting:?}"
    );
    f.app.wecom().set_down(false);
    wait_outbox_idle(&f.app.db).await;
    assert_eq!(wecom_tags(&f, user), expected);
    assert_eq!(
        f.app.wecom().writes_for("externalcontact/mark_tag").len(),
        items,
        "each item reached WeCom once"
    );
    assert!(outbox(&f, "dead").await.is_empty());
    f.app.stop().await;
}

async fn pending_items_are_delivered_after_kill_9(backend: Backend) {
    // A lease held by the killed process runs out after 5 s (it may have died mid-call).
    let options = Options {
        extra_config: "[outbox]\nlease_secs = 5\n".to_owned(),
        ..Options::default()
    };
    let f = fixture_with(backend, options).await;
    let user = f.staff[0].clone();
    // A second server process on the same database: the real binary, killed with -9.
    let port = common::free_port();
    let config_path = f.app.test_db.dir.path().join("kill.toml");
    std::fs::write(
        &config_path,
        f.app
            .config_text
            .replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrm"))
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .env("SCRM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(common::wait_ready(port).await, "scrm did not start");
    // Our in-process server stops, so only the child can deliver.
    let mut f = f;
    f.app.server.stop().await;
    let (_, key) = scrm::auth::create_key(
        &f.app.db,
        &crate::common::corp(CORP),
        scrm::auth::Role::Sales,
        Some(&crate::common::user(&user)),
        "t",
        0,
    )
    .await
    .unwrap();
    let api = Api::new(&format!("http://127.0.0.1:{port}"), &key);
    f.app.wecom().set_down(true);
    let (status, _) = api
        .put(
            &tags_path(&f.ext, &user),
            json!({"add": [f.tags[0], f.tags[1]]}),
        )
        .await;
    assert_eq!(status, 202);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(outbox(&f, "pending").await.len(), 1);
    f.app.wecom().set_down(false);
    let mut restarted = emulated::Instance::start(&f.app.config_text).await;
    wait_outbox_idle(&f.app.db).await;
    assert_eq!(wecom_tags(&f, &user), {
        let mut t = vec![f.tags[0].clone(), f.tags[1].clone()];
        t.sort();
        t
    });
    assert_eq!(
        f.app.wecom().writes_for("externalcontact/mark_tag").len(),
        1
    );
    restarted.stop().await;
    f.app.stop().await;
}
