-- Compliance alerts (src/alerts): deletions of customers, customers leaving, mass deletion,
-- relations vanished without an event, and content rules on messages. One alert per burst
-- (staff member + trigger + rule while the burst window is open) carries all its evidence; its
-- lifecycle (open → acknowledged → resolved | false_positive, reopenable) is kept in alert_event.

-- Who manages whom, for "alert the staff member's manager": user/get's direct_leader and the
-- departments the member leads (is_leader_in_dept), comma-separated.
ALTER TABLE staff ADD COLUMN direct_leaders TEXT NOT NULL DEFAULT '';
ALTER TABLE staff ADD COLUMN leads_departments TEXT NOT NULL DEFAULT '';

-- kind: staff_deleted_customer | customer_deleted_staff | mass_deletion | relation_vanished |
-- content. burst_key is set while the burst is open (new evidence joins it) and cleared when the
-- window has passed, so the next burst gets a new alert.
CREATE TABLE alert (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    category TEXT,
    rule_id TEXT,
    staff_user_id TEXT NOT NULL DEFAULT '',
    external_user_id TEXT,
    title TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open',
    burst_key TEXT,
    evidence_count BIGINT NOT NULL DEFAULT 0,
    first_at_ms BIGINT NOT NULL,
    last_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (corp_id, burst_key)
);
CREATE INDEX alert_corp_state ON alert (corp_id, state, id);
CREATE INDEX alert_corp_staff ON alert (corp_id, staff_user_id, id);

-- What an alert is made of: one row per message or event (source_ref "inbox:<id>",
-- "sync:<job>:<user>:<ext>", "archive:<msgid>"…) and trigger ("deletion", "loss", "vanished",
-- "content:<rule>"), stored once however often it is processed.
CREATE TABLE alert_evidence (
    id BIGSERIAL PRIMARY KEY,
    alert_id BIGINT NOT NULL,
    corp_id TEXT NOT NULL,
    source_ref TEXT NOT NULL,
    trigger_key TEXT NOT NULL,
    external_user_id TEXT,
    text TEXT,
    spans TEXT NOT NULL DEFAULT '[]',
    detail TEXT NOT NULL DEFAULT '{}',
    at_ms BIGINT NOT NULL,
    UNIQUE (corp_id, source_ref, trigger_key)
);
CREATE INDEX alert_evidence_alert ON alert_evidence (alert_id, id);

-- The lifecycle, append-only: created, escalated, acknowledged, resolved, false_positive, reopened.
CREATE TABLE alert_event (
    id BIGSERIAL PRIMARY KEY,
    alert_id BIGINT NOT NULL,
    corp_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    comment TEXT NOT NULL DEFAULT '',
    at_ms BIGINT NOT NULL
);
CREATE INDEX alert_event_alert ON alert_event (alert_id, id);

-- Notifications of an alert: one outbox item per (alert, reason, recipient), or the reason a
-- recipient was skipped (left the company).
CREATE TABLE alert_delivery (
    id BIGSERIAL PRIMARY KEY,
    alert_id BIGINT NOT NULL,
    corp_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    reason TEXT NOT NULL,
    outbox_id BIGINT,
    skipped TEXT,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (alert_id, reason, recipient)
);

-- The last message of each sender per conversation, so a phrase split over two messages matches.
CREATE TABLE scan_window (
    corp_id TEXT NOT NULL,
    conversation TEXT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, conversation, sender)
);
