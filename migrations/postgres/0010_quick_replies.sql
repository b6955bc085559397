-- 话术库 (quick replies): folders of prepared text snippets that a salesperson sends into a customer
-- chat from the sidebar; admins manage them through the API. Owned by src/domain/quick_replies.rs.
-- Rows are deleted for real: nothing else refers to them, and the audit log keeps who changed what.
-- A corp holds at most 100 folders and 2000 snippets (checked by the store), so the library is read
-- whole per corp and sorted in memory: the indexes below serve lookups, counts and uniqueness.

CREATE TABLE quick_reply_folder (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- Display order: position, then id (ties keep creation order).
    position BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    -- Salespeople tell folders apart by name: one of each name per corp.
    UNIQUE (corp_id, name),
    -- The target of quick_reply's foreign key, so a snippet's folder is always of the same corp.
    UNIQUE (corp_id, id)
);

CREATE TABLE quick_reply (
    id BIGSERIAL PRIMARY KEY,
    corp_id TEXT NOT NULL,
    folder_id BIGINT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    -- Display order inside the folder: position, then id.
    position BIGINT NOT NULL DEFAULT 0,
    -- How often salespeople sent it, and when last (set by the sidebar's send, not by edits).
    use_count BIGINT NOT NULL DEFAULT 0,
    last_used_at_ms BIGINT,
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    -- No ON DELETE CASCADE: deleting a folder that still holds snippets is refused unless the
    -- caller asks for the cascade, which the store then does itself (and audits).
    FOREIGN KEY (corp_id, folder_id) REFERENCES quick_reply_folder (corp_id, id),
    -- One title per folder. Its prefixes also serve the per-corp count, the per-folder count and
    -- last position, and the foreign key's check when a folder is deleted.
    UNIQUE (corp_id, folder_id, title)
);
