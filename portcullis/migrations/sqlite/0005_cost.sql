-- What each request cost, in integer micro-dollars (NULL: no price known).
-- Budget spend is rebuilt from this column (through the `ts` index) the first
-- time a subject is seen in a period; no further index, so ledger inserts
-- cost what they did.
ALTER TABLE usage_records ADD COLUMN cost_micros INTEGER;
