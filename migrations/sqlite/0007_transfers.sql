-- Reassignment of customers and group chats (离职继承 / 在职继承, src/transfers).
--
-- A transfer_job is one plan: from one handover member to one or more takers, in resigned or
-- on-job mode. Its items are every customer and group chat of the plan with its taker and state:
--   planned → sent → waiting → done | refused | failed   (customers)
--   planned | scheduled → sent → done | failed             (group chats; scheduled: over today's
--                                                           300-groups budget, not before not_before_ms)
-- outbox_id is the outbox call that carries the item; errcode and reason say why an item failed;
-- flags are what the preview predicted (taker_is_handover, transferred_twice_90d, …).
CREATE TABLE transfer_job (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    corp_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    handover_user_id TEXT NOT NULL,
    takers TEXT NOT NULL DEFAULT '[]',
    strategy TEXT NOT NULL,
    handover_note TEXT NOT NULL DEFAULT '',
    success_msg TEXT,
    state TEXT NOT NULL DEFAULT 'planned',
    notice TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    started_by TEXT,
    started_at_ms BIGINT,
    finished_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX transfer_job_corp ON transfer_job (corp_id, state, id);

CREATE TABLE transfer_item (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    corp_id TEXT NOT NULL,
    job_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    handover_user_id TEXT NOT NULL,
    takeover_user_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'planned',
    flags TEXT NOT NULL DEFAULT '[]',
    errcode BIGINT,
    reason TEXT,
    outbox_id BIGINT,
    not_before_ms BIGINT NOT NULL DEFAULT 0,
    sent_at_ms BIGINT,
    takeover_at_ms BIGINT,
    next_poll_ms BIGINT,
    carried_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (job_id, kind, target_id)
);
CREATE INDEX transfer_item_job ON transfer_item (job_id, state, kind, takeover_user_id);
CREATE INDEX transfer_item_target ON transfer_item (corp_id, target_id, state);
CREATE INDEX transfer_item_outbox ON transfer_item (outbox_id);

-- The customers WeCom holds for reassignment (get_unassigned_list), as last listed.
CREATE TABLE unassigned_customer (
    corp_id TEXT NOT NULL,
    handover_user_id TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    dimission_at_ms BIGINT,
    listed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, handover_user_id, external_user_id)
);

-- A job's audit trail is read by target.
CREATE INDEX audit_log_target ON audit_log (corp_id, target, id);

-- The audit trail is append-only.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
