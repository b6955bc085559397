//! Every sample in `fixtures/events/` parses to the expected typed event, with real field values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers and proptest bodies are test code; a failure should stop the test loudly"
)]

use std::collections::BTreeSet;

use wecom_sdk::event::{
    AppEvent, AppMessage, CallbackEvent, ChatUpdateDetail, ContactEvent, ExtAttr,
    ExternalChatEvent, ExternalContactEvent, ExternalTagEvent, TagKind, TransferFailReason,
};
use wecom_sdk::ids::{ChatId, ExternalUserId, TagId, UserId};
use wecom_sdk::xml::XmlError;
use wecom_sdk::{EventError, ParsedEvent, parse_event, parse_header};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/events");
const CORP: &str = "ww1436e0e65a779aee";
const CUSTOMER: &str = "wmQ2pCAAAA1b2c3d4e5f6g7h8i9j0kLmN";

/// Every fixture this file checks by name; `every_fixture_is_checked` keeps it in step with the folder.
const CHECKED: &[&str] = &[
    "change_external_contact_add_external_contact",
    "change_external_contact_edit_external_contact",
    "change_external_contact_add_half_external_contact",
    "change_external_contact_del_external_contact",
    "change_external_contact_del_follow_user",
    "change_external_contact_transfer_fail",
    "change_external_contact_msg_audit_approved",
    "change_external_chat_create",
    "change_external_chat_update",
    "change_external_chat_dismiss",
    "change_external_tag_create",
    "change_external_tag_update",
    "change_external_tag_delete",
    "change_external_tag_shuffle",
    "change_contact_create_user",
    "change_contact_update_user",
    "change_contact_delete_user",
    "change_contact_create_party",
    "change_contact_update_party",
    "change_contact_delete_party",
    "change_contact_update_tag",
    "msgaudit_notify",
    "text",
    "image",
    "voice",
    "video",
    "location",
    "link",
    "click",
    "view",
    "enter_agent",
    "unknown_event",
];

fn fixture(name: &str) -> String {
    let path = format!("{FIXTURES}/{name}.xml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn parse(name: &str) -> ParsedEvent {
    parse_event(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn user(id: &str) -> UserId {
    UserId::try_from(id).unwrap()
}

fn customer(id: &str) -> ExternalUserId {
    ExternalUserId::try_from(id).unwrap()
}

fn s(text: &str) -> Option<String> {
    Some(text.to_owned())
}

fn external_contact(name: &str) -> ExternalContactEvent {
    match parse(name).event {
        CallbackEvent::ExternalContact(e) => e,
        other => panic!("{name}: {other:?}"),
    }
}

fn external_chat(name: &str) -> ExternalChatEvent {
    match parse(name).event {
        CallbackEvent::ExternalChat(e) => e,
        other => panic!("{name}: {other:?}"),
    }
}

fn external_tag(name: &str) -> ExternalTagEvent {
    match parse(name).event {
        CallbackEvent::ExternalTag(e) => e,
        other => panic!("{name}: {other:?}"),
    }
}

fn contact(name: &str) -> ContactEvent {
    match parse(name).event {
        CallbackEvent::Contact(e) => e,
        other => panic!("{name}: {other:?}"),
    }
}

fn message(name: &str) -> (UserId, AppMessage) {
    match parse(name).event {
        CallbackEvent::Message { from, message } => (from, message),
        other => panic!("{name}: {other:?}"),
    }
}

fn app_event(name: &str) -> (UserId, AppEvent) {
    match parse(name).event {
        CallbackEvent::AppEvent { from, event } => (from, event),
        other => panic!("{name}: {other:?}"),
    }
}

// --- the folder itself -------------------------------------------------------------------------

#[test]
fn every_fixture_is_checked() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".xml").map(str::to_owned))
        .collect();
    let checked: BTreeSet<String> = CHECKED.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(
        on_disk, checked,
        "a fixture without a test, or a test without a fixture"
    );
}

#[test]
fn every_fixture_has_the_header_parse_header_reads() {
    for name in CHECKED {
        let xml = fixture(name);
        let parsed = parse(name);
        assert_eq!(
            parsed.header,
            parse_header(xml.as_bytes()).unwrap(),
            "{name}"
        );
        assert_eq!(parsed.header.to_user_name, CORP, "{name}");
        assert_eq!(parsed.corp_id().unwrap().as_str(), CORP, "{name}");
        assert!(
            parsed
                .header
                .create_time
                .is_some_and(|t| t >= 1_718_000_000),
            "{name}"
        );
        assert_eq!(
            parsed.event.is_unknown(),
            *name == "unknown_event",
            "{name}"
        );
    }
}

#[test]
fn cdata_and_plain_text_read_the_same() {
    for name in CHECKED.iter().filter(|n| **n != "unknown_event") {
        let with_cdata = fixture(name);
        let plain = with_cdata.replace("<![CDATA[", "").replace("]]>", "");
        assert_ne!(plain, with_cdata, "{name} has no CDATA to strip");
        assert_eq!(parse_event(&plain).unwrap(), parse(name), "{name}");
    }
}

// --- change_external_contact ---------------------------------------------------------------------

#[test]
fn add_external_contact() {
    let parsed = parse("change_external_contact_add_external_contact");
    assert_eq!(parsed.header.from_user_name, "sys");
    assert_eq!(parsed.header.create_time, Some(1_718_000_000));
    assert_eq!(
        parsed.header.change_type.as_deref(),
        Some("add_external_contact")
    );
    let CallbackEvent::ExternalContact(ExternalContactEvent::Added(added)) = parsed.event else {
        panic!("{:?}", parsed.event);
    };
    assert_eq!(added.user_id, user("lisi"));
    assert_eq!(added.external_user_id, customer(CUSTOMER));
    assert_eq!(added.state, s("expo2024_booth3"));
    assert_eq!(added.welcome_code, s("CALLBACK_CODE_9f3a"));
}

#[test]
fn edit_external_contact() {
    let event = external_contact("change_external_contact_edit_external_contact");
    let ExternalContactEvent::Edited(relation) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(relation.user_id, user("lisi"));
    assert_eq!(relation.external_user_id, customer(CUSTOMER));
    assert_eq!(event.relation(), (&user("lisi"), &customer(CUSTOMER)));
}

#[test]
fn add_half_external_contact() {
    let event = external_contact("change_external_contact_add_half_external_contact");
    let ExternalContactEvent::HalfAdded(added) = event else {
        panic!("{event:?}")
    };
    assert_eq!(added.user_id, user("wangwu"));
    assert_eq!(
        added.external_user_id,
        customer("woQ2pCAAAAhalfRelation00000000001")
    );
    assert_eq!(added.state, s("门店海报_徐汇"));
    assert_eq!(added.welcome_code, s("CALLBACK_CODE_half_77c1"));
}

#[test]
fn del_external_contact_by_transfer_is_recognised() {
    let event = external_contact("change_external_contact_del_external_contact");
    let ExternalContactEvent::StaffDeletedCustomer(deleted) = event else {
        panic!("{event:?}")
    };
    assert_eq!(deleted.user_id, user("lisi"));
    assert_eq!(deleted.external_user_id, customer(CUSTOMER));
    assert_eq!(deleted.source, s("DELETE_BY_TRANSFER"));
    assert!(deleted.is_by_transfer());
}

#[test]
fn del_external_contact_without_source_is_a_real_deletion() {
    // The plaintext of generated vector V3 (fixtures/crypto/vectors.json).
    let xml = "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[del_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmAJ2GCAAAXtWyujaWJHDDGi0mACAAAA]]></ExternalUserID></xml>";
    let parsed = parse_event(xml).unwrap();
    let CallbackEvent::ExternalContact(ExternalContactEvent::StaffDeletedCustomer(deleted)) =
        parsed.event
    else {
        panic!("{:?}", parsed.event);
    };
    assert_eq!(deleted.user_id, user("zhangsan"));
    assert_eq!(
        deleted.external_user_id,
        customer("wmAJ2GCAAAXtWyujaWJHDDGi0mACAAAA")
    );
    assert_eq!(deleted.source, None);
    assert!(!deleted.is_by_transfer());

    // Some other Source value is not a transfer either.
    let other = xml.replace(
        "</ExternalUserID>",
        "</ExternalUserID><Source>SOMETHING_ELSE</Source>",
    );
    let CallbackEvent::ExternalContact(ExternalContactEvent::StaffDeletedCustomer(deleted)) =
        parse_event(&other).unwrap().event
    else {
        panic!("not a deletion");
    };
    assert!(!deleted.is_by_transfer());
}

#[test]
fn del_follow_user() {
    let event = external_contact("change_external_contact_del_follow_user");
    let ExternalContactEvent::CustomerDeletedStaff(relation) = event else {
        panic!("{event:?}")
    };
    assert_eq!(relation.user_id, user("zhangsan"));
    assert_eq!(
        relation.external_user_id,
        customer("wmAJ2GCAAAXtWyujaWJHDDGi0mACAAAA")
    );
}

#[test]
fn transfer_fail() {
    let parsed = parse("change_external_contact_transfer_fail");
    assert_eq!(parsed.header.create_time, Some(1_718_086_400));
    let CallbackEvent::ExternalContact(ExternalContactEvent::TransferFailed(failed)) = parsed.event
    else {
        panic!("{:?}", parsed.event);
    };
    assert_eq!(failed.user_id, user("wangwu"));
    assert_eq!(failed.external_user_id, customer(CUSTOMER));
    assert_eq!(
        failed.fail_reason,
        Some(TransferFailReason::CustomerRefused)
    );

    let limit = fixture("change_external_contact_transfer_fail")
        .replace("customer_refused", "customer_limit_exceed");
    let CallbackEvent::ExternalContact(ExternalContactEvent::TransferFailed(failed)) =
        parse_event(&limit).unwrap().event
    else {
        panic!("not a transfer_fail");
    };
    assert_eq!(
        failed.fail_reason,
        Some(TransferFailReason::CustomerLimitExceed)
    );

    let new_reason = fixture("change_external_contact_transfer_fail")
        .replace("customer_refused", "taker_on_leave");
    let CallbackEvent::ExternalContact(ExternalContactEvent::TransferFailed(failed)) =
        parse_event(&new_reason).unwrap().event
    else {
        panic!("not a transfer_fail");
    };
    assert_eq!(
        failed.fail_reason,
        Some(TransferFailReason::Other("taker_on_leave".into()))
    );
}

#[test]
fn msg_audit_approved() {
    let event = external_contact("change_external_contact_msg_audit_approved");
    let ExternalContactEvent::MsgAuditApproved(approved) = event else {
        panic!("{event:?}")
    };
    assert_eq!(approved.user_id, user("lisi"));
    assert_eq!(approved.external_user_id, customer(CUSTOMER));
    assert_eq!(approved.welcome_code, s("CALLBACK_CODE_audit_5e0b"));
}

// --- change_external_chat ------------------------------------------------------------------------

#[test]
fn external_chat_create_and_dismiss() {
    let chat = ChatId::try_from("wrQ2pCAAAAgroupAAAA1111").unwrap();
    assert_eq!(
        external_chat("change_external_chat_create"),
        ExternalChatEvent::Created {
            chat_id: chat.clone()
        }
    );
    let dismissed = external_chat("change_external_chat_dismiss");
    assert_eq!(
        dismissed,
        ExternalChatEvent::Dismissed {
            chat_id: chat.clone()
        }
    );
    assert_eq!(dismissed.chat_id(), &chat);
}

#[test]
fn external_chat_update() {
    let event = external_chat("change_external_chat_update");
    let ExternalChatEvent::Updated(update) = event else {
        panic!("{event:?}")
    };
    assert_eq!(update.chat_id.as_str(), "wrQ2pCAAAAgroupAAAA1111");
    assert_eq!(update.update_detail, Some(ChatUpdateDetail::DelMember));
    assert_eq!(update.join_scene, None);
    assert_eq!(update.quit_scene, Some(1));
    assert_eq!(update.mem_change_cnt, Some(1));
    assert_eq!(update.mem_change_list, vec![CUSTOMER.to_owned()]);
    assert_eq!(update.last_mem_ver, s("9c3f97c2ada667dfb5f6d03308d963e1"));
    assert_eq!(update.cur_mem_ver, s("71217227bbd112ecfe3a49c482195cb4"));
}

#[test]
fn external_chat_update_with_several_members_and_nothing_optional() {
    let xml = "<xml><ToUserName>ww1</ToUserName><FromUserName>sys</FromUserName><CreateTime>1</CreateTime>\
        <MsgType>event</MsgType><Event>change_external_chat</Event><ChatId>wrX</ChatId><ChangeType>update</ChangeType>\
        <UpdateDetail>add_member</UpdateDetail><JoinScene><![CDATA[3]]></JoinScene><MemChangeCnt> 2 </MemChangeCnt>\
        <MemChangeList><Item>wmA</Item><Item><![CDATA[lisi]]></Item></MemChangeList></xml>";
    let CallbackEvent::ExternalChat(ExternalChatEvent::Updated(update)) =
        parse_event(xml).unwrap().event
    else {
        panic!("not an update");
    };
    assert_eq!(update.update_detail, Some(ChatUpdateDetail::AddMember));
    assert_eq!(update.join_scene, Some(3));
    assert_eq!(update.mem_change_cnt, Some(2));
    assert_eq!(
        update.mem_change_list,
        vec!["wmA".to_owned(), "lisi".to_owned()]
    );

    let bare = "<xml><MsgType>event</MsgType><Event>change_external_chat</Event><ChatId>wrX</ChatId><ChangeType>update</ChangeType></xml>";
    let CallbackEvent::ExternalChat(ExternalChatEvent::Updated(update)) =
        parse_event(bare).unwrap().event
    else {
        panic!("not an update");
    };
    assert_eq!(update.update_detail, None);
    assert_eq!((update.quit_scene, update.mem_change_cnt), (None, None));
    assert!(update.mem_change_list.is_empty());
}

// --- change_external_tag -------------------------------------------------------------------------

#[test]
fn external_tag_create_update_delete() {
    let ExternalTagEvent::Created(created) = external_tag("change_external_tag_create") else {
        panic!("not a create");
    };
    assert_eq!(
        created.id,
        TagId::try_from("etQ2pCAAAAtagGoldMember").unwrap()
    );
    assert_eq!(created.tag_type, Some(TagKind::Tag));
    assert_eq!(created.strategy_id, None);

    let ExternalTagEvent::Updated(updated) = external_tag("change_external_tag_update") else {
        panic!("not an update");
    };
    assert_eq!(updated.id.as_str(), "stQ2pCAAAAstrategyTagNewCustomer");
    assert_eq!(updated.strategy_id, Some(12));

    let ExternalTagEvent::Deleted(deleted) = external_tag("change_external_tag_delete") else {
        panic!("not a delete");
    };
    assert_eq!(deleted.id.as_str(), "etQ2pCAAAAtagGroupVIP");
    assert_eq!(deleted.tag_type, Some(TagKind::TagGroup));
}

#[test]
fn external_tag_shuffle_of_all_groups() {
    assert_eq!(
        external_tag("change_external_tag_shuffle"),
        ExternalTagEvent::Shuffled {
            group_id: None,
            strategy_id: None
        }
    );
    let one_group = fixture("change_external_tag_shuffle").replace(
        "<Id><![CDATA[]]></Id>",
        "<Id>etGroupA</Id><StrategyId><![CDATA[7]]></StrategyId>",
    );
    assert_eq!(
        parse_event(&one_group).unwrap().event,
        CallbackEvent::ExternalTag(ExternalTagEvent::Shuffled {
            group_id: Some(TagId::try_from("etGroupA").unwrap()),
            strategy_id: Some(7),
        })
    );
}

// --- change_contact -----------------------------------------------------------------------------

#[test]
fn create_user_with_every_documented_field() {
    let ContactEvent::StaffCreated(staff) = contact("change_contact_create_user") else {
        panic!("not create_user");
    };
    assert_eq!(staff.user_id, user("zhaoliu"));
    assert_eq!(staff.new_user_id, None);
    assert_eq!(staff.name, s("赵六"));
    assert_eq!(staff.department, Some(vec![1, 2, 3]));
    assert_eq!(staff.main_department, Some(2));
    assert_eq!(staff.is_leader_in_dept, Some(vec![true, false, false]));
    assert_eq!(
        staff.direct_leader,
        Some(vec![user("lisi"), user("wangwu")])
    );
    assert_eq!(staff.position, s("客户经理"));
    assert_eq!(staff.mobile, s("13800000000"));
    assert_eq!(staff.gender, Some(1));
    assert_eq!(staff.email, s("zhaoliu@example.com"));
    assert_eq!(staff.biz_mail, s("zhaoliu@example.wecom.work"));
    assert_eq!(staff.status, Some(1));
    assert_eq!(
        staff.avatar,
        s("https://wework.qpic.cn/wwhead/example_avatar/0")
    );
    assert_eq!(staff.alias, s("小六"));
    assert_eq!(staff.telephone, s("021-61234567"));
    assert_eq!(staff.address, s("上海市徐汇区漕溪北路88号"));
    assert_eq!(
        staff.ext_attr,
        vec![
            ExtAttr::Text {
                name: "工号".into(),
                value: "SH-0086".into()
            },
            ExtAttr::Web {
                name: "个人主页".into(),
                title: "赵六的名片".into(),
                url: "https://example.com/card/zhaoliu".into(),
            },
        ]
    );
}

#[test]
fn ext_attr_items_split_without_type_and_skip_unknown_types() {
    let xml = "<xml><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>update_user</ChangeType>\
        <UserID>u1</UserID><ExtAttr>\
        <Item><Text><Value>v1</Value></Text><Name>a</Name></Item>\
        <Item><Name>b</Name><Web><Url>https://x</Url><Title>t</Title></Web></Item>\
        <Item><Name>c</Name><Type>2</Type><Miniprogram><Title>m</Title></Miniprogram></Item>\
        <Item><Name>d</Name><Type>0</Type><Text><Value/></Text></Item>\
        </ExtAttr></xml>";
    let CallbackEvent::Contact(ContactEvent::StaffUpdated(staff)) = parse_event(xml).unwrap().event
    else {
        panic!("not update_user");
    };
    assert_eq!(
        staff.ext_attr,
        vec![
            ExtAttr::Text {
                name: "a".into(),
                value: "v1".into()
            },
            ExtAttr::Web {
                name: "b".into(),
                title: "t".into(),
                url: "https://x".into()
            },
            ExtAttr::Text {
                name: "d".into(),
                value: String::new()
            },
        ]
    );
}

#[test]
fn update_user_carries_only_what_changed() {
    let ContactEvent::StaffUpdated(staff) = contact("change_contact_update_user") else {
        panic!("not update_user");
    };
    assert_eq!(staff.user_id, user("zhaoliu"));
    assert_eq!(staff.new_user_id, Some(user("zhaoliu01")));
    assert_eq!(staff.department, Some(vec![2]));
    assert_eq!(staff.position, s("高级客户经理"));
    assert_eq!(staff.status, Some(1));
    assert_eq!((staff.name, staff.mobile, staff.gender), (None, None, None));
    assert_eq!(staff.is_leader_in_dept, None);
    assert!(staff.ext_attr.is_empty());
}

#[test]
fn delete_user_is_a_departure() {
    assert_eq!(
        contact("change_contact_delete_user"),
        ContactEvent::StaffDeparted {
            user_id: user("lisi")
        }
    );
}

#[test]
fn parties() {
    let ContactEvent::DepartmentCreated(created) = contact("change_contact_create_party") else {
        panic!("not create_party");
    };
    assert_eq!(created.id, 12);
    assert_eq!(created.name, s("华东销售部"));
    assert_eq!(created.parent_id, Some(1), "a number inside CDATA");
    assert_eq!(created.order, Some(100_000_000));

    let ContactEvent::DepartmentUpdated(updated) = contact("change_contact_update_party") else {
        panic!("not update_party");
    };
    assert_eq!(
        (updated.id, updated.parent_id, updated.order),
        (12, Some(3), None)
    );
    assert_eq!(updated.name, s("华东大区销售部"));

    assert_eq!(
        contact("change_contact_delete_party"),
        ContactEvent::DepartmentDeleted { id: 12 }
    );
}

#[test]
fn update_tag_lists() {
    let ContactEvent::TagMembersUpdated(tag) = contact("change_contact_update_tag") else {
        panic!("not update_tag");
    };
    assert_eq!(tag.tag_id, 7);
    assert_eq!(tag.add_user_items, vec![user("zhangsan"), user("lisi")]);
    assert_eq!(tag.del_user_items, vec![user("wangwu")]);
    assert_eq!(tag.add_party_items, vec![1, 12]);
    assert_eq!(tag.del_party_items, vec![3]);

    let sparse = "<xml><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>update_tag</ChangeType>\
        <TagId><![CDATA[ 9 ]]></TagId><AddUserItems>a, b,,</AddUserItems><DelPartyItems></DelPartyItems></xml>";
    let CallbackEvent::Contact(ContactEvent::TagMembersUpdated(tag)) =
        parse_event(sparse).unwrap().event
    else {
        panic!("not update_tag");
    };
    assert_eq!(tag.tag_id, 9);
    assert_eq!(tag.add_user_items, vec![user("a"), user("b")]);
    assert!(
        tag.del_user_items.is_empty()
            && tag.add_party_items.is_empty()
            && tag.del_party_items.is_empty()
    );
}

// --- msgaudit_notify, app messages and app events ------------------------------------------------

#[test]
fn msgaudit_notify() {
    let parsed = parse("msgaudit_notify");
    assert_eq!(parsed.event, CallbackEvent::MsgAuditNotify);
    assert_eq!(parsed.header.agent_id.as_deref(), Some("2000004"));
}

#[test]
fn text_message() {
    let parsed = parse("text");
    assert_eq!(parsed.header.msg_id.as_deref(), Some("7382910012345678901"));
    assert_eq!(parsed.header.agent_id.as_deref(), Some("1000002"));
    assert!(parsed.header.is_app_message());
    assert_eq!(
        parsed.event,
        CallbackEvent::Message {
            from: user("lisi"),
            message: AppMessage::Text {
                content: s("帮我查一下客户王总的标签")
            },
        }
    );
}

#[test]
fn media_messages() {
    assert_eq!(
        message("image"),
        (
            user("lisi"),
            AppMessage::Image {
                pic_url: s("https://wework.qpic.cn/wwpic/example_image/0"),
                media_id: s("2-G6nrLmr5EC3MMb_-zK1dDdzmd0p7cNliYu9V5w7o8K0"),
            }
        )
    );
    assert_eq!(
        message("voice").1,
        AppMessage::Voice {
            media_id: s("1J03FqvqN_jWX6xe8F-VJr7QHVTQsJBS6x4uwKuzyLE"),
            format: s("amr"),
        }
    );
    assert_eq!(
        message("video").1,
        AppMessage::Video {
            media_id: s("3ZOd_7nCGYZbKLJ_vLX9HW2rMH6oDhCXYyMFRVv_ZQiM"),
            thumb_media_id: s("3bKHgcNnx3LU3l4OmXp6tQuvLn4pSrCR-mmBDxRtlpDg"),
        }
    );
}

#[test]
fn location_and_link_messages() {
    assert_eq!(
        message("location").1,
        AppMessage::Location {
            latitude: Some(31.192146),
            longitude: Some(121.436737),
            scale: Some(15),
            label: s("上海市徐汇区漕溪北路88号"),
            app_type: s("wxwork"),
        }
    );
    assert_eq!(
        message("link").1,
        AppMessage::Link {
            title: s("2024 秋季新品价目表"),
            description: s("给王总的报价参考，含批发折扣"),
            url: s("https://example.com/price/2024-autumn"),
            pic_url: s("https://example.com/price/2024-autumn/cover.png"),
        }
    );
    let not_finite = fixture("location").replace("31.192146", "NaN");
    assert_eq!(
        parse_event(&not_finite),
        Err(EventError::InvalidNumber("Location_X"))
    );
}

#[test]
fn app_events() {
    assert_eq!(
        app_event("click"),
        (
            user("lisi"),
            AppEvent::Click {
                event_key: s("MY_CUSTOMERS_TODAY")
            }
        )
    );
    assert_eq!(
        app_event("view").1,
        AppEvent::View {
            url: s("https://scrm.example.com/console/customers?from=menu")
        }
    );
    assert_eq!(
        app_event("enter_agent").1,
        AppEvent::EnterAgent { event_key: None }
    );
}

// --- unknown events ------------------------------------------------------------------------------

#[test]
fn unknown_event_keeps_the_raw_xml() {
    let xml = fixture("unknown_event");
    let parsed = parse_event(&xml).unwrap();
    assert_eq!(parsed.header.event.as_deref(), Some("sys_approval_change"));
    assert_eq!(parsed.header.agent_id.as_deref(), Some("3010040"));
    assert_eq!(
        parsed.event,
        CallbackEvent::Unknown {
            msg_type: "event".into(),
            event: s("sys_approval_change"),
            change_type: None,
            raw: xml,
        }
    );
}

#[test]
fn known_event_with_unknown_change_type_is_unknown_not_an_error() {
    for (event, change_type) in [
        ("change_external_contact", "add_external_contact_v2"),
        ("change_external_chat", "archive"),
        ("change_external_tag", "merge"),
        ("change_contact", "update_user_v2"),
        ("change_contact", ""),
    ] {
        // No ids at all: an unknown event must not be judged by a known one's rules.
        let xml = format!(
            "<xml><MsgType>event</MsgType><Event>{event}</Event><ChangeType>{change_type}</ChangeType></xml>"
        );
        let parsed = parse_event(&xml).unwrap();
        assert_eq!(
            parsed.event,
            CallbackEvent::Unknown {
                msg_type: "event".into(),
                event: s(event),
                change_type: Some(change_type.into()),
                raw: xml.clone(),
            }
        );
    }
    for xml in [
        "<xml><MsgType>event</MsgType><Event>subscribe</Event></xml>",
        "<xml><MsgType>event</MsgType><Event>CLICK</Event></xml>",
        "<xml><MsgType>event</MsgType></xml>",
        "<xml><MsgType>miniprogrampage</MsgType></xml>",
        "<xml><InfoType>change_external_contact</InfoType><SuiteId>ww1</SuiteId></xml>",
        "<xml/>",
    ] {
        let parsed = parse_event(xml).unwrap();
        assert!(parsed.event.is_unknown(), "{xml}: {:?}", parsed.event);
    }
}

// --- errors --------------------------------------------------------------------------------------

#[test]
fn doctype_and_entity_bomb_are_refused() {
    let bomb = concat!(
        "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY a \"aaaaaaaaaa\">",
        "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]>",
        "<xml><MsgType>text</MsgType><FromUserName>lisi</FromUserName><Content>&c;</Content></xml>"
    );
    assert_eq!(parse_event(bomb), Err(EventError::Xml(XmlError::Doctype)));
    let undeclared =
        "<xml><MsgType>text</MsgType><FromUserName>lisi</FromUserName><Content>&c;</Content></xml>";
    assert_eq!(
        parse_event(undeclared),
        Err(EventError::Xml(XmlError::UnknownEntity))
    );
}

#[test]
fn predefined_entities_are_read() {
    let xml = "<xml><MsgType>text</MsgType><FromUserName>lisi</FromUserName><Content>a &amp; b &lt;c&gt; &#x4F60;</Content></xml>";
    let (_, message) = match parse_event(xml).unwrap().event {
        CallbackEvent::Message { from, message } => (from, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        message,
        AppMessage::Text {
            content: s("a & b <c> 你")
        }
    );
}

#[test]
fn malformed_documents_are_errors() {
    for xml in [
        "",
        "not xml",
        "<xml><MsgType>text</MsgType>",
        "<xml><A></B></xml>",
        "<xml/><xml/>",
    ] {
        assert!(
            matches!(parse_event(xml), Err(EventError::Xml(_))),
            "{xml:?}"
        );
    }
    // JSON plaintexts are for parse_header only.
    assert!(matches!(
        parse_event(r#"{"MsgType":"text"}"#),
        Err(EventError::Xml(_))
    ));
}

#[test]
fn missing_or_invalid_ids_are_errors_not_panics() {
    let base = fixture("change_external_contact_add_external_contact");
    let no_user = base.replace("<UserID><![CDATA[lisi]]></UserID>", "");
    assert_eq!(parse_event(&no_user), Err(EventError::Missing("UserID")));
    let empty_customer = base.replace(CUSTOMER, "");
    assert_eq!(
        parse_event(&empty_customer),
        Err(EventError::Missing("ExternalUserID"))
    );
    let spaced = base.replace("lisi", "li si");
    assert!(matches!(
        parse_event(&spaced),
        Err(EventError::InvalidId {
            field: "UserID",
            ..
        })
    ));
    let too_long = base.replace(CUSTOMER, &"w".repeat(200));
    assert!(matches!(
        parse_event(&too_long),
        Err(EventError::InvalidId {
            field: "ExternalUserID",
            ..
        })
    ));
    let chinese = base.replace("lisi", "李四");
    assert!(matches!(
        parse_event(&chinese),
        Err(EventError::InvalidId {
            field: "UserID",
            ..
        })
    ));

    let no_chat = fixture("change_external_chat_create").replace("wrQ2pCAAAAgroupAAAA1111", "");
    assert_eq!(parse_event(&no_chat), Err(EventError::Missing("ChatId")));
    let no_tag = fixture("change_external_tag_delete").replace("etQ2pCAAAAtagGroupVIP", "");
    assert_eq!(parse_event(&no_tag), Err(EventError::Missing("Id")));
    let bad_leader = fixture("change_contact_create_user").replace("lisi,wangwu", "lisi,王五");
    assert!(matches!(
        parse_event(&bad_leader),
        Err(EventError::InvalidId {
            field: "DirectLeader",
            ..
        })
    ));
    let anonymous = fixture("text").replace("<![CDATA[lisi]]>", "");
    assert_eq!(
        parse_event(&anonymous),
        Err(EventError::Missing("FromUserName"))
    );
}

#[test]
fn ids_and_numbers_are_trimmed() {
    let xml = fixture("change_external_contact_del_follow_user").replace(
        "<UserID><![CDATA[zhangsan]]></UserID>",
        "<UserID>\n    zhangsan\n  </UserID>",
    );
    let event = match parse_event(&xml).unwrap().event {
        CallbackEvent::ExternalContact(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(event.relation().0, &user("zhangsan"));
}

#[test]
fn bad_numbers_are_errors_and_empty_numbers_are_absent() {
    let update = fixture("change_external_chat_update");
    let bad = update.replace("<QuitScene>1</QuitScene>", "<QuitScene>one</QuitScene>");
    assert_eq!(
        parse_event(&bad),
        Err(EventError::InvalidNumber("QuitScene"))
    );
    let negative = update.replace(
        "<MemChangeCnt>1</MemChangeCnt>",
        "<MemChangeCnt>-1</MemChangeCnt>",
    );
    assert_eq!(
        parse_event(&negative),
        Err(EventError::InvalidNumber("MemChangeCnt"))
    );
    let empty = update.replace(
        "<QuitScene>1</QuitScene>",
        "<QuitScene><![CDATA[]]></QuitScene>",
    );
    let CallbackEvent::ExternalChat(ExternalChatEvent::Updated(u)) =
        parse_event(&empty).unwrap().event
    else {
        panic!("not an update");
    };
    assert_eq!(u.quit_scene, None);

    let party = fixture("change_contact_create_party");
    let bad_parent = party.replace("<![CDATA[1]]>", "<![CDATA[1a]]>");
    assert_eq!(
        parse_event(&bad_parent),
        Err(EventError::InvalidNumber("ParentId"))
    );
    let huge = party.replace("<Id>12</Id>", "<Id>99999999999</Id>");
    assert_eq!(parse_event(&huge), Err(EventError::InvalidNumber("Id")));
    let no_id = fixture("change_contact_delete_party").replace("<Id>12</Id>", "");
    assert_eq!(parse_event(&no_id), Err(EventError::Missing("Id")));
    let bad_department = fixture("change_contact_create_user").replace("1,2,3", "1,x,3");
    assert_eq!(
        parse_event(&bad_department),
        Err(EventError::InvalidNumber("Department"))
    );
    let bad_flag = fixture("change_contact_create_user").replace("1,0,0", "1,2,0");
    assert_eq!(
        parse_event(&bad_flag),
        Err(EventError::InvalidNumber("IsLeaderInDept"))
    );
}

#[test]
fn unknown_elements_and_nested_noise_are_ignored() {
    let xml = fixture("change_external_contact_add_external_contact").replace(
        "</xml>",
        "<Extra><![CDATA[x]]></Extra><Nested><UserID>someone_else</UserID></Nested><Empty/></xml>",
    );
    assert_eq!(
        parse_event(&xml).unwrap(),
        parse("change_external_contact_add_external_contact")
    );
}

#[test]
fn errors_read_well() {
    assert_eq!(
        EventError::Missing("UserID").to_string(),
        "required element UserID is missing or empty"
    );
    let err = parse_event("<xml><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>delete_user</ChangeType><UserID>a b</UserID></xml>")
        .unwrap_err();
    assert_eq!(err.to_string(), "element UserID is not a valid id");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the IdError stays in the chain"
    );
}
