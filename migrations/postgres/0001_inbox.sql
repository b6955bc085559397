-- The inbox: every callback WeCom sent, decrypted, stored before we answer "success".
-- Workers (a later migration adds their columns' indexes as needed) claim rows by lease.
-- dedup_key: "msg:<agent_id>:<MsgId>" for app messages, "ev:<CreateTime, 10 digits>:<sha256 hex of
-- the plaintext>" for events (WeCom's own FromUserName+CreateTime advice drops distinct events sent
-- in one second). The time prefix keeps inserts at the right edge of the unique index.
CREATE TABLE inbox (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    app TEXT NOT NULL,
    agent_id TEXT,
    dedup_key TEXT NOT NULL,
    msg_type TEXT NOT NULL,
    event TEXT,
    change_type TEXT,
    create_time BIGINT,
    received_at_ms BIGINT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    processed_at_ms BIGINT,
    UNIQUE (corp_id, dedup_key)
);

-- Workers look for the oldest pending row; operators list the newest of one corp.
CREATE INDEX inbox_state_id ON inbox (state, id);
CREATE INDEX inbox_corp_id ON inbox (corp_id, id);
