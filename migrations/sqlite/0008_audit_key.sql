-- Which API key a change was made with, besides the staff member it acted for (`actor`): two
-- keys of one salesperson, or a leaked key, can be told apart. NULL for changes made by the
-- server itself or the command line.
ALTER TABLE audit_log ADD COLUMN key_id BIGINT;
