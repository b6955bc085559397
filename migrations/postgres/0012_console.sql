-- The console (控制台) for admins and compliance staff. Accounts of its own, so that a fresh install
-- can be set up before WeCom is: a password hashed with Argon2id (a PHC string), never the password.
-- An account acts in one corp with one role; disabling it ends its sessions.
CREATE TABLE console_account (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    disabled_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Web sessions now serve two surfaces: the sidebar (a salesperson signed in through WeCom) and
-- the console (an account, or later a member signed in through WeCom's web login). A session
-- carries its role, and the account it belongs to so that disabling the account ends it.
ALTER TABLE web_session ADD COLUMN surface TEXT NOT NULL DEFAULT 'sidebar';
ALTER TABLE web_session ADD COLUMN role TEXT NOT NULL DEFAULT 'sales';
ALTER TABLE web_session ADD COLUMN account TEXT;
CREATE INDEX web_session_account ON web_session (account);

-- The console's audit page filters by time within a corp (audit_log_corp serves id order).
CREATE INDEX audit_log_corp_time ON audit_log (corp_id, at_ms);
