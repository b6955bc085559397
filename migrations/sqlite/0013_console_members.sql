-- Members of the corp who sign in to the console through WeCom's web login (扫码登录). Without a
-- row here a member's console role follows the directory: the leader of a department is a
-- manager of it, any other member with 客户联系 a salesperson (their own customers only). An admin
-- grants a role here (admin, compliance, manager, sales) or `none` to keep a member out.
CREATE TABLE console_member (
    corp_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at_ms BIGINT NOT NULL,
    PRIMARY KEY (corp_id, user_id)
);

-- An admin lists and ends the sessions of a corp; "sign out everywhere" ends a member's.
CREATE INDEX web_session_corp_user ON web_session (corp_id, user_id);
