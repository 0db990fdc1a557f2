-- Managed tokens: a name, the first characters of the text (to tell tokens apart in a
-- listing), and when each was last used (written at most once a minute). Nullable
-- columns only: a hookline one version older neither reads nor writes them.
ALTER TABLE api_tokens ADD COLUMN name text;
ALTER TABLE api_tokens ADD COLUMN prefix text;
ALTER TABLE api_tokens ADD COLUMN last_used_at timestamptz;
