-- Sessions of people signed in through WeCom (the salesperson's sidebar): the browser holds a
-- random token in an HttpOnly cookie, we keep its SHA-256 so that a copy of this table signs
-- nobody in. Any instance reads them. Expiry: idle and absolute, from [sidebar] settings.
CREATE TABLE web_session (
    token_hash TEXT PRIMARY KEY,
    corp_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    last_seen_at_ms BIGINT NOT NULL
);
CREATE INDEX web_session_seen ON web_session (last_seen_at_ms);
