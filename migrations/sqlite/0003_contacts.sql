-- Customers, follow relations, staff, departments, the corp tag library and group chats, as the
-- inbox workers and the reconciliation see them. Every table carries corp_id; WeCom ids are TEXT.
-- History is kept: relations are never deleted, only ended (who, when, why), because the alert and
-- reassignment features read that history.

-- 成员. departed_at_ms is set on delete_user (离职) and never cleared by later updates.
CREATE TABLE staff (
    corp_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    departments TEXT NOT NULL DEFAULT '',
    main_department BIGINT,
    position TEXT NOT NULL DEFAULT '',
    status BIGINT NOT NULL DEFAULT 1,
    has_customer_contact BIGINT NOT NULL DEFAULT 0,
    departed_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, user_id)
);

CREATE TABLE department (
    corp_id TEXT NOT NULL,
    id BIGINT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    parent_id BIGINT,
    sort_order BIGINT NOT NULL DEFAULT 0,
    deleted_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, id)
);

-- 客户: the profile WeCom returns for an external contact (shared by all its follow relations).
CREATE TABLE customer (
    corp_id TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    customer_type BIGINT NOT NULL DEFAULT 0,
    gender BIGINT NOT NULL DEFAULT 0,
    avatar TEXT NOT NULL DEFAULT '',
    corp_name TEXT NOT NULL DEFAULT '',
    corp_full_name TEXT NOT NULL DEFAULT '',
    position TEXT NOT NULL DEFAULT '',
    unionid TEXT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, external_user_id)
);

-- 跟进关系: one staff member following one customer. status: active | deleted_by_staff (员工删客户)
-- | deleted_by_customer (客户删员工; WeCom keeps listing it) | transferred (moved away by 继承)
-- | vanished (gone from WeCom without any event; found by reconciliation).
-- last_seen_job: the reconciliation job that last saw it in WeCom, so a resumed job can tell which
-- relations it has not seen.
CREATE TABLE follow_relation (
    corp_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    remark TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    remark_corp_name TEXT NOT NULL DEFAULT '',
    remark_mobiles TEXT NOT NULL DEFAULT '[]',
    tag_ids TEXT NOT NULL DEFAULT '[]',
    add_way BIGINT NOT NULL DEFAULT 0,
    state TEXT,
    oper_user_id TEXT,
    added_at_ms BIGINT,
    status TEXT NOT NULL DEFAULT 'active',
    ended_at_ms BIGINT,
    last_seen_job BIGINT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, user_id, external_user_id)
);
CREATE INDEX follow_relation_customer ON follow_relation (corp_id, external_user_id);

-- What happened to a relation, from which source. dedup makes a replayed event or a resumed
-- reconciliation record its change once.
CREATE TABLE relation_event (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    corp_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    change TEXT NOT NULL,
    source TEXT NOT NULL,
    inbox_id BIGINT,
    job_id BIGINT,
    detail TEXT NOT NULL DEFAULT '',
    at_ms BIGINT NOT NULL,
    dedup TEXT NOT NULL,
    UNIQUE (corp_id, dedup)
);
CREATE INDEX relation_event_relation ON relation_event (corp_id, user_id, external_user_id, id);

-- The corp tag library (企业客户标签), mirrored from get_corp_tag_list and change_external_tag.
CREATE TABLE tag_group (
    corp_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    name TEXT NOT NULL,
    sort_order BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT,
    deleted_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, group_id)
);

CREATE TABLE tag (
    corp_id TEXT NOT NULL,
    tag_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    name TEXT NOT NULL,
    sort_order BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT,
    deleted_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, tag_id)
);

-- 客户群 and its members. member_version pairs with the callbacks' CurMemVer.
CREATE TABLE group_chat (
    corp_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    owner_user_id TEXT NOT NULL DEFAULT '',
    notice TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT,
    status BIGINT NOT NULL DEFAULT 0,
    member_version TEXT NOT NULL DEFAULT '',
    dismissed_at_ms BIGINT,
    last_seen_job BIGINT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, chat_id)
);

CREATE TABLE group_chat_member (
    corp_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    member_type BIGINT NOT NULL DEFAULT 0,
    name TEXT NOT NULL DEFAULT '',
    group_nickname TEXT NOT NULL DEFAULT '',
    join_scene BIGINT NOT NULL DEFAULT 0,
    joined_at_ms BIGINT,
    left_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, chat_id, member_id)
);

-- Long-running, resumable jobs (full sync now; transfers and archive pulls later). The cursor is
-- the job's own JSON checkpoint; a job whose lease expired (its instance died) is resumed by
-- another from that checkpoint.
CREATE TABLE job (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    corp_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    cursor TEXT NOT NULL DEFAULT '{}',
    progress_done BIGINT NOT NULL DEFAULT 0,
    progress_total BIGINT NOT NULL DEFAULT 0,
    summary TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    lease_owner TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    finished_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX job_corp_kind ON job (corp_id, kind, id);
