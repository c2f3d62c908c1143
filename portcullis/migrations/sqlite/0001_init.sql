-- Gateway API keys: only a SHA-256 digest of the secret is stored.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    digest       BLOB NOT NULL,
    name         TEXT,
    user_id      TEXT,
    team_id      TEXT,
    models       TEXT,              -- JSON array of globs, NULL = every configured model
    endpoints    TEXT,              -- JSON array of endpoint groups, NULL = the provider's allowlist
    expires_at   INTEGER,           -- epoch ms
    revoked_at   INTEGER,           -- epoch ms
    created_at   INTEGER NOT NULL,  -- epoch ms
    metadata     TEXT NOT NULL DEFAULT '{}',
    rotated_from TEXT
);

-- Gateway-wide settings such as the generated master key's digest.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The usage ledger: one row per proxied request.
CREATE TABLE usage_records (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    ts                INTEGER NOT NULL,  -- epoch ms, when the request arrived
    request_id        TEXT NOT NULL,
    key_id            TEXT,
    user_id           TEXT,
    team_id           TEXT,
    provider          TEXT,
    model             TEXT,
    endpoint          TEXT,
    method            TEXT NOT NULL,
    status            INTEGER NOT NULL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_ms        INTEGER NOT NULL,
    ttfb_ms           INTEGER,
    error_code        TEXT
);
CREATE INDEX usage_records_ts ON usage_records (ts);
CREATE INDEX usage_records_request_id ON usage_records (request_id);
