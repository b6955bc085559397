-- The customer search finds a customer by the phone numbers of their relations' remarks too, and
-- the date filters read relations by time (see the SQLite twin of this migration for the why).

CREATE INDEX follow_relation_added ON follow_relation (corp_id, added_at_ms);
CREATE INDEX follow_relation_ended ON follow_relation (corp_id, ended_at_ms);

CREATE OR REPLACE FUNCTION customer_search_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'customer' THEN
        DELETE FROM customer_search
        WHERE corp_id = OLD.corp_id AND external_user_id = OLD.external_user_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO customer_search (corp_id, external_user_id, text)
        SELECT c.corp_id, c.external_user_id, lower(c.name) || E'\n' || COALESCE((SELECT
            string_agg(lower(r.remark) || E'\n' || r.remark_mobiles, E'\n') FROM follow_relation r
            WHERE r.corp_id = c.corp_id AND r.external_user_id = c.external_user_id
            AND r.status = 'active'), '')
        FROM customer c WHERE c.corp_id = OLD.corp_id AND c.external_user_id = OLD.external_user_id
        ON CONFLICT (corp_id, external_user_id) DO UPDATE SET text = EXCLUDED.text;
    ELSE
        INSERT INTO customer_search (corp_id, external_user_id, text)
        SELECT c.corp_id, c.external_user_id, lower(c.name) || E'\n' || COALESCE((SELECT
            string_agg(lower(r.remark) || E'\n' || r.remark_mobiles, E'\n') FROM follow_relation r
            WHERE r.corp_id = c.corp_id AND r.external_user_id = c.external_user_id
            AND r.status = 'active'), '')
        FROM customer c WHERE c.corp_id = NEW.corp_id AND c.external_user_id = NEW.external_user_id
        ON CONFLICT (corp_id, external_user_id) DO UPDATE SET text = EXCLUDED.text;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER customer_search_relation_change ON follow_relation;
CREATE TRIGGER customer_search_relation_change
AFTER UPDATE OF remark, remark_mobiles, status ON follow_relation
FOR EACH ROW WHEN (OLD.remark IS DISTINCT FROM NEW.remark
    OR OLD.remark_mobiles IS DISTINCT FROM NEW.remark_mobiles
    OR OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION customer_search_changed();

-- Rebuilt rather than updated in place: an UPDATE of every row would leave as many dead ones
-- behind for the search to scan until autovacuum came.
TRUNCATE customer_search;
INSERT INTO customer_search (corp_id, external_user_id, text)
SELECT c.corp_id, c.external_user_id, lower(c.name) || E'\n' || COALESCE((SELECT
    string_agg(lower(r.remark) || E'\n' || r.remark_mobiles, E'\n') FROM follow_relation r
    WHERE r.corp_id = c.corp_id AND r.external_user_id = c.external_user_id
    AND r.status = 'active'), '')
FROM customer c;

ANALYZE customer_search;
ANALYZE follow_relation;
