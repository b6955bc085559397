-- 规则: each corp's content-rule library, edited in the console. Owned by src/domain/rule_book.
-- Every save is a new row and rows are never changed, so the history is the table: the newest
-- version of a corp is its library, an older one can be looked at and restored (by saving its
-- source again as a new version). A corp without rows scans with the instance's library
-- ([alerts] rules_file, or the bundled default).
CREATE TABLE rule_library (
    corp_id TEXT NOT NULL,
    -- 1, 2, 3 … per corp; the scanners' caches compare only this number to notice a new save.
    version BIGINT NOT NULL,
    -- The TOML as saved (checked by compiling it before the row is written).
    source TEXT NOT NULL,
    -- Who saved it (`console:<account>`, a staff member, `apikey:<id>`).
    author TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    -- The version whose source this one restored, for a revert.
    reverted_from BIGINT,
    -- The quality gate's figures on the bundled labeled set when it was saved (JSON).
    eval TEXT NOT NULL DEFAULT '{}',
    created_at_ms BIGINT NOT NULL,
    -- Two saves racing for the same number: one of them fails and is told to reload.
    PRIMARY KEY (corp_id, version)
);

-- Who is told of a content alert of a category, besides the corp's alert recipients and the rule's
-- own: a list of WeCom userids per (corp, category), comma-separated as staff lists are.
CREATE TABLE rule_recipient (
    corp_id TEXT NOT NULL,
    category TEXT NOT NULL,
    user_ids TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, category)
);
