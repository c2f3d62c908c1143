-- Spend per budget subject (`key:<id>`, `user:<id>`, `team:<id>`, `anonymous`)
-- and UTC day, kept in the ledger's own transaction. Every budget period starts
-- at a UTC midnight, so a subject's spend in a period is the sum of at most a
-- period's days: a subject the limiter has not tracked (new, or evicted under a
-- spray of principals) costs an index lookup, never a scan of the ledger.
CREATE TABLE spend_daily (
    subject TEXT NOT NULL,
    day INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    PRIMARY KEY (subject, day)
) WITHOUT ROWID;

INSERT INTO spend_daily (subject, day, cost_micros)
SELECT subject, day, SUM(cost) FROM (
    SELECT 'key:' || key_id AS subject, ts / 86400000 AS day, cost_micros AS cost
        FROM usage_records WHERE key_id IS NOT NULL AND cost_micros > 0
    UNION ALL
    SELECT 'user:' || user_id, ts / 86400000, cost_micros
        FROM usage_records WHERE user_id IS NOT NULL AND cost_micros > 0
    UNION ALL
    SELECT 'team:' || team_id, ts / 86400000, cost_micros
        FROM usage_records WHERE team_id IS NOT NULL AND cost_micros > 0
    UNION ALL
    SELECT 'anonymous', ts / 86400000, cost_micros
        FROM usage_records WHERE key_id IS NULL AND user_id IS NULL AND cost_micros > 0
)
GROUP BY subject, day;
