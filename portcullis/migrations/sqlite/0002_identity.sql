-- Users seen through identity-provider tokens (and later, admin-managed users).
CREATE TABLE users (
    id         TEXT PRIMARY KEY,        -- "<issuer name>:<subject>"
    issuer     TEXT,
    subject    TEXT,
    team_id    TEXT,
    roles      TEXT NOT NULL DEFAULT '[]',
    disabled   INTEGER NOT NULL DEFAULT 0,
    first_seen INTEGER NOT NULL,        -- epoch ms
    last_seen  INTEGER NOT NULL         -- epoch ms
);

-- Authentication failures and lockouts: never the credential itself.
CREATE TABLE audit_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    ts              INTEGER NOT NULL,   -- epoch ms
    kind            TEXT NOT NULL,      -- authentication_failed | locked_out
    reason          TEXT NOT NULL,
    client_ip       TEXT,
    credential_kind TEXT,
    key_id          TEXT,
    issuer          TEXT,
    request_id      TEXT,
    path            TEXT
);
CREATE INDEX audit_events_ts ON audit_events (ts);
