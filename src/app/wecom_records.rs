//! WeCom's answers as our domain records: the one place that reads both (the domain modules never
//! see WeCom's types, the WeCom adapter never sees ours).

use wecom_sdk::ExternalUserId;
use wecom_sdk::api::{ExternalContact, FollowInfo, FollowUser, GroupChat, StaffProfile, TagGroup};

use crate::domain::customers::{CustomerProfile, RelationSnapshot};
use crate::domain::group_chats::{ChatSnapshot, MemberSnapshot};
use crate::domain::staff::StaffUpdate;
use crate::domain::tags::{LibraryGroup, LibraryTag};
use crate::platform::wecom::secs_to_ms;

/// Our profile from WeCom's `external_contact`.
pub fn customer_profile(c: &ExternalContact) -> CustomerProfile {
    CustomerProfile {
        external_user_id: c.external_userid.clone(),
        name: c.name.clone(),
        customer_type: c.contact_type,
        gender: c.gender,
        avatar: c.avatar.clone(),
        corp_name: c.corp_name.clone(),
        corp_full_name: c.corp_full_name.clone(),
        position: c.position.clone(),
        unionid: c.unionid.clone().filter(|u| !u.is_empty()),
    }
}

/// A relation from `externalcontact/get`'s `follow_user` entry.
pub fn relation_from_follow_user(
    external_user_id: &ExternalUserId,
    f: &FollowUser,
) -> RelationSnapshot {
    RelationSnapshot {
        user_id: f.userid.clone(),
        external_user_id: external_user_id.clone(),
        remark: f.remark.clone(),
        description: f.description.clone(),
        remark_corp_name: f.remark_corp_name.clone(),
        remark_mobiles: f.remark_mobiles.clone(),
        // Personal tags (type 2) have no id and are the salesperson's own: not ours to mirror.
        tag_ids: f
            .tags
            .iter()
            .filter_map(|t| t.tag_id.as_ref().map(ToString::to_string))
            .collect(),
        add_way: f.add_way,
        state: f.state.clone().filter(|s| !s.is_empty()),
        oper_user_id: Some(f.oper_userid.clone()).filter(|s| !s.is_empty()),
        added_at_ms: secs_to_ms(f.createtime),
    }
}

/// A relation from `batch/get_by_user`'s `follow_info`.
pub fn relation_from_follow_info(
    external_user_id: &ExternalUserId,
    f: &FollowInfo,
) -> RelationSnapshot {
    RelationSnapshot {
        user_id: f.userid.clone(),
        external_user_id: external_user_id.clone(),
        remark: f.remark.clone(),
        description: f.description.clone(),
        remark_corp_name: f.remark_corp_name.clone(),
        remark_mobiles: f.remark_mobiles.clone(),
        tag_ids: f.tag_id.iter().map(ToString::to_string).collect(),
        add_way: f.add_way,
        state: f.state.clone().filter(|s| !s.is_empty()),
        oper_user_id: Some(f.oper_userid.clone()).filter(|s| !s.is_empty()),
        added_at_ms: secs_to_ms(f.createtime),
    }
}

/// The tag library from `get_corp_tag_list`.
pub fn tag_library(groups: &[TagGroup]) -> Vec<LibraryGroup> {
    groups
        .iter()
        .filter(|g| !g.deleted)
        .map(|g| LibraryGroup {
            group_id: g.group_id.to_string(),
            name: g.group_name.clone(),
            sort_order: i64::from(g.order),
            created_at_ms: secs_to_ms(g.create_time),
            tags: g
                .tag
                .iter()
                .filter(|t| !t.deleted)
                .map(|t| LibraryTag {
                    tag_id: t.id.to_string(),
                    name: t.name.clone(),
                    sort_order: i64::from(t.order),
                    created_at_ms: secs_to_ms(t.create_time),
                })
                .collect(),
        })
        .collect()
}

/// A chat snapshot from `groupchat/get`.
pub fn chat_snapshot(g: &GroupChat) -> ChatSnapshot {
    ChatSnapshot {
        chat_id: g.chat_id.clone(),
        name: g.name.clone(),
        owner_user_id: g.owner.clone(),
        notice: g.notice.clone(),
        created_at_ms: secs_to_ms(g.create_time),
        member_version: g.member_version.clone(),
        members: g
            .member_list
            .iter()
            .map(|m| MemberSnapshot {
                member_id: m.userid.clone(),
                member_type: m.member_type,
                name: m.name.clone(),
                group_nickname: m.group_nickname.clone(),
                join_scene: m.join_scene,
                joined_at_ms: secs_to_ms(m.join_time),
            })
            .collect(),
    }
}

/// `update` completed with what `user/get` says about the member: its non-empty fields win, and
/// the departments led are read from `is_leader_in_dept` (parallel to `department`).
pub fn with_profile(mut update: StaffUpdate, profile: &StaffProfile) -> StaffUpdate {
    update.name = Some(profile.name.clone())
        .filter(|n| !n.is_empty())
        .or(update.name);
    if !profile.department.is_empty() {
        update.departments = Some(profile.department.clone());
        update.leads_departments = Some(
            profile
                .department
                .iter()
                .zip(&profile.is_leader_in_dept)
                .filter_map(|(&d, &leader)| (leader == 1).then_some(d))
                .collect(),
        );
    }
    update.main_department = profile.main_department.or(update.main_department);
    update.position = Some(profile.position.clone())
        .filter(|p| !p.is_empty())
        .or(update.position);
    update.status = Some(profile.status).filter(|&s| s != 0).or(update.status);
    update.direct_leaders = Some(profile.direct_leader.clone());
    update
}
