-- Webhook notifiers (issue 16): where a queued webhook notice goes. NULL for
-- email rows; for `channel = 'webhook'` the JSON {url, secret_from, format}
-- (the secret by reference only, never its value). The body of a webhook row
-- is the version-1 payload (docs/webhook-payload.schema.json).
ALTER TABLE outbox ADD COLUMN target TEXT;
