-- The customer record and the outbox: every call that changes WeCom is written here as an intent in
-- the same transaction as our own change, then delivered by the outbox workers (src/outbox).
-- Also: personal tags, auto-tagging rules, who set which tag, follow-up notes with their history,
-- reminders, lifecycle stages, API keys and the audit log of writes.

-- The outbox. Items with the same (corp_id, order_key) are delivered one at a time in id order
-- (order_key "customer:<external_userid>", "tag_library", "message:<userid>"). state: pending |
-- done | dead | cancelled. lease_until_ms doubles as "not before" while a retry waits.
-- idempotency_key: the same intent enqueued twice (a replayed event, a retried API request) is
-- stored once.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    order_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    idempotency_key TEXT,
    actor TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    result TEXT,
    created_at_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    dead_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (corp_id, idempotency_key)
);
CREATE INDEX outbox_state_id ON outbox (state, id, lease_until_ms);
CREATE INDEX outbox_order ON outbox (corp_id, order_key, state, id);

-- Which rule or person set a corp tag on a relation (WeCom only knows that it is there).
CREATE TABLE tag_assignment (
    corp_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    tag_id TEXT NOT NULL,
    rule_id BIGINT,
    actor TEXT NOT NULL DEFAULT '',
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, user_id, external_user_id, tag_id)
);

-- Personal tags: ours only, never sent to WeCom; set on a customer (every owner sees them).
CREATE TABLE personal_tag (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    name TEXT NOT NULL,
    color TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    deleted_at_ms BIGINT
);
CREATE UNIQUE INDEX personal_tag_name ON personal_tag (corp_id, name) WHERE deleted_at_ms IS NULL;

CREATE TABLE customer_personal_tag (
    corp_id TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    tag_id BIGINT NOT NULL,
    rule_id BIGINT,
    actor TEXT NOT NULL DEFAULT '',
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, external_user_id, tag_id)
);

-- Auto-tagging: trigger channel (the 联系我 state), group_join (a chat id) or keyword (archived
-- chat text); patterns is a JSON array; the tags to apply are JSON arrays of ids.
CREATE TABLE auto_tag_rule (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    name TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    patterns TEXT NOT NULL DEFAULT '[]',
    corp_tag_ids TEXT NOT NULL DEFAULT '[]',
    personal_tag_ids TEXT NOT NULL DEFAULT '[]',
    enabled BIGINT NOT NULL DEFAULT 1,
    created_by TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    deleted_at_ms BIGINT
);
CREATE INDEX auto_tag_rule_corp ON auto_tag_rule (corp_id, trigger_kind);

-- 跟进记录: append-only notes on a customer; an edit adds a revision, the note shows the newest.
CREATE TABLE note (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    attachment_url TEXT,
    revision BIGINT NOT NULL DEFAULT 1,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX note_customer ON note (corp_id, external_user_id, id);

CREATE TABLE note_revision (
    id BIGSERIAL PRIMARY KEY,
    note_id BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    body TEXT NOT NULL,
    attachment_url TEXT,
    edited_by TEXT NOT NULL,
    edited_at_ms BIGINT NOT NULL,
    UNIQUE (note_id, revision)
);

-- Follow-up reminders. state: open | done | cancelled. notified_at_ms: when the due reminder was
-- handed to the outbox (NULL again after a snooze). dedup: the default reminders of one relation
-- are created once however often its add event is replayed.
CREATE TABLE reminder (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    assignee TEXT NOT NULL,
    title TEXT NOT NULL,
    due_at_ms BIGINT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open',
    snoozes BIGINT NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT 'manual',
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    done_at_ms BIGINT,
    done_by TEXT,
    notified_at_ms BIGINT,
    outbox_id BIGINT,
    dedup TEXT,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (corp_id, dedup)
);
CREATE INDEX reminder_due ON reminder (state, due_at_ms);
CREATE INDEX reminder_assignee ON reminder (corp_id, assignee, state, due_at_ms);
CREATE INDEX reminder_customer ON reminder (corp_id, external_user_id);

-- Per-corp settings edited through the API (the lifecycle stages: key 'stages', a JSON array).
CREATE TABLE corp_setting (
    corp_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_by TEXT NOT NULL DEFAULT '',
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, name)
);

-- Lifecycle stage of a customer (新客户 → 意向 → 成交 → 复购 / 流失) and every change of it.
CREATE TABLE customer_stage (
    corp_id TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, external_user_id)
);

CREATE TABLE stage_change (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    from_stage TEXT,
    to_stage TEXT NOT NULL,
    actor TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX stage_change_customer ON stage_change (corp_id, external_user_id, id);

-- API keys: shown once, stored as SHA-256 of the whole key; key_prefix finds the row.
-- role: admin | compliance | sales; staff_user_id: the staff member the key acts as (required for
-- sales: it reaches only that member's customers).
CREATE TABLE api_key (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL,
    staff_user_id TEXT,
    key_prefix TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT,
    last_used_at_ms BIGINT
);

-- Every write through the API (and later every read of archived chat): who, what, when.
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}',
    at_ms BIGINT NOT NULL
);
CREATE INDEX audit_log_corp ON audit_log (corp_id, id);
