-- The sidebar reads a customer's unresolved alerts (those a salesperson may see).
CREATE INDEX alert_corp_customer ON alert (corp_id, external_user_id, id);
