-- Admin roles on gateway keys: NULL = a client key; admin | team_admin | viewer = an admin key.
ALTER TABLE api_keys ADD COLUMN admin_role TEXT;

-- Admin changes in the audit log: who did it, to what, and the object before and after (JSON, never a secret).
ALTER TABLE audit_events ADD COLUMN actor TEXT;
ALTER TABLE audit_events ADD COLUMN target TEXT;
ALTER TABLE audit_events ADD COLUMN before_json TEXT;
ALTER TABLE audit_events ADD COLUMN after_json TEXT;
