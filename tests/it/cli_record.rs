//! `scrm apikey` and `scrm outbox`, run as real processes against a served, emulated corp: a key
//! created on the command line works (within its scope) until revoked; dead letters are listed,
//! shown with their reason and retried to delivery.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common;
use std::path::PathBuf;

use crate::common::{Backend, CORP, scrm};
use crate::emulated::{Api, EmulatedApp, eventually, wait_outbox_idle};
use serde_json::{Value, json};
use wecom_sdk::testkit::{Fault, FaultKind, NewCustomer, SeedSpec};

both_backends!(
    apikey_commands_create_scoped_keys_list_them_and_revoke,
    outbox_commands_list_show_and_retry_dead_letters,
);

struct Fixture {
    app: EmulatedApp,
    config: PathBuf,
    staff: Vec<String>,
    /// One customer of each of the first two staff members.
    customers: Vec<String>,
    tag: String,
}

async fn fixture(backend: Backend) -> Fixture {
    let app = EmulatedApp::spawn(backend).await;
    let seeded = app.wecom().seed(
        CORP,
        &SeedSpec {
            staff: 2,
            departments: 1,
            customers: 0,
            group_chats: 0,
            rng_seed: 5,
            ..SeedSpec::default()
        },
    );
    let tag = app.wecom().create_tag(CORP, "客户等级", "重要客户");
    let customers = seeded
        .staff
        .iter()
        .map(|user| {
            app.wecom().add_customer(
                CORP,
                user,
                NewCustomer {
                    name: format!("{user} 的客户"),
                    ..NewCustomer::default()
                },
            )
        })
        .collect();
    app.settle().await;
    let config = app.test_db.dir.path().join("cli.toml");
    std::fs::write(&config, &app.config_text).unwrap();
    Fixture {
        app,
        config,
        staff: seeded.staff,
        customers,
        tag,
    }
}

impl Fixture {
    async fn scrm(&self, args: &[&str]) -> common::Output {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        scrm(self.app.test_db.dir.path(), &all).await
    }
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

async fn apikey_commands_create_scoped_keys_list_them_and_revoke(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];

    // A sales key needs its staff member; a bad role is refused. Neither creates a key.
    let no_staff = f.scrm(&["apikey", "create", "--role", "sales"]).await;
    assert_ne!(no_staff.code, 0);
    assert!(no_staff.stderr.contains("--staff"), "{}", no_staff.stderr);
    let bad_role = f.scrm(&["apikey", "create", "--role", "boss"]).await;
    assert_ne!(bad_role.code, 0);
    assert!(
        bad_role.stderr.contains("admin, compliance or sales"),
        "{}",
        bad_role.stderr
    );
    let wrong_corp = f
        .scrm(&["apikey", "create", "--role", "admin", "--corp", "wwnobody"])
        .await;
    assert_ne!(wrong_corp.code, 0);
    assert!(
        wrong_corp.stderr.contains("wwnobody"),
        "{}",
        wrong_corp.stderr
    );
    let none = f.scrm(&["apikey", "list", "--json"]).await;
    assert_eq!(
        (none.code, none.stdout.as_str()),
        (0, ""),
        "{}",
        none.stderr
    );

    // Created: printed once (stdout is the key alone), stored hashed.
    let created = f
        .scrm(&[
            "apikey", "create", "--role", "sales", "--staff", user, "--name", "crm-sync",
        ])
        .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let key = created.stdout.trim().to_owned();
    assert!(key.starts_with("scrm_") && key.len() > 40, "{key}");
    assert!(
        created.stderr.contains("shown only now"),
        "{}",
        created.stderr
    );

    let sales = Api::new(&f.app.server.base_url, &key);
    let (status, list) = sales.get("/api/v1/customers").await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["external_user_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![f.customers[0].as_str()],
        "only its staff member's customers"
    );
    let (status, _) = sales
        .get(&format!("/api/v1/customers/{}", f.customers[1]))
        .await;
    assert_eq!(status, 403);

    // The key acts as its staff member: a tag edit records them.
    let (status, body) = sales
        .put(
            &format!("/api/v1/customers/{}/relations/{user}/tags", f.customers[0]),
            json!({"add": [f.tag]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    wait_outbox_idle(&f.app.db).await;
    let done = scrm::pipeline::outbox::list(&f.app.db, &Default::default())
        .await
        .unwrap();
    assert_eq!(done[0].actor, *user);

    let listed = f.scrm(&["apikey", "list", "--json"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let keys = json_lines(&listed.stdout);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["role"], json!("sales"));
    assert_eq!(keys[0]["staff_user_id"], json!(user));
    assert_eq!(keys[0]["name"], json!("crm-sync"));
    assert!(keys[0]["last_used_at_ms"].is_i64(), "{}", keys[0]);
    assert!(
        !listed.stdout.contains(&key[20..]),
        "the secret is never listed"
    );
    let id = keys[0]["id"].as_i64().unwrap().to_string();
    let table = f.scrm(&["apikey", "list"]).await;
    assert!(
        table.stdout.contains("crm-sync") && table.stdout.contains("active"),
        "{}",
        table.stdout
    );

    let revoked = f.scrm(&["apikey", "revoke", &id]).await;
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    let (status, body) = sales.get("/api/v1/customers").await;
    assert_eq!(status, 401, "{body}");
    let again = f.scrm(&["apikey", "revoke", &id]).await;
    assert_eq!(again.code, 0);
    assert!(again.stderr.contains("already revoked"), "{}", again.stderr);
    let missing = f.scrm(&["apikey", "revoke", "999999"]).await;
    assert_eq!(missing.code, 1);

    // An admin key without a staff member reaches every customer.
    let admin = f
        .scrm(&["apikey", "create", "--role", "admin", "--json"])
        .await;
    assert_eq!(admin.code, 0, "{}", admin.stderr);
    let admin: Value = serde_json::from_str(&admin.stdout).unwrap();
    let admin = Api::new(&f.app.server.base_url, admin["key"].as_str().unwrap());
    let (status, list) = admin.get("/api/v1/customers").await;
    assert_eq!(status, 200);
    assert_eq!(list["customers"].as_array().unwrap().len(), 2, "{list}");
    // Creation and revocation are audited.
    let db = &f.app.db;
    let audited: Vec<String> = scrm::on_db!(db, |pool| sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'apikey.%' ORDER BY id"
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(audited, ["apikey.create", "apikey.revoke", "apikey.create"]);
    f.app.stop().await;
}

async fn outbox_commands_list_show_and_retry_dead_letters(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let ext = &f.customers[0];
    let admin = f.app.api("admin", None).await;
    // WeCom refuses the first mark_tag as if the customer were gone: a dead letter at once.
    f.app.wecom().inject_fault(Fault {
        api: Some("externalcontact/mark_tag".to_owned()),
        kind: FaultKind::Errcode(84061),
        times: 1,
    });
    let (status, body) = admin
        .put(
            &format!("/api/v1/customers/{ext}/relations/{user}/tags"),
            json!({"add": [f.tag]}),
        )
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

    let stats = f.scrm(&["outbox", "stats", "--json"]).await;
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let stats: Value = serde_json::from_str(&stats.stdout).unwrap();
    assert_eq!(
        (stats["dead"].clone(), stats["pending"].clone()),
        (json!(1), json!(0)),
        "{stats}"
    );

    let dead = f
        .scrm(&["outbox", "list", "--state", "dead", "--json"])
        .await;
    assert_eq!(dead.code, 0, "{}", dead.stderr);
    let dead = json_lines(&dead.stdout);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["id"], json!(id));
    assert_eq!(dead[0]["kind"], json!("mark_tag"));
    assert_eq!(dead[0]["order_key"], json!(format!("customer:{ext}")));
    let table = f.scrm(&["outbox", "list"]).await;
    assert!(
        table.stdout.contains("mark_tag") && table.stdout.contains("84061"),
        "{}",
        table.stdout
    );

    let shown = f.scrm(&["outbox", "show", &id.to_string()]).await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        shown.stdout.contains("84061") && shown.stdout.contains(&f.tag),
        "{}",
        shown.stdout
    );
    assert_eq!(f.scrm(&["outbox", "show", "999999"]).await.code, 1);
    assert_eq!(
        f.scrm(&["outbox", "retry"]).await.code,
        2,
        "no id and no --all-dead"
    );

    // Retried: the running server delivers it (the fault is used up).
    let retried = f.scrm(&["outbox", "retry", &id.to_string()]).await;
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    assert!(retried.stdout.starts_with("1 item"), "{}", retried.stdout);
    wait_outbox_idle(&f.app.db).await;
    let item = scrm::pipeline::outbox::get(&f.app.db, id).await.unwrap();
    assert_eq!(item.state, "done", "{item:?}");
    assert_eq!(
        f.app.wecom().relation(CORP, user, ext).unwrap().tag_ids,
        vec![f.tag.clone()]
    );
    // What is not dead is not retried.
    let not_dead = f.scrm(&["outbox", "retry", &id.to_string()]).await;
    assert_eq!(not_dead.code, 1, "{}", not_dead.stdout);
    let all = f.scrm(&["outbox", "retry", "--all-dead"]).await;
    assert_eq!(
        (all.code, all.stdout.starts_with("0 item")),
        (0, true),
        "{}",
        all.stdout
    );
    f.app.stop().await;
}
