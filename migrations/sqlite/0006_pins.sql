-- Who pinned a backup, when, and for which release (the reason stays in
-- `backups.pinned`). The same pin is written as `pin.json` next to the
-- backup's manifest in storage, so it survives the loss of the catalog.
ALTER TABLE backups ADD COLUMN pinned_by TEXT;
ALTER TABLE backups ADD COLUMN pinned_at TEXT;
ALTER TABLE backups ADD COLUMN pin_release TEXT;
