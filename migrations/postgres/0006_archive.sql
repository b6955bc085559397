-- Chat archive (会话内容存档): the seq cursor per corp, the messages, what could not be decrypted
-- (with why, kept until a key fixes it), media downloads and who read what.

CREATE TABLE archive_cursor (
    corp_id TEXT PRIMARY KEY,
    -- Every record up to here is stored or recorded as undecryptable.
    seq BIGINT NOT NULL DEFAULT 0,
    -- The largest seq the library has returned.
    newest_seen_seq BIGINT NOT NULL DEFAULT 0,
    newest_msg_time_ms BIGINT,
    last_pull_at_ms BIGINT,
    last_success_at_ms BIGINT,
    last_error TEXT,
    last_error_at_ms BIGINT,
    worker_restarts BIGINT NOT NULL DEFAULT 0,
    last_restart_reason TEXT,
    stall_alerted_at_ms BIGINT,
    -- The last msgaudit_notify (any instance may receive it; the puller of the corp looks here).
    notified_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE archive_message (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    msgid TEXT NOT NULL,
    action TEXT NOT NULL,
    msgtype TEXT NOT NULL,
    sender TEXT NOT NULL,
    sender_kind TEXT NOT NULL,
    receivers TEXT NOT NULL,
    room_id TEXT,
    msg_time_ms BIGINT NOT NULL,
    -- A 1:1 chat between a staff member and a customer links to both.
    staff_id TEXT,
    external_userid TEXT,
    text TEXT,
    payload TEXT NOT NULL,
    revoked_at_ms BIGINT,
    revoked_by TEXT,
    scanned BOOLEAN NOT NULL DEFAULT FALSE,
    stored_at_ms BIGINT NOT NULL,
    UNIQUE (corp_id, msgid)
);
CREATE INDEX archive_message_time ON archive_message (corp_id, msg_time_ms);
CREATE INDEX archive_message_pair ON archive_message (corp_id, staff_id, external_userid, msg_time_ms);
CREATE INDEX archive_message_room ON archive_message (corp_id, room_id, msg_time_ms);
CREATE INDEX archive_message_unscanned ON archive_message (corp_id, id) WHERE NOT scanned;

CREATE TABLE archive_undecryptable (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    msgid TEXT NOT NULL,
    publickey_ver BIGINT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    encrypt_random_key TEXT NOT NULL,
    encrypt_chat_msg TEXT NOT NULL,
    attempts INT NOT NULL DEFAULT 1,
    recorded_at_ms BIGINT NOT NULL,
    resolved_at_ms BIGINT,
    UNIQUE (corp_id, msgid)
);
CREATE INDEX archive_undecryptable_open ON archive_undecryptable (corp_id, id) WHERE resolved_at_ms IS NULL;

CREATE TABLE archive_media (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    sdkfileid TEXT NOT NULL,
    msgid TEXT NOT NULL,
    kind TEXT NOT NULL,
    md5sum TEXT,
    size BIGINT,
    file_name TEXT,
    -- pending | done | too_large | failed
    state TEXT NOT NULL,
    next_index TEXT NOT NULL DEFAULT '',
    bytes_done BIGINT NOT NULL DEFAULT 0,
    attempts INT NOT NULL DEFAULT 0,
    error TEXT,
    path TEXT,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (corp_id, sdkfileid)
);
CREATE INDEX archive_media_pending ON archive_media (state, id);

-- Immutable: who read which archived content, when.
CREATE TABLE archive_read (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    corp_id TEXT NOT NULL,
    what TEXT NOT NULL,
    target TEXT NOT NULL,
    items BIGINT NOT NULL
);
CREATE INDEX archive_read_time ON archive_read (corp_id, at_ms);
