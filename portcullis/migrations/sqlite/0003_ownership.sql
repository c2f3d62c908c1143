-- Resource ownership: every provider resource created through the gateway, and
-- the owner it belongs to. `seq` orders a caller's resources for list pagination.
CREATE TABLE resources (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    provider   TEXT NOT NULL,
    family     TEXT NOT NULL,          -- file, batch, assistant, thread, ... (authz/ownership/families.rs)
    id         TEXT NOT NULL,          -- the provider's id
    owner      TEXT NOT NULL,          -- key:<id> | user:<id> | team:<id> | anonymous
    parent     TEXT,                   -- the id of the resource it lives under (thread of a message, ...)
    created_at INTEGER NOT NULL,       -- epoch ms
    UNIQUE (provider, family, id)
);
CREATE INDEX resources_owner ON resources (provider, family, owner, seq);
CREATE INDEX resources_parent ON resources (provider, parent);
CREATE INDEX resources_owner_only ON resources (owner, seq);
