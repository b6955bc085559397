//! The salesperson's sidebar over HTTP against the emulated WeCom: sign-in through WeCom's OAuth
//! (a code used once, a clean URL, outsiders refused), the JS-SDK signatures the emulator's
//! stand-in script accepts, the customer view, every edit (tag, note, reminder, stage) with the
//! CSRF token and reaching WeCom through the outbox, and what a salesperson may not do: read or
//! change a customer they do not follow (403, nothing changes, nothing queued), write without the
//! token, or keep using an expired session.

use serde_json::{Value, json};
use wecom_sdk::testkit::{ClientContext, NewCustomer, SeedSpec};

use crate::common::{Backend, CORP};
use crate::emulated::{EmulatedApp, Options, wait_outbox_idle};
use crate::web_client::Browser;

both_backends!(
    a_salesperson_signs_in_and_works_on_their_customer,
    another_salespersons_customer_is_refused_and_nothing_changes,
    outsiders_reused_codes_and_expired_sessions_are_turned_away,
    in_the_browser_a_salesperson_tags_notes_and_reminds,
    group_chats_history_alerts_refusals_and_recent_customers,
    in_the_browser_quick_replies_groups_expiry_and_a_failed_config,
);

fn options(extra: &str) -> Options {
    Options {
        extra_config: format!(
            "[sidebar]\npublic_url = \"@BASE_URL@\"\n\
             oauth_authorize_url = \"http://{{EMULATOR_ADDR}}/connect/oauth2/authorize\"\n\
             jssdk_script_url = \"http://{{EMULATOR_ADDR}}/jweixin.js\"\n{extra}"
        ),
        ..Options::default()
    }
}

struct Fixture {
    app: EmulatedApp,
    staff: Vec<String>,
    tags: Vec<String>,
    ext: String,
}

async fn fixture(backend: Backend, extra: &str) -> Fixture {
    let app = EmulatedApp::spawn_with(backend, options(extra)).await;
    let seeded = app.wecom().seed(
        CORP,
        &SeedSpec {
            staff: 2,
            departments: 1,
            rng_seed: 7,
            ..SeedSpec::default()
        },
    );
    let tags = vec![
        app.wecom().create_tag(CORP, "客户等级", "重要客户"),
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

/// The WeCom client of `user`, in a 1:1 chat with `ext`.
fn open_chat(app: &EmulatedApp, user: Option<&str>, ext: &str) {
    app.wecom().set_client(Some(ClientContext {
        corp_id: CORP.to_owned(),
        userid: user.map(str::to_owned),
        outsider: user.is_none(),
        entry: "single_chat_tools".to_owned(),
        external_userid: Some(ext.to_owned()),
        chat_id: None,
        ..Default::default()
    }));
}

/// Opens `/sidebar` and follows WeCom's OAuth back; returns the page's CSRF token and the
/// redirect WeCom made with the code.
async fn sign_in(browser: &mut Browser) -> (String, String) {
    let first = browser.get("/sidebar").await;
    assert_eq!(first.status, 302, "{}", first.text);
    let authorize = first.location.unwrap();
    assert!(
        authorize.contains("/connect/oauth2/authorize?appid="),
        "{authorize}"
    );
    assert!(authorize.ends_with("#wechat_redirect"), "{authorize}");
    let back = browser
        .get(authorize.trim_end_matches("#wechat_redirect"))
        .await;
    assert_eq!(back.status, 302, "{}", back.text);
    let with_code = back.location.unwrap();
    assert!(with_code.contains("/sidebar/oauth?code="), "{with_code}");
    let landed = browser.get(&with_code).await;
    assert_eq!(landed.status, 303, "{}", landed.text);
    let clean = landed.location.unwrap();
    assert!(!clean.contains("code="), "the code leaves the URL: {clean}");
    let page = browser.get(&clean).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let csrf = page
        .text
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf meta")
        .to_owned();
    (csrf, with_code)
}

async fn outbox_count(app: &EmulatedApp) -> usize {
    scrm::pipeline::outbox::list(
        &app.db,
        &scrm::pipeline::outbox::OutboxFilter {
            limit: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .len()
}

async fn a_salesperson_signs_in_and_works_on_their_customer(backend: Backend) {
    let f = fixture(backend, "").await;
    let base = f.app.server.base_url.clone();
    let me = &f.staff[0];
    open_chat(&f.app, Some(me), &f.ext);
    let mut browser = Browser::new(&base);
    let (csrf, _) = sign_in(&mut browser).await;

    // The page: our script and WeCom's only, no inline script.
    let page = browser.get(&format!("/sidebar?corp={CORP}")).await;
    let csp = page.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self' http://"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(!page.text.contains("<script>"), "no inline script");
    let js = page
        .text
        .split("src=\"/sidebar/assets/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let asset = browser.get(&format!("/sidebar/assets/{js}")).await;
    assert_eq!(asset.status, 200);
    assert!(
        asset.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );

    // The JS-SDK signatures: WeCom (the emulator's stand-in) accepts both, each with its ticket.
    let page_url = format!("{base}/sidebar?corp={CORP}");
    let sig = browser
        .get(&format!(
            "/sidebar/jssdk?url={}",
            url_encode(&format!("{page_url}#/customer"))
        ))
        .await;
    assert_eq!(sig.status, 200, "{}", sig.text);
    let sig: Value = serde_json::from_str(&sig.text).unwrap();
    let verify = |kind: &str, part: &str| {
        json!({
            "kind": kind, "corpid": CORP, "agentid": sig["agentid"],
            "timestamp": sig[part]["timestamp"], "nonceStr": sig[part]["nonceStr"],
            "signature": sig[part]["signature"], "url": page_url,
        })
    };
    let emulator = format!("http://{}", f.app.emulator.addr());
    let http = reqwest::Client::new();
    for (kind, part, expected) in [
        ("config", "config", "config:ok"),
        ("agentConfig", "agent", "agentConfig:ok"),
        // The classic mistake: agentConfig signed with the corp ticket.
        ("agentConfig", "config", "agentConfig:invalid signature"),
    ] {
        let answer: Value = http
            .post(format!("{emulator}/testkit/jssdk/verify"))
            .body(verify(kind, part).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            answer["errMsg"], expected,
            "{kind} with the {part} signature: {answer}"
        );
    }
    // The shell carries the signatures for its own URL already (one request fewer on the way
    // to the first view), and WeCom accepts them.
    let inline: Value = serde_json::from_str(
        &page
            .text
            .split("name=\"jssdk-signed\" content=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("signatures in the shell")
            .replace("&#34;", "\"")
            .replace("&quot;", "\""),
    )
    .unwrap();
    assert_eq!(inline["url"], page_url.as_str());
    let answer: Value = http
        .post(format!("{emulator}/testkit/jssdk/verify"))
        .body(
            json!({
                "kind": "agentConfig", "corpid": CORP, "agentid": inline["agentid"],
                "timestamp": inline["agent"]["timestamp"], "nonceStr": inline["agent"]["nonceStr"],
                "signature": inline["agent"]["signature"], "url": page_url,
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["errMsg"], "agentConfig:ok", "{answer}");

    // A page of someone else is not signed.
    let foreign = browser
        .get(&format!(
            "/sidebar/jssdk?url={}",
            url_encode("https://evil.example/sidebar")
        ))
        .await;
    assert_eq!(foreign.status, 400);

    // A customer nobody follows in our records yet (just added): wait, not refused.
    let unknown = browser
        .get("/sidebar/customer/wmJustAddedNotSyncedYet")
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert!(unknown.text.contains("稍后再试"), "{}", unknown.text);

    // The customer.
    let view = browser.get(&format!("/sidebar/customer/{}", f.ext)).await;
    assert_eq!(view.status, 200, "{}", view.text);
    assert!(view.text.contains("王总"), "{}", view.text);
    assert!(view.text.contains("重要客户") && view.text.contains("展会"));

    // A tag, with the token: on at once, pending until WeCom has it, then in WeCom.
    let path = format!("/sidebar/customer/{}/tags", f.ext);
    let on = browser
        .post(&path, json!({"tag_id": f.tags[0], "on": true}), Some(&csrf))
        .await;
    assert_eq!(on.status, 200, "{}", on.text);
    assert!(on.text.contains("aria-pressed=\"true\""), "{}", on.text);
    wait_outbox_idle(&f.app.db).await;
    let in_wecom = f.app.wecom().relation(CORP, me, &f.ext).unwrap().tag_ids;
    assert_eq!(in_wecom, vec![f.tags[0].clone()]);
    let after = browser.get(&format!("/sidebar/customer/{}", f.ext)).await;
    assert!(
        !after.text.contains("同步中"),
        "delivered: no longer pending"
    );
    // And off again.
    let off = browser
        .post(
            &path,
            json!({"tag_id": f.tags[0], "on": false}),
            Some(&csrf),
        )
        .await;
    assert_eq!(off.status, 200);
    wait_outbox_idle(&f.app.db).await;
    assert!(
        f.app
            .wecom()
            .relation(CORP, me, &f.ext)
            .unwrap()
            .tag_ids
            .is_empty()
    );

    // Remark and description: ours at once, WeCom's after the outbox.
    let remarked = browser
        .post(
            &format!("/sidebar/customer/{}/remark", f.ext),
            json!({"remark": "王总-展会", "description": "喜欢晚上沟通"}),
            Some(&csrf),
        )
        .await;
    assert_eq!(remarked.status, 200, "{}", remarked.text);
    assert!(remarked.text.contains("王总-展会"));
    wait_outbox_idle(&f.app.db).await;
    let relation = f.app.wecom().relation(CORP, me, &f.ext).unwrap();
    assert_eq!(relation.remark, "王总-展会");
    assert_eq!(relation.description, "喜欢晚上沟通");
    let too_long = browser
        .post(
            &format!("/sidebar/customer/{}/remark", f.ext),
            json!({"remark": "一二三四五六七八九十一二三四五六七八九十一", "description": ""}),
            Some(&csrf),
        )
        .await;
    assert_eq!(too_long.status, 422);
    assert!(too_long.text.contains("最多 20 个字"), "{}", too_long.text);

    // A note, a reminder in 3 days, a stage.
    let note = browser
        .post(
            &format!("/sidebar/customer/{}/notes", f.ext),
            json!({"body": "客户喜欢晚上沟通"}),
            Some(&csrf),
        )
        .await;
    assert_eq!(note.status, 200, "{}", note.text);
    assert!(note.text.contains("客户喜欢晚上沟通"));
    let reminder = browser
        .post(
            &format!("/sidebar/customer/{}/reminders", f.ext),
            json!({"in_days": 3}),
            Some(&csrf),
        )
        .await;
    assert_eq!(reminder.status, 200, "{}", reminder.text);
    assert!(reminder.text.contains("跟进客户"));
    let stage = browser
        .post(
            &format!("/sidebar/customer/{}/stage", f.ext),
            json!({"stage": "意向"}),
            Some(&csrf),
        )
        .await;
    assert_eq!(stage.status, 200, "{}", stage.text);
    let ext = crate::common::ext(&f.ext);
    let corp = crate::common::corp(CORP);
    assert_eq!(
        scrm::domain::followup::customer_stage(&f.app.db, &corp, &ext)
            .await
            .unwrap()
            .as_deref(),
        Some("意向")
    );
    let notes = scrm::domain::followup::list_notes(&f.app.db, &corp, &ext, None, 10)
        .await
        .unwrap();
    assert_eq!(notes[0].author, *me, "written as the signed-in salesperson");

    // A long history: the newest 30 at once, the rest on request.
    for n in 0..35 {
        scrm::domain::followup::create_note(
            &f.app.db,
            &corp,
            &ext,
            me,
            &format!("历史记录 {n}"),
            None,
            scrm::platform::db::now_ms(),
        )
        .await
        .unwrap();
    }
    let view = browser.get(&format!("/sidebar/customer/{}", f.ext)).await;
    assert!(
        view.text.contains("历史记录 34") && !view.text.contains("历史记录 4<"),
        "newest first"
    );
    let more = view
        .text
        .split("data-more=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a button for older notes")
        .replace("&#38;", "&");
    let older = browser.get(&more).await;
    assert_eq!(older.status, 200, "{}", older.text);
    assert!(older.text.contains("历史记录 0") && older.text.contains("客户喜欢晚上沟通"));
    assert!(!older.text.contains("data-more"), "the last page");
    f.app.stop().await;
}

async fn another_salespersons_customer_is_refused_and_nothing_changes(backend: Backend) {
    let f = fixture(backend, "").await;
    let other = &f.staff[1];
    // The other salesperson, who does not follow the customer, edits the request to reach them.
    open_chat(&f.app, Some(other), &f.ext);
    let mut browser = Browser::new(&f.app.server.base_url);
    let (csrf, _) = sign_in(&mut browser).await;
    let queued = outbox_count(&f.app).await;

    let read = browser.get(&format!("/sidebar/customer/{}", f.ext)).await;
    assert_eq!(read.status, 403, "{}", read.text);
    assert!(!read.text.contains("王总"), "nothing of the customer shows");
    for (path, body) in [
        ("tags", json!({"tag_id": f.tags[0], "on": true})),
        ("notes", json!({"body": "偷看"})),
        ("reminders", json!({"in_days": 3})),
        ("stage", json!({"stage": "成交"})),
    ] {
        let answer = browser
            .post(
                &format!("/sidebar/customer/{}/{path}", f.ext),
                body,
                Some(&csrf),
            )
            .await;
        assert_eq!(answer.status, 403, "{path}: {}", answer.text);
    }
    assert_eq!(outbox_count(&f.app).await, queued, "nothing queued");
    let ext = crate::common::ext(&f.ext);
    let corp = crate::common::corp(CORP);
    assert!(
        scrm::domain::followup::list_notes(&f.app.db, &corp, &ext, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        scrm::domain::followup::customer_stage(&f.app.db, &corp, &ext)
            .await
            .unwrap(),
        None
    );
    assert!(
        f.app
            .wecom()
            .relation(CORP, &f.staff[0], &f.ext)
            .unwrap()
            .tag_ids
            .is_empty()
    );

    // The owner's own session without the CSRF token writes nothing either.
    open_chat(&f.app, Some(&f.staff[0]), &f.ext);
    let mut owner = Browser::new(&f.app.server.base_url);
    sign_in(&mut owner).await;
    let forged = owner
        .post(
            &format!("/sidebar/customer/{}/tags", f.ext),
            json!({"tag_id": f.tags[0], "on": true}),
            None,
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.text);
    assert!(forged.text.contains("页面已过期"));
    let wrong = owner
        .post(
            &format!("/sidebar/customer/{}/tags", f.ext),
            json!({"tag_id": f.tags[0], "on": true}),
            Some(&csrf),
        )
        .await;
    assert_eq!(
        wrong.status, 403,
        "another session's token is not this one's"
    );
    assert_eq!(outbox_count(&f.app).await, queued);
    f.app.stop().await;
}

async fn outsiders_reused_codes_and_expired_sessions_are_turned_away(backend: Backend) {
    let f = fixture(backend, "session_idle_secs = 1\nsession_max_secs = 60\n").await;
    let base = f.app.server.base_url.clone();

    // A WeChat user who is not a member gets no session.
    open_chat(&f.app, None, &f.ext);
    let mut outsider = Browser::new(&base);
    let first = outsider.get("/sidebar").await;
    let back = outsider
        .get(first.location.unwrap().trim_end_matches("#wechat_redirect"))
        .await;
    let refused = outsider.get(&back.location.unwrap()).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains("仅限企业成员"));
    assert!(!outsider.cookies.contains_key("scrm_session"));

    // A code is good once: the same redirect again (a page refresh) signs nobody in.
    open_chat(&f.app, Some(&f.staff[0]), &f.ext);
    let mut browser = Browser::new(&base);
    let (_, with_code) = sign_in(&mut browser).await;
    let mut replay = Browser::new(&base);
    let started = replay.get("/sidebar").await;
    let state_cookie = replay.cookies["scrm_oauth"].clone();
    let (st, _) = state_cookie.split_once('.').unwrap();
    let reused = with_code.split("state=").next().unwrap().to_owned() + "state=" + st;
    assert_eq!(started.status, 302);
    let again = replay.get(&reused).await;
    assert_eq!(again.status, 400, "{}", again.text);
    assert!(again.text.contains("登录码已失效"), "{}", again.text);
    assert!(!replay.cookies.contains_key("scrm_session"));
    // A state that is not the one we handed out is refused before WeCom is asked.
    let mut forged = Browser::new(&base);
    let forged_answer = forged.get("/sidebar/oauth?code=abc&state=xyz").await;
    assert_eq!(forged_answer.status, 400);

    // Idle past the limit: the session is over (401), and the page signs in again.
    let live = browser.get(&format!("/sidebar/customer/{}", f.ext)).await;
    assert_eq!(live.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let expired = browser.get(&format!("/sidebar/customer/{}", f.ext)).await;
    assert_eq!(expired.status, 401, "{}", expired.text);
    assert!(expired.text.contains("登录已过期"));
    let page = browser.get("/sidebar").await;
    assert_eq!(page.status, 302, "back to WeCom's sign-in");
    f.app.stop().await;
}

async fn group_chats_history_alerts_refusals_and_recent_customers(backend: Backend) {
    let f = fixture(backend, "").await;
    let (me, colleague) = (&f.staff[0], &f.staff[1]);
    // The colleague's own customer, and a colleague who followed 王总 until 王总 deleted them.
    let theirs = f.app.wecom().add_customer(
        CORP,
        colleague,
        NewCustomer {
            name: "李姐".to_owned(),
            ..NewCustomer::default()
        },
    );
    assert!(f.app.wecom().add_follow(CORP, colleague, &f.ext, None));
    f.app.settle().await;
    assert!(
        f.app
            .wecom()
            .customer_deletes_staff(CORP, colleague, &f.ext)
    );
    // A group I own with 王总, the colleague's customer, and a WeChat user nobody here follows.
    let chat = f.app.wecom().create_group_chat(
        CORP,
        me,
        vec![
            f.ext.clone(),
            theirs.clone(),
            "wmNobodyFollowsThisOne0001".to_owned(),
        ],
    );
    f.app.settle().await;

    open_chat(&f.app, Some(me), &f.ext);
    let mut browser = Browser::new(&f.app.server.base_url);
    let (csrf, _) = sign_in(&mut browser).await;
    let path = |rest: &str| format!("/sidebar/customer/{}{rest}", f.ext);

    // The customer left a colleague: the salesperson is told, in their words, without the
    // compliance wording or ids.
    let view = browser.get(&path("")).await;
    assert_eq!(view.status, 200, "{}", view.text);
    assert!(view.text.contains("客户删除了同事"), "{}", view.text);
    assert!(
        !view.text.contains("删除了员工"),
        "not the compliance wording"
    );

    // Stage changes keep their history.
    for stage in ["意向", "成交"] {
        let set = browser
            .post(&path("/stage"), json!({ "stage": stage }), Some(&csrf))
            .await;
        assert_eq!(set.status, 200, "{}", set.text);
    }
    let view = browser.get(&path("")).await;
    assert!(view.text.contains("阶段变更记录"), "{}", view.text);
    assert!(view.text.contains("意向 → 成交"), "{}", view.text);
    assert!(view.text.contains("（未设置） → 意向"), "{}", view.text);

    // A tag WeCom refuses (the app may not tag for this member): shown with the reason, and
    // cleared by the next change that goes through.
    f.app.wecom().inject_fault(wecom_sdk::testkit::Fault {
        api: Some("externalcontact/mark_tag".to_owned()),
        kind: wecom_sdk::testkit::FaultKind::Errcode(60011),
        times: 1,
    });
    let on = browser
        .post(
            &path("/tags"),
            json!({"tag_id": f.tags[1], "on": true}),
            Some(&csrf),
        )
        .await;
    assert_eq!(on.status, 200, "{}", on.text);
    wait_outbox_idle(&f.app.db).await;
    let view = browser.get(&path("")).await;
    assert!(view.text.contains("class=\"refusal\""), "{}", view.text);
    assert!(
        view.text.contains("应用没有为你打标签的权限"),
        "{}",
        view.text
    );
    let again = browser
        .post(
            &path("/tags"),
            json!({"tag_id": f.tags[1], "on": false}),
            Some(&csrf),
        )
        .await;
    assert_eq!(again.status, 200);
    wait_outbox_idle(&f.app.db).await;
    let view = browser.get(&path("")).await;
    assert!(!view.text.contains("class=\"refusal\""), "{}", view.text);

    // The group: our customers in it, with their tags and who follows them.
    let tagged = browser
        .post(
            &path("/tags"),
            json!({"tag_id": f.tags[0], "on": true}),
            Some(&csrf),
        )
        .await;
    assert_eq!(tagged.status, 200);
    let group = browser.get(&format!("/sidebar/chat/{chat}")).await;
    assert_eq!(group.status, 200, "{}", group.text);
    assert!(group.text.contains("群里我们的客户（2）"), "{}", group.text);
    assert!(group.text.contains("王总") && group.text.contains("李姐"));
    assert!(
        group.text.contains("重要客户"),
        "王总's tag: {}",
        group.text
    );
    assert!(group.text.contains("另有 1 位客户"), "{}", group.text);
    assert!(
        group
            .text
            .contains(&format!("data-load=\"/sidebar/customer/{}\"", f.ext)),
        "my customer opens"
    );
    assert!(
        !group
            .text
            .contains(&format!("data-load=\"/sidebar/customer/{theirs}\"")),
        "the colleague's customer does not"
    );
    assert_eq!(
        browser
            .get("/sidebar/chat/wrNoSuchChat000000000001")
            .await
            .status,
        404
    );

    // The workbench: recently active customers, the one with a note first.
    let home = browser.get("/sidebar/home").await;
    assert_eq!(home.status, 200);
    assert!(home.text.contains("最近联系的客户"), "{}", home.text);
    assert!(home.text.contains("王总"), "{}", home.text);
    assert!(!home.text.contains("李姐"), "not mine: {}", home.text);

    // The colleague is not in the group: refused, nothing shown.
    open_chat(&f.app, Some(colleague), &theirs);
    let mut other = Browser::new(&f.app.server.base_url);
    sign_in(&mut other).await;
    let refused = other.get(&format!("/sidebar/chat/{chat}")).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(!refused.text.contains("王总"));
    f.app.stop().await;
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Real Chromium through WebDriver: the page signs in through the emulator's OAuth, signs the
/// JS-SDK in against the stand-in script, asks for the current customer and shows them; a person
/// taps a tag, writes a note, sets a reminder and a stage, and each reaches the database (and the
/// tag WeCom). Then a colleague at the same browser is refused, and the workbench entry explains
/// itself. Screenshots of each view at 375×812 and 1280×800 go to `target/screenshots/`.
async fn in_the_browser_a_salesperson_tags_notes_and_reminds(backend: Backend) {
    let f = fixture(backend, "").await;
    let base = f.app.server.base_url.clone();
    let me = &f.staff[0];
    let name = |view: &str| format!("sidebar-{view}-{}", backend.name());
    open_chat(&f.app, Some(me), &f.ext);
    let mut browser = crate::webdriver::Browser::start(375, 812).await;
    browser.goto(&format!("{base}/sidebar")).await;
    browser
        .wait_for(
            "the customer view",
            "document.querySelector('article.customer')",
        )
        .await;
    assert_eq!(
        browser
            .eval("return document.querySelector('h1').innerText;")
            .await,
        json!("王总")
    );
    let url = browser.eval("return location.href;").await;
    assert!(!url.as_str().unwrap().contains("code="), "clean URL: {url}");
    browser
        .screenshot(&format!("{}-375", name("customer")))
        .await;

    // Tap a tag: pressed at once, in WeCom once the outbox has delivered it.
    let tag = format!("button[data-k='tag_id'][data-v='{}']", f.tags[0]);
    browser.click(&tag).await;
    browser
        .wait_for(
            "the tag pressed",
            &format!("document.querySelector(\"{tag}\").getAttribute('aria-pressed') === 'true'"),
        )
        .await;
    wait_outbox_idle(&f.app.db).await;
    assert_eq!(
        f.app.wecom().relation(CORP, me, &f.ext).unwrap().tag_ids,
        vec![f.tags[0].clone()]
    );

    // A note in two taps.
    browser
        .type_into("form.note textarea", "客户喜欢晚上沟通")
        .await;
    browser.click("form.note button[type='submit']").await;
    browser
        .wait_for(
            "the note in the timeline",
            "document.querySelector('.timeline').innerText.includes('客户喜欢晚上沟通')",
        )
        .await;
    // A reminder in 7 days (besides the default ones of a new customer), and a stage.
    let before = browser
        .eval("return document.querySelectorAll('.reminders li').length;")
        .await;
    browser.click("button[data-k='in_days'][data-v='7']").await;
    browser
        .wait_for(
            "the reminder",
            &format!("document.querySelectorAll('.reminders li').length === {before} + 1"),
        )
        .await;
    browser.click("button[data-k='stage'][data-v='意向']").await;
    browser
        .wait_for(
            "the stage",
            "document.querySelector(\"button[data-k='stage'][data-v='意向']\").classList.contains('on')",
        )
        .await;
    browser.screenshot(&format!("{}-375", name("edited"))).await;
    browser
        .eval("window.scrollTo(0, document.body.scrollHeight); return 0;")
        .await;
    browser.screenshot(&format!("{}-375", name("notes"))).await;
    browser.resize(1280, 800).await;
    browser
        .screenshot(&format!("{}-1280", name("edited")))
        .await;
    let corp = crate::common::corp(CORP);
    let ext = crate::common::ext(&f.ext);
    let notes = scrm::domain::followup::list_notes(&f.app.db, &corp, &ext, None, 10)
        .await
        .unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].body, "客户喜欢晚上沟通");

    // A colleague at the same browser, in a chat with the same customer: refused, told why.
    browser.clear_cookies().await;
    open_chat(&f.app, Some(&f.staff[1]), &f.ext);
    browser.goto(&format!("{base}/sidebar")).await;
    browser
        .wait_for("the refusal", "document.querySelector('.notice.error')")
        .await;
    let text = browser.eval("return document.body.innerText;").await;
    assert!(
        text.as_str().unwrap().contains("不是你跟进的客户"),
        "{text}"
    );
    assert!(!text.as_str().unwrap().contains("客户喜欢晚上沟通"));
    browser
        .screenshot(&format!("{}-1280", name("refused")))
        .await;

    // Opened from the workbench: no chat, a way forward.
    f.app.wecom().set_client(Some(ClientContext {
        corp_id: CORP.to_owned(),
        userid: Some(me.clone()),
        entry: "normal".to_owned(),
        ..ClientContext::default()
    }));
    browser.clear_cookies().await;
    browser.resize(375, 812).await;
    browser.goto(&format!("{base}/sidebar")).await;
    browser
        .wait_for("the workbench view", "document.querySelector('.notice')")
        .await;
    let text = browser.eval("return document.body.innerText;").await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("我的待办提醒") && text.contains("从聊天工具栏打开"),
        "{text}"
    );
    // The new customer's default reminder (3 days) and ours (7 days) are due within the week.
    assert!(text.contains("王总"), "{text}");
    browser
        .screenshot(&format!("{}-375", name("workbench")))
        .await;
    browser.click("button[data-load]").await;
    browser
        .wait_for(
            "the customer from a reminder",
            "document.querySelector('article.customer')",
        )
        .await;
    browser.quit().await;
    f.app.stop().await;
}

/// Real Chromium again, for what the first browser test leaves out: a quick reply searched and
/// sent into the chat (WeCom's `sendChatMessage` reaches the emulator's write log, the snippet's
/// use is counted), the view of a customer group chat, a session that ends while a note is being
/// typed (the page signs in again and the note is still there), and a JS-SDK config WeCom
/// refuses (its `errMsg` is shown with a way forward).
async fn in_the_browser_quick_replies_groups_expiry_and_a_failed_config(backend: Backend) {
    use scrm::domain::quick_replies::{self, NewSnippet};
    let f = fixture(backend, "").await;
    let base = f.app.server.base_url.clone();
    let me = &f.staff[0];
    let name = |view: &str| format!("sidebar-{view}-{}", backend.name());
    let corp = crate::common::corp(CORP);
    let now = scrm::platform::db::now_ms();
    let folder = quick_replies::create_folder(&f.app.db, &corp, "报价", None, "admin", now)
        .await
        .unwrap();
    let greeting = quick_replies::create_folder(&f.app.db, &corp, "问候", None, "admin", now)
        .await
        .unwrap();
    let price = "您好，我们的标准版价格是每年 2,980 元，本月签约赠送三个月。";
    let snippet = quick_replies::create_snippet(
        &f.app.db,
        &corp,
        &NewSnippet {
            folder_id: folder.id,
            title: "标准版价格",
            body: price,
            position: None,
        },
        "admin",
        now,
    )
    .await
    .unwrap();
    quick_replies::create_snippet(
        &f.app.db,
        &corp,
        &NewSnippet {
            folder_id: greeting.id,
            title: "首次问候",
            body: "您好，我是您的专属顾问，有任何问题随时找我。",
            position: None,
        },
        "admin",
        now,
    )
    .await
    .unwrap();
    let chat = f
        .app
        .wecom()
        .create_group_chat(CORP, me, vec![f.ext.clone()]);
    f.app.settle().await;

    open_chat(&f.app, Some(me), &f.ext);
    let mut browser = crate::webdriver::Browser::start(375, 812).await;
    browser.goto(&format!("{base}/sidebar")).await;
    browser
        .wait_for(
            "the customer view",
            "document.querySelector('article.customer')",
        )
        .await;

    // Open the library, search, send.
    browser.click("details.replies summary").await;
    browser
        .wait_for(
            "the library",
            "document.querySelectorAll('.reply-items li').length === 2",
        )
        .await;
    browser.type_into(".reply-search", "价格").await;
    browser
        .wait_for(
            "the search result",
            "document.querySelectorAll('.reply-items li').length === 1",
        )
        .await;
    browser
        .screenshot(&format!("{}-375", name("replies")))
        .await;
    browser
        .click(&format!("button[data-send='{}']", snippet.id))
        .await;
    browser
        .wait_for(
            "the use counted",
            "document.querySelector('.reply-head .muted').innerText === '已用 1 次'",
        )
        .await;
    let sent = f.app.wecom().writes_for("jssdk/sendChatMessage");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].body["message"]["text"]["content"], price);
    assert_eq!(sent[0].body["external_userid"], f.ext.as_str());
    assert_eq!(sent[0].body["userid"], me.as_str());
    let counted = quick_replies::get_snippet(&f.app.db, &corp, snippet.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counted.use_count, 1);

    // The session ends while a note is being typed: saving signs in again, the note survives.
    browser
        .type_into("form.note textarea", "客户周五下午有空，记得回电")
        .await;
    scrm::auth::session::sweep(&f.app.db, 0, scrm::platform::db::now_ms() + 1)
        .await
        .unwrap();
    // Mark this page, to tell the one after signing in again from it.
    browser.eval("window.beforeExpiry = true; return 0;").await;
    browser.click("form.note button[type='submit']").await;
    browser
        .wait_for(
            "the note typed before, back after signing in again",
            "(function () { var t = document.querySelector('form.note textarea'); \
             return !window.beforeExpiry && t && t.value === '客户周五下午有空，记得回电'; })()",
        )
        .await;
    let ext = crate::common::ext(&f.ext);
    assert!(
        scrm::domain::followup::list_notes(&f.app.db, &corp, &ext, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing was saved by the expired session"
    );
    browser.click("form.note button[type='submit']").await;
    browser
        .wait_for(
            "the note saved",
            "document.querySelector('.timeline').innerText.includes('记得回电')",
        )
        .await;

    // A customer group chat.
    f.app.wecom().set_client(Some(ClientContext {
        corp_id: CORP.to_owned(),
        userid: Some(me.clone()),
        entry: "group_chat_tools".to_owned(),
        chat_id: Some(chat.clone()),
        ..ClientContext::default()
    }));
    browser.goto(&format!("{base}/sidebar")).await;
    browser
        .wait_for("the group view", "document.querySelector('article.chat')")
        .await;
    let text = browser.eval("return document.body.innerText;").await;
    assert!(
        text.as_str().unwrap().contains("群里我们的客户（1）")
            && text.as_str().unwrap().contains("王总"),
        "{text}"
    );
    browser.screenshot(&format!("{}-375", name("group"))).await;
    browser.resize(1280, 800).await;
    browser.screenshot(&format!("{}-1280", name("group"))).await;
    browser.resize(375, 812).await;

    // WeCom no longer takes the tickets we signed with (its clock ran past their life): the
    // page has the server fetch fresh ones once and starts again, unnoticed.
    let fetched = f.app.wecom().calls("get_jsapi_ticket");
    let later = std::time::Duration::from_secs(3 * 3600);
    f.app.wecom().advance_clock(later);
    browser
        .eval("document.body.innerHTML = ''; return 0;")
        .await;
    browser.goto(&format!("{base}/sidebar")).await;
    browser
        .wait_for(
            "the group view again",
            "document.querySelector('article.chat')",
        )
        .await;
    assert_eq!(
        f.app.wecom().calls("get_jsapi_ticket"),
        fetched + 2,
        "one fresh corp ticket (the first call meets an expired access token: 42001, refreshed, again)"
    );
    // Again within five minutes: no second forced fetch (WeCom counts every fetch), so the
    // page says what WeCom said and offers a retry.
    f.app.wecom().advance_clock(later);
    browser.goto(&format!("{base}/sidebar")).await;
    browser
        .wait_for(
            "the config failure",
            "document.querySelector('.notice.error')",
        )
        .await;
    let text = browser.eval("return document.body.innerText;").await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("JS-SDK 配置失败") && text.contains("invalid signature"),
        "{text}"
    );
    assert_eq!(
        f.app.wecom().calls("get_jsapi_ticket"),
        fetched + 2,
        "no second forced fetch within five minutes"
    );
    browser
        .screenshot(&format!("{}-375", name("config-failed")))
        .await;
    browser.quit().await;
    f.app.stop().await;
}
