-- The console's pages at scale (benches/console.rs: 100,000 customers, 10,000 alerts, 420,000
-- callbacks over 7 days, 1,000,000 archived messages; the figures are in docs/benchmarks.md).

-- The overview charts the last 24 hours of callbacks per hour and state (inbox::hourly groups by
-- received_at_ms / 3600000). Keyed by that very expression, the chart is one range of the index
-- read in group order, without a sort (before: a scan of the whole inbox). received_at_ms is
-- included because PostgreSQL answers from the index alone only when the column of an indexed
-- expression is in it too.
CREATE INDEX inbox_corp_hour ON inbox (corp_id, (received_at_ms / 3600000), state)
    INCLUDE (received_at_ms);

-- The alerts inbox lists a corp's alerts newest first with any filter applied on the way
-- (alerts::list): the newest page is the first 50 entries.
CREATE INDEX alert_corp_id ON alert (corp_id, id);

-- The customer search (customers::list_customers) matches a query anywhere in a customer's name
-- or in the remark of an active relation: LIKE '%…%', which no B-tree index serves. Instead of a
-- lookup of every customer's relations, one narrow row per customer holds what is searched,
-- lower-cased as the query compares it: the name, then each active relation's remark, one per line.
-- A scan of it is a few MB; a common word stops it after the page is full. Kept up to date by the
-- triggers below in the transaction of every change to a name, a remark or a relation's status,
-- whichever module makes it. (pg_trgm would serve queries of three characters and more, but not
-- the one- and two-character names people type, and not every server has it.)
CREATE TABLE customer_search (
    corp_id TEXT NOT NULL,
    external_user_id TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (corp_id, external_user_id)
);

INSERT INTO customer_search (corp_id, external_user_id, text)
SELECT c.corp_id, c.external_user_id, lower(c.name) || E'\n' || COALESCE((SELECT
    string_agg(lower(r.remark), E'\n') FROM follow_relation r WHERE r.corp_id = c.corp_id
    AND r.external_user_id = c.external_user_id AND r.status = 'active'), '')
FROM customer c;

-- The changed customer's row again, from its name and its relations (none once the customer is
-- deleted, nor while it is not stored). PL/pgSQL keeps the statements' plans for the session, and
-- an upsert rewrites the row in place (its text is in no index).
CREATE FUNCTION customer_search_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'customer' THEN
        DELETE FROM customer_search
        WHERE corp_id = OLD.corp_id AND external_user_id = OLD.external_user_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO customer_search (corp_id, external_user_id, text)
        SELECT c.corp_id, c.external_user_id, lower(c.name) || E'\n' || COALESCE((SELECT
            string_agg(lower(r.remark), E'\n') FROM follow_relation r WHERE r.corp_id = c.corp_id
            AND r.external_user_id = c.external_user_id AND r.status = 'active'), '')
        FROM customer c WHERE c.corp_id = OLD.corp_id AND c.external_user_id = OLD.external_user_id
        ON CONFLICT (corp_id, external_user_id) DO UPDATE SET text = EXCLUDED.text;
    ELSE
        INSERT INTO customer_search (corp_id, external_user_id, text)
        SELECT c.corp_id, c.external_user_id, lower(c.name) || E'\n' || COALESCE((SELECT
            string_agg(lower(r.remark), E'\n') FROM follow_relation r WHERE r.corp_id = c.corp_id
            AND r.external_user_id = c.external_user_id AND r.status = 'active'), '')
        FROM customer c WHERE c.corp_id = NEW.corp_id AND c.external_user_id = NEW.external_user_id
        ON CONFLICT (corp_id, external_user_id) DO UPDATE SET text = EXCLUDED.text;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER customer_search_customer AFTER INSERT OR DELETE ON customer
FOR EACH ROW EXECUTE FUNCTION customer_search_changed();
CREATE TRIGGER customer_search_customer_name AFTER UPDATE OF name ON customer
FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name) EXECUTE FUNCTION customer_search_changed();

-- A relation's customer may not be stored yet (its row comes with the customer's insert then).
CREATE TRIGGER customer_search_relation AFTER INSERT OR DELETE ON follow_relation
FOR EACH ROW EXECUTE FUNCTION customer_search_changed();
-- Only when what is searched changed: a relation is written again (same remark, same status) on
-- every event and every reconciliation.
CREATE TRIGGER customer_search_relation_change AFTER UPDATE OF remark, status ON follow_relation
FOR EACH ROW WHEN (OLD.remark IS DISTINCT FROM NEW.remark OR OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION customer_search_changed();

-- How many messages a corp has stored (archive::store::counts, for the archive's status and its
-- gauges after every pull): a counter on the cursor row, added to in the transaction that stores
-- them, instead of a count of a million index entries per million messages.
ALTER TABLE archive_cursor ADD COLUMN messages BIGINT NOT NULL DEFAULT 0;
UPDATE archive_cursor SET messages = (SELECT COUNT(*) FROM archive_message m
    WHERE m.corp_id = archive_cursor.corp_id);

-- Statistics now, not when autovacuum comes by: the first searches and charts after the upgrade
-- are planned with them.
ANALYZE customer_search;
ANALYZE inbox;
