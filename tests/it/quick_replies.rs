//! Quick replies (话术库) through `/api/v1/quick-replies`: an admin manages folders and snippets,
//! everyone who reads customers reads the library, a salesperson's send counts one use; search
//! takes `%` and `_` literally and ignores case; bad input names the field and changes nothing;
//! another corp sees and touches nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common::{Backend, CORP, TestApp};
use crate::emulated::Api;
use scrm::auth::Role;
use scrm::domain::quick_replies as quick;
use scrm::platform::db::{Db, now_ms};
use serde_json::{Value, json};

both_backends!(
    an_admin_manages_folders_and_snippets,
    sales_reads_and_counts_sends_but_manages_nothing,
    bad_input_names_the_field_and_changes_nothing,
    search_takes_wildcards_literally_and_ignores_case,
    the_corp_limits_hold,
    another_corp_sees_and_touches_nothing,
    quick_replies_are_in_the_openapi_document,
);

const FOLDERS: &str = "/api/v1/quick-replies/folders";
const SNIPPETS: &str = "/api/v1/quick-replies/snippets";

/// An API client with a new key of `role` in `corp`, acting as `staff`.
async fn api(app: &TestApp, corp: &str, role: Role, staff: Option<&str>) -> Api {
    let staff = staff.map(crate::common::user);
    let (_, key) = scrm::auth::create_key(
        &app.db,
        &crate::common::corp(corp),
        role,
        staff.as_ref(),
        "quick replies",
        now_ms(),
    )
    .await
    .unwrap();
    Api::new(&app.base_url, &key)
}

/// The library as the API answers it (`q` already URL-encoded).
async fn library(api: &Api, q: Option<&str>) -> Value {
    let path = match q {
        Some(q) => format!("/api/v1/quick-replies?q={q}"),
        None => "/api/v1/quick-replies".to_owned(),
    };
    let (status, body) = api.get(&path).await;
    assert_eq!(status, 200, "{body}");
    body["folders"].clone()
}

/// `folder name: [snippet titles]`, in display order.
fn outline(folders: &Value) -> Vec<(String, Vec<String>)> {
    folders
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let titles = f["snippets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["title"].as_str().unwrap().to_owned())
                .collect();
            (f["name"].as_str().unwrap().to_owned(), titles)
        })
        .collect()
}

fn names(outline: &[(String, Vec<String>)]) -> Vec<&str> {
    outline.iter().map(|(n, _)| n.as_str()).collect()
}

async fn create_folder(api: &Api, name: &str) -> i64 {
    let (status, folder) = api.post(FOLDERS, json!({"name": name})).await;
    assert_eq!(status, 201, "{folder}");
    folder["id"].as_i64().unwrap()
}

async fn create_snippet(api: &Api, folder_id: i64, title: &str, body: &str) -> i64 {
    let (status, snippet) = api
        .post(
            SNIPPETS,
            json!({"folder_id": folder_id, "title": title, "body": body}),
        )
        .await;
    assert_eq!(status, 201, "{snippet}");
    snippet["id"].as_i64().unwrap()
}

async fn scalar(db: &Db, sql: &'static str) -> i64 {
    scrm::on_db!(db, |pool| sqlx::query_scalar(sql).fetch_one(pool).await).unwrap()
}

/// Rows and uses of the quick-reply tables and the audit log: a refused request changes none.
async fn footprint(db: &Db) -> [i64; 4] {
    [
        scalar(db, "SELECT COUNT(*) FROM quick_reply_folder").await,
        scalar(db, "SELECT COUNT(*) FROM quick_reply").await,
        scalar(
            db,
            "SELECT CAST(COALESCE(SUM(use_count), 0) AS BIGINT) FROM quick_reply",
        )
        .await,
        scalar(db, "SELECT COUNT(*) FROM audit_log").await,
    ]
}

/// The actors of the audit entries of `action`, oldest first.
async fn audit_actors(db: &Db, action: &str) -> Vec<String> {
    scrm::on_db!(db, |pool| sqlx::query_scalar(
        "SELECT actor FROM audit_log WHERE action = $1 ORDER BY id"
    )
    .bind(action)
    .fetch_all(pool)
    .await)
    .unwrap()
}

async fn an_admin_manages_folders_and_snippets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = api(&app, CORP, Role::Admin, None).await;

    // Folders without a position go last, in the order they were made.
    let (status, greeting) = admin.post(FOLDERS, json!({"name": " 开场白 "})).await;
    assert_eq!(status, 201, "{greeting}");
    assert_eq!(greeting["name"], json!("开场白"), "names are trimmed");
    assert_eq!(greeting["position"], json!(0));
    let greeting = greeting["id"].as_i64().unwrap();
    let pricing = create_folder(&admin, "报价").await;
    let after_sale = create_folder(&admin, "售后").await;
    assert_eq!(
        names(&outline(&library(&admin, None).await)),
        ["开场白", "报价", "售后"]
    );

    let (status, hello) = admin
        .post(
            SNIPPETS,
            json!({"folder_id": greeting, "title": "问候", "body": "您好，我是您的专属顾问。\n有问题随时找我。"}),
        )
        .await;
    assert_eq!(status, 201, "{hello}");
    assert_eq!(hello["use_count"], json!(0));
    assert_eq!(hello["last_used_at_ms"], Value::Null);
    assert_eq!(
        hello["body"],
        json!("您好，我是您的专属顾问。\n有问题随时找我。")
    );
    let hello = hello["id"].as_i64().unwrap();
    let intro = create_snippet(&admin, greeting, "自我介绍", "我负责华东区的客户。").await;
    let quote = create_snippet(&admin, pricing, "报价单", "报价单已发您邮箱，请查收。").await;
    // An explicit position: 0 puts it before 自我介绍 (1) and, tied with 问候 (0), after it by id.
    let (status, first) = admin
        .post(
            SNIPPETS,
            json!({"folder_id": greeting, "title": "早安", "body": "早上好！", "position": 0}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    let folders = library(&admin, None).await;
    assert_eq!(
        outline(&folders),
        [
            (
                "开场白".to_owned(),
                vec!["问候".to_owned(), "早安".to_owned(), "自我介绍".to_owned()]
            ),
            ("报价".to_owned(), vec!["报价单".to_owned()]),
            ("售后".to_owned(), vec![]),
        ]
    );
    assert_eq!(folders[0]["snippets"][0]["folder_id"], json!(greeting));

    // Rename and reorder a folder.
    let (status, renamed) = admin
        .patch(
            &format!("{FOLDERS}/{after_sale}"),
            json!({"name": "售后服务", "position": 0}),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    let (status, moved) = admin
        .patch(&format!("{FOLDERS}/{greeting}"), json!({"position": 5}))
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        (moved["name"].clone(), moved["position"].clone()),
        (json!("开场白"), json!(5))
    );
    assert_eq!(
        names(&outline(&library(&admin, None).await)),
        ["售后服务", "报价", "开场白"],
        "positions 0, 1, 5"
    );

    // Edit a snippet, then move it to another folder: without a position it goes last there.
    let (status, edited) = admin
        .patch(
            &format!("{SNIPPETS}/{hello}"),
            json!({"title": "问候语", "body": "您好！"}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(
        (
            edited["title"].clone(),
            edited["body"].clone(),
            edited["folder_id"].clone()
        ),
        (json!("问候语"), json!("您好！"), json!(greeting))
    );
    let (status, moved) = admin
        .patch(
            &format!("{SNIPPETS}/{intro}"),
            json!({"folder_id": pricing}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["folder_id"], json!(pricing));
    assert_eq!(moved["position"], json!(1), "after 报价单 (position 0)");
    let (status, _) = admin
        .patch(&format!("{SNIPPETS}/{quote}"), json!({"position": 9}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        outline(&library(&admin, None).await),
        [
            ("售后服务".to_owned(), vec![]),
            (
                "报价".to_owned(),
                vec!["自我介绍".to_owned(), "报价单".to_owned()]
            ),
            (
                "开场白".to_owned(),
                vec!["问候语".to_owned(), "早安".to_owned()]
            ),
        ]
    );
    let stored = quick::get_snippet(&app.db, &crate::common::corp(CORP), hello)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.title.as_str(), stored.body.as_str()),
        ("问候语", "您好！")
    );

    // Delete a snippet; a folder with snippets only with cascade=true.
    let (status, body) = admin.delete(&format!("{SNIPPETS}/{quote}")).await;
    assert_eq!((status, body), (200, json!({"deleted": quote})));
    let (status, body) = admin.delete(&format!("{SNIPPETS}/{quote}")).await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));
    let (status, body) = admin.delete(&format!("{FOLDERS}/{pricing}")).await;
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("conflict")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("还有 1 条话术"),
        "{body}"
    );
    assert_eq!(library(&admin, None).await.as_array().unwrap().len(), 3);
    let (status, body) = admin
        .delete(&format!("{FOLDERS}/{pricing}?cascade=false"))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = admin
        .delete(&format!("{FOLDERS}/{pricing}?cascade=true"))
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"deleted": pricing, "snippets_deleted": 1}))
    );
    let (status, body) = admin.delete(&format!("{FOLDERS}/{after_sale}")).await;
    assert_eq!(
        (status, body),
        (200, json!({"deleted": after_sale, "snippets_deleted": 0})),
        "an empty folder needs no cascade"
    );
    assert_eq!(
        outline(&library(&admin, None).await),
        [(
            "开场白".to_owned(),
            vec!["问候语".to_owned(), "早安".to_owned()]
        )]
    );
    assert_eq!(
        quick::get_snippet(&app.db, &crate::common::corp(CORP), intro)
            .await
            .unwrap(),
        None,
        "the cascade took the moved snippet with it"
    );
    assert_eq!(scalar(&app.db, "SELECT COUNT(*) FROM quick_reply").await, 2);

    // Every change is audited with the key that made it (refusals are not).
    for (action, n) in [
        ("quick_reply_folder.create", 3),
        ("quick_reply_folder.update", 2),
        ("quick_reply_folder.delete", 2),
        ("quick_reply.create", 4),
        ("quick_reply.update", 3),
        ("quick_reply.delete", 1),
    ] {
        let actors = audit_actors(&app.db, action).await;
        assert_eq!(actors.len(), n, "{action}: {actors:?}");
        assert!(
            actors.iter().all(|a| a.starts_with("apikey:")),
            "{action}: {actors:?}"
        );
    }
    app.stop().await;
}

async fn sales_reads_and_counts_sends_but_manages_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = api(&app, CORP, Role::Admin, None).await;
    let sales = api(&app, CORP, Role::Sales, Some("lisi")).await;
    let compliance = api(&app, CORP, Role::Compliance, None).await;
    let folder = create_folder(&admin, "开场白").await;
    let snippet = create_snippet(&admin, folder, "问候", "您好！").await;

    // Reading: everyone who reads customers.
    for reader in [&sales, &compliance] {
        assert_eq!(
            outline(&library(reader, None).await),
            [("开场白".to_owned(), vec!["问候".to_owned()])]
        );
    }

    // Managing: admins only, refused before anything changes.
    let before = footprint(&app.db).await;
    for who in [&sales, &compliance] {
        for (method, path, body) in [
            ("POST", FOLDERS.to_owned(), json!({"name": "新分组"})),
            (
                "PATCH",
                format!("{FOLDERS}/{folder}"),
                json!({"name": "改名"}),
            ),
            (
                "DELETE",
                format!("{FOLDERS}/{folder}?cascade=true"),
                Value::Null,
            ),
            (
                "POST",
                SNIPPETS.to_owned(),
                json!({"folder_id": folder, "title": "t", "body": "b"}),
            ),
            (
                "PATCH",
                format!("{SNIPPETS}/{snippet}"),
                json!({"body": "改"}),
            ),
            ("DELETE", format!("{SNIPPETS}/{snippet}"), Value::Null),
        ] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let body = (!body.is_null()).then_some(body);
            let (status, answer) = who.call(method.clone(), &path, body).await;
            assert_eq!(
                (status, answer["code"].clone()),
                (403, json!("forbidden")),
                "{method} {path}"
            );
        }
    }
    // Compliance sends nothing into chats.
    let (status, _) = compliance
        .post(&format!("{SNIPPETS}/{snippet}/uses"), json!({}))
        .await;
    assert_eq!(status, 403);
    assert_eq!(footprint(&app.db).await, before, "refusals changed nothing");

    // A salesperson's sends count, one each, with the time of the last.
    let t0 = now_ms();
    let (status, used) = sales
        .post(&format!("{SNIPPETS}/{snippet}/uses"), json!({}))
        .await;
    assert_eq!(status, 200, "{used}");
    assert_eq!(used["use_count"], json!(1));
    let last = used["last_used_at_ms"].as_i64().unwrap();
    assert!(last >= t0 && last <= now_ms(), "{last}");
    let (_, used) = sales
        .post(&format!("{SNIPPETS}/{snippet}/uses"), json!({}))
        .await;
    assert_eq!(used["use_count"], json!(2));
    // Sends at once are all counted.
    let sends = (0..10).map(|_| {
        let sales = sales.clone();
        async move {
            sales
                .post(&format!("{SNIPPETS}/{snippet}/uses"), json!({}))
                .await
                .0
        }
    });
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let folders = library(&sales, None).await;
    assert_eq!(folders[0]["snippets"][0]["use_count"], json!(12));
    assert_eq!(
        audit_actors(&app.db, "quick_reply.use").await,
        vec!["lisi".to_owned(); 12],
        "each send is audited for the salesperson"
    );
    // An edit does not reset the count.
    let (status, edited) = admin
        .patch(
            &format!("{SNIPPETS}/{snippet}"),
            json!({"body": "您好呀！"}),
        )
        .await;
    assert_eq!((status, edited["use_count"].clone()), (200, json!(12)));

    // No such snippet: 404, nothing counted. A key without a staff member has nobody to count for.
    let (status, body) = sales
        .post(&format!("{SNIPPETS}/{}/uses", snippet + 1000), json!({}))
        .await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));
    let (status, body) = admin
        .post(&format!("{SNIPPETS}/{snippet}/uses"), json!({}))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("staff_user_id"))
    );

    // The sidebar calls the domain directly: the same count, false for an unknown id.
    let corp = crate::common::corp(CORP);
    let user = crate::common::user("wangwu");
    let later = now_ms() + 60_000;
    assert!(
        quick::record_use(&app.db, &corp, snippet, &user, later)
            .await
            .unwrap()
    );
    assert!(
        !quick::record_use(&app.db, &corp, snippet + 1000, &user, later)
            .await
            .unwrap()
    );
    // A send stamped earlier (another instance's clock) counts but does not move the time back.
    assert!(
        quick::record_use(&app.db, &corp, snippet, &user, t0 - 60_000)
            .await
            .unwrap()
    );
    let stored = quick::get_snippet(&app.db, &corp, snippet)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.use_count, stored.last_used_at_ms),
        (14, Some(later))
    );
    assert_eq!(footprint(&app.db).await[2], 14);
    app.stop().await;
}

async fn bad_input_names_the_field_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = api(&app, CORP, Role::Admin, None).await;
    let greeting = create_folder(&admin, "开场白").await;
    let pricing = create_folder(&admin, "报价").await;
    let hello = create_snippet(&admin, greeting, "问候", "您好！").await;
    create_snippet(&admin, pricing, "问候", "报价前先问候。").await; // same title, other folder
    let before = footprint(&app.db).await;

    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        // Folder names: 1–30 characters, one line, unique in the corp.
        (
            "POST",
            FOLDERS.to_owned(),
            json!({"name": "  "}),
            422,
            "name",
        ),
        (
            "POST",
            FOLDERS.to_owned(),
            json!({"name": "分".repeat(31)}),
            422,
            "name",
        ),
        (
            "POST",
            FOLDERS.to_owned(),
            json!({"name": "两\n行"}),
            422,
            "name",
        ),
        (
            "POST",
            FOLDERS.to_owned(),
            json!({"name": "开场白"}),
            409,
            "",
        ),
        (
            "POST",
            FOLDERS.to_owned(),
            json!({"name": " 报价 "}),
            409,
            "",
        ),
        (
            "POST",
            FOLDERS.to_owned(),
            json!({"name": "x", "position": -1}),
            422,
            "position",
        ),
        (
            "PATCH",
            format!("{FOLDERS}/{pricing}"),
            json!({"name": "开场白"}),
            409,
            "",
        ),
        (
            "PATCH",
            format!("{FOLDERS}/{pricing}"),
            json!({}),
            422,
            "name",
        ),
        (
            "PATCH",
            format!("{FOLDERS}/{pricing}"),
            json!({"position": 1_000_001}),
            422,
            "position",
        ),
        (
            "PATCH",
            format!("{FOLDERS}/999999"),
            json!({"name": "新"}),
            404,
            "",
        ),
        ("DELETE", format!("{FOLDERS}/999999"), Value::Null, 404, ""),
        // Snippets: title 1–40, body 1–1000 characters within 2048 bytes, a folder of the corp.
        (
            "POST",
            SNIPPETS.to_owned(),
            json!({"folder_id": greeting, "title": "", "body": "b"}),
            422,
            "title",
        ),
        (
            "POST",
            SNIPPETS.to_owned(),
            json!({"folder_id": greeting, "title": "t".repeat(41), "body": "b"}),
            422,
            "title",
        ),
        (
            "POST",
            SNIPPETS.to_owned(),
            json!({"folder_id": greeting, "title": "t", "body": " \n "}),
            422,
            "body",
        ),
        (
            "POST",
            SNIPPETS.to_owned(),
            json!({"folder_id": greeting, "title": "t", "body": "a".repeat(1001)}),
            422,
            "body",
        ),
        (
            "POST",
            SNIPPETS.to_owned(),
            json!({"folder_id": greeting, "title": "t", "body": "话".repeat(683)}),
            422,
            "body",
        ),
        (
            "POST",
            SNIPPETS.to_owned(),
            json!({"folder_id": 999_999, "title": "t", "body": "b"}),
            422,
            "folder_id",
        ),
        (
            "POST",
            SNIPPETS.to_owned(),
            json!({"folder_id": greeting, "title": "问候", "body": "重复"}),
            409,
            "",
        ),
        (
            "PATCH",
            format!("{SNIPPETS}/{hello}"),
            json!({"folder_id": pricing}),
            409,
            "",
        ),
        (
            "PATCH",
            format!("{SNIPPETS}/{hello}"),
            json!({"folder_id": 999_999}),
            422,
            "folder_id",
        ),
        (
            "PATCH",
            format!("{SNIPPETS}/{hello}"),
            json!({}),
            422,
            "title",
        ),
        (
            "PATCH",
            format!("{SNIPPETS}/{hello}"),
            json!({"body": "a".repeat(1001)}),
            422,
            "body",
        ),
        (
            "PATCH",
            format!("{SNIPPETS}/999999"),
            json!({"title": "新"}),
            404,
            "",
        ),
        ("DELETE", format!("{SNIPPETS}/999999"), Value::Null, 404, ""),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, status, field) in &cases {
        let http = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (got, answer) = admin
            .call(http, path, (!body.is_null()).then(|| body.clone()))
            .await;
        let message = answer["message"].as_str().unwrap_or("");
        let ok = got == *status
            && (field.is_empty() || answer["field"] == json!(field))
            && message
                .chars()
                .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
        if !ok {
            wrong.push(format!(
                "{method} {path} {body}: {got} {answer}, expected {status} {field}"
            ));
        }
    }
    // Malformed requests: 422 from the extractors (serde's words), naming the field when it can.
    let malformed: Vec<(&str, String, Value, &str)> = vec![
        (
            "POST",
            FOLDERS.to_owned(),
            json!({"name": "x", "colour": "red"}),
            "",
        ),
        ("POST", FOLDERS.to_owned(), json!({"name": 7}), "name"),
        (
            "POST",
            SNIPPETS.to_owned(),
            json!({"title": "t", "body": "b"}),
            "",
        ),
        (
            "POST",
            SNIPPETS.to_owned(),
            json!({"folder_id": "一", "title": "t", "body": "b"}),
            "folder_id",
        ),
        (
            "PATCH",
            format!("{FOLDERS}/abc"),
            json!({"name": "新"}),
            "path",
        ),
        (
            "DELETE",
            format!("{FOLDERS}/{greeting}?cascade=yes"),
            Value::Null,
            "query",
        ),
        (
            "GET",
            "/api/v1/quick-replies?query=x".to_owned(),
            Value::Null,
            "query",
        ),
    ];
    for (method, path, body, field) in &malformed {
        let http = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (got, answer) = admin
            .call(http, path, (!body.is_null()).then(|| body.clone()))
            .await;
        if got != 422 || (!field.is_empty() && answer["field"] != json!(field)) {
            wrong.push(format!(
                "{method} {path} {body}: {got} {answer}, expected 422 {field}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(footprint(&app.db).await, before, "refusals changed nothing");

    // The limits themselves are allowed: 30, 40, 1000 characters; 682 Chinese characters fit.
    create_folder(&admin, &"分".repeat(30)).await;
    create_snippet(&admin, greeting, &"标".repeat(40), &"a".repeat(1000)).await;
    create_snippet(&admin, greeting, "长话术", &"话".repeat(682)).await;
    app.stop().await;
}

async fn search_takes_wildcards_literally_and_ignores_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = api(&app, CORP, Role::Admin, None).await;
    let sales = api(&app, CORP, Role::Sales, Some("lisi")).await;
    let offers = create_folder(&admin, "优惠").await;
    let forms = create_folder(&admin, "表单").await;
    let english = create_folder(&admin, "English").await;
    create_folder(&admin, "空分组").await;
    create_snippet(&admin, offers, "满减", "本周满 100% 返现").await;
    create_snippet(&admin, offers, "折扣", "全场 100 元起 8 折").await;
    create_snippet(&admin, forms, "用户名", "请填写 user_name 一栏").await;
    create_snippet(&admin, forms, "账号", "请填写 username 一栏").await;
    create_snippet(&admin, forms, "路径", r"文件在 C:\报价\ 下").await;
    create_snippet(
        &admin,
        english,
        "Welcome Message",
        "Hello and WELCOME aboard",
    )
    .await;

    let found = |q: &'static str| {
        let sales = sales.clone();
        async move { outline(&library(&sales, Some(q)).await) }
    };
    let titles = |o: Vec<(String, Vec<String>)>| -> Vec<String> {
        o.into_iter().flat_map(|(_, t)| t).collect()
    };
    // `%` and `_` match themselves, not any text.
    assert_eq!(titles(found("%25").await), ["满减"]);
    assert_eq!(titles(found("100%25").await), ["满减"]);
    assert_eq!(titles(found("_").await), ["用户名"]);
    assert_eq!(titles(found("user_").await), ["用户名"]);
    assert_eq!(titles(found("user").await), ["用户名", "账号"]);
    assert_eq!(
        titles(found("%5C%E6%8A%A5").await),
        ["路径"],
        r"a backslash too"
    );
    // Case is ignored, in titles and bodies; the query is trimmed.
    assert_eq!(titles(found("welcome").await), ["Welcome Message"]);
    assert_eq!(titles(found("MESSAGE").await), ["Welcome Message"]);
    assert_eq!(titles(found("%20hElLo%20").await), ["Welcome Message"]);
    assert_eq!(titles(found("USERNAME").await), ["账号"]);
    // Chinese, in a title or a body; only folders that keep a snippet.
    let o = found("%E6%8A%98").await; // 折
    assert_eq!(o, [("优惠".to_owned(), vec!["折扣".to_owned()])]);
    let o = found("100").await;
    assert_eq!(
        o,
        [(
            "优惠".to_owned(),
            vec!["满减".to_owned(), "折扣".to_owned()]
        )]
    );
    assert!(found("nothing-like-this").await.is_empty());
    // Empty or blank: everything, empty folders too.
    for q in ["", "%20%20"] {
        let o = found(q).await;
        assert_eq!(names(&o), ["优惠", "表单", "English", "空分组"], "q={q:?}");
        assert_eq!(titles(o).len(), 6);
    }
    // The domain function the sidebar calls answers the same.
    let corp = crate::common::corp(CORP);
    let direct = quick::library(&app.db, &corp, Some("  Hello "))
        .await
        .unwrap();
    assert_eq!(direct.len(), 1);
    assert_eq!(direct[0].folder.name, "English");
    assert_eq!(direct[0].snippets[0].body, "Hello and WELCOME aboard");
    assert_eq!(
        quick::library(&app.db, &corp, Some(&"x".repeat(1001)))
            .await
            .unwrap(),
        vec![],
        "longer than any body"
    );
    app.stop().await;
}

async fn the_corp_limits_hold(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = api(&app, CORP, Role::Admin, None).await;
    let corp = crate::common::corp(CORP);
    // 99 folders through the store, the 100th through the API, the 101st refused.
    for i in 0..99 {
        quick::create_folder(&app.db, &corp, &format!("分组{i}"), None, "t", now_ms())
            .await
            .unwrap();
    }
    let last = create_folder(&admin, "第一百个").await;
    let (status, body) = admin.post(FOLDERS, json!({"name": "多一个"})).await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("folders")),
        "{body}"
    );
    assert_eq!(library(&admin, None).await.as_array().unwrap().len(), 100);
    // Another corp has its own hundred.
    let other = api(&app, "wwOTHERCORP", Role::Admin, None).await;
    create_folder(&other, "分组0").await;

    // 1999 snippets written straight to the table, the 2000th through the API, the 2001st refused.
    let insert = format!(
        "INSERT INTO quick_reply (corp_id, folder_id, title, body, position, created_by, \
         created_at_ms, updated_at_ms) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL \
         SELECT i + 1 FROM n WHERE i < 1999) SELECT '{CORP}', {last}, 'T' || i, 'body', i, 't', 0, 0 FROM n"
    );
    scrm::on_db!(&app.db, |pool| sqlx::query(sqlx::AssertSqlSafe(
        insert.as_str()
    ))
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
    create_snippet(&admin, last, "第两千条", "b").await;
    let (status, body) = admin
        .post(
            SNIPPETS,
            json!({"folder_id": last, "title": "多一条", "body": "b"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("snippets")),
        "{body}"
    );
    assert_eq!(
        scalar(&app.db, "SELECT COUNT(*) FROM quick_reply").await,
        2000
    );
    let full = library(&admin, None).await;
    let snippets = full
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["snippets"].as_array().unwrap().len())
        .sum::<usize>();
    assert_eq!(snippets, 2000);
    app.stop().await;
}

async fn another_corp_sees_and_touches_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = api(&app, CORP, Role::Admin, None).await;
    let folder = create_folder(&admin, "开场白").await;
    let snippet = create_snippet(&admin, folder, "问候", "您好！").await;
    let other = api(&app, "wwOTHERCORP", Role::Admin, None).await;
    let other_sales = api(&app, "wwOTHERCORP", Role::Sales, Some("lisi")).await;
    let before = footprint(&app.db).await;

    assert_eq!(library(&other, None).await, json!([]));
    assert_eq!(library(&other_sales, Some("%E6%82%A8")).await, json!([]));
    for (method, path, body, status) in [
        (
            "PATCH",
            format!("{FOLDERS}/{folder}"),
            json!({"name": "改"}),
            404,
        ),
        (
            "DELETE",
            format!("{FOLDERS}/{folder}?cascade=true"),
            Value::Null,
            404,
        ),
        (
            "PATCH",
            format!("{SNIPPETS}/{snippet}"),
            json!({"body": "改"}),
            404,
        ),
        ("DELETE", format!("{SNIPPETS}/{snippet}"), Value::Null, 404),
        (
            "POST",
            SNIPPETS.to_owned(),
            json!({"folder_id": folder, "title": "t", "body": "b"}),
            422,
        ),
    ] {
        let http = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (got, answer) = other
            .call(http, &path, (!body.is_null()).then_some(body))
            .await;
        assert_eq!(got, status, "{method} {path}: {answer}");
    }
    let (status, _) = other_sales
        .post(&format!("{SNIPPETS}/{snippet}/uses"), json!({}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(footprint(&app.db).await, before, "nothing changed");

    // The other corp's own folder of the same name is its own; moving our snippet there fails.
    let theirs = create_folder(&other, "开场白").await;
    let (status, answer) = admin
        .patch(
            &format!("{SNIPPETS}/{snippet}"),
            json!({"folder_id": theirs}),
        )
        .await;
    assert_eq!((status, answer["field"].clone()), (422, json!("folder_id")));
    let corp = crate::common::corp(CORP);
    assert_eq!(
        quick::get_snippet(&app.db, &crate::common::corp("wwOTHERCORP"), snippet)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        quick::get_snippet(&app.db, &corp, snippet)
            .await
            .unwrap()
            .map(|s| s.folder_id),
        Some(folder)
    );
    assert_eq!(
        outline(&library(&admin, None).await),
        [("开场白".to_owned(), vec!["问候".to_owned()])]
    );
    app.stop().await;
}

async fn quick_replies_are_in_the_openapi_document(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let document: Value = reqwest::get(format!("{}/api/openapi.json", app.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method, who) in [
        ("/api/v1/quick-replies", "get", "admin, compliance, sales"),
        ("/api/v1/quick-replies/folders", "post", "admin"),
        ("/api/v1/quick-replies/folders/{id}", "patch", "admin"),
        ("/api/v1/quick-replies/folders/{id}", "delete", "admin"),
        ("/api/v1/quick-replies/snippets", "post", "admin"),
        ("/api/v1/quick-replies/snippets/{id}", "patch", "admin"),
        ("/api/v1/quick-replies/snippets/{id}", "delete", "admin"),
        (
            "/api/v1/quick-replies/snippets/{id}/uses",
            "post",
            "admin, sales",
        ),
    ] {
        let op = &document["paths"][path][method];
        assert_eq!(op["tags"], json!(["quick-replies"]), "{method} {path}");
        let description = op["description"].as_str().unwrap_or("");
        assert!(
            description.starts_with(&format!("权限 / who: {who}")),
            "{method} {path}: {description}"
        );
    }
    let library = &document["paths"]["/api/v1/quick-replies"]["get"];
    assert_eq!(library["parameters"][0]["name"], json!("q"));
    let snippet = &library["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
        ["folders"]["items"]["properties"]["snippets"]["items"];
    assert!(snippet["properties"]["use_count"].is_object(), "{snippet}");
    app.stop().await;
}
