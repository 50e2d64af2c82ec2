-- Reconciliation: every payment whose current status or version (payments_current: payment_id, status,
-- version, as the table holds them) differs from its last exported change (highest version), or that is on
-- one side only. No row: the export and the table agree. `difference` says how they differ:
-- not_exported (in the table, no change exported yet), not_current (exported, not in the table), status
-- (another status), version (the same status at another version: a change not exported yet, or lost).
-- A change exported twice counts once: one change per payment is kept (copies of a change are alike).
-- params:
WITH exported AS (
    SELECT payment_id, to_status AS status, version
    FROM (
        SELECT
            payment_id,
            to_status,
            version,
            row_number() OVER (PARTITION BY payment_id ORDER BY version DESC) AS recency
        FROM payment_changes
    ) AS ranked
    WHERE recency = 1
)
SELECT
    coalesce(p.payment_id, e.payment_id) AS payment_id,
    p.status AS current_status,
    p.version AS current_version,
    e.status AS exported_status,
    e.version AS exported_version,
    CASE
        WHEN e.payment_id IS NULL THEN 'not_exported'
        WHEN p.payment_id IS NULL THEN 'not_current'
        WHEN p.status <> e.status THEN 'status'
        ELSE 'version'
    END AS difference
FROM payments_current AS p
FULL OUTER JOIN exported AS e ON p.payment_id = e.payment_id
WHERE p.payment_id IS NULL
    OR e.payment_id IS NULL
    OR p.status <> e.status
    OR p.version <> e.version
ORDER BY coalesce(p.payment_id, e.payment_id)
