-- Payments of one fee type (a parameter), with their current status: one row per payment, from its last
-- change (highest version: its fee type, amount, method, status and error code; the version is also its
-- number of changes) and its first change's time.
-- A change exported twice counts once: one change per payment is kept (copies of a change are alike).
-- params: fee_type
WITH ranked AS (
    SELECT
        payment_id,
        fee_type,
        method,
        amount_cents,
        to_status,
        version,
        "at",
        error_code,
        min("at") OVER (PARTITION BY payment_id) AS first_at,
        row_number() OVER (PARTITION BY payment_id ORDER BY version DESC) AS recency
    FROM payment_changes
)
SELECT
    payment_id,
    fee_type,
    method,
    amount_cents,
    to_status AS status,
    version,
    first_at AS created_at,
    "at" AS updated_at,
    error_code
FROM ranked
WHERE recency = 1
    AND fee_type = ?
ORDER BY payment_id
