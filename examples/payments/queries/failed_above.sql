-- Failed payments above an amount (a parameter, in cents; strictly above), largest first: payments whose
-- last change (highest version) moved them to FAILED, with its error code and time.
-- A change exported twice counts once: one change per payment is kept (copies of a change are alike).
-- params: min_amount
WITH latest AS (
    SELECT *
    FROM (
        SELECT
            payment_id,
            to_status,
            amount_cents,
            error_code,
            "at",
            fee_type,
            method,
            row_number() OVER (PARTITION BY payment_id ORDER BY version DESC) AS recency
        FROM payment_changes
    ) AS ranked
    WHERE recency = 1
)
SELECT
    payment_id,
    amount_cents,
    error_code,
    "at" AS failed_at,
    fee_type,
    method
FROM latest
WHERE to_status = 'FAILED'
    AND amount_cents > ?
ORDER BY amount_cents DESC, payment_id
