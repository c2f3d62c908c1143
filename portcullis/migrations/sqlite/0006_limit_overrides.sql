-- Own limits and budgets of keys, users and teams, set through the admin API.
-- `subject` is `key:<id>`, `user:<id>` or `team:<id>`; values are JSON.
CREATE TABLE limit_overrides (
    subject    TEXT PRIMARY KEY,
    limits     TEXT,
    budget     TEXT,
    updated_at INTEGER NOT NULL   -- epoch ms
);
