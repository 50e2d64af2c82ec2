-- Payments by fee type and month (UTC, the month each payment was created): how many, their total amount,
-- and how many of them have settled and for how much. A payment's fee type, amount and status are those of
-- its last change (highest version); a payment whose creation is not in the export is left out.
-- A change exported twice counts once: one change per payment is kept (copies of a change are alike).
-- params:
WITH payments AS (
    SELECT *
    FROM (
        SELECT
            payment_id,
            fee_type,
            amount_cents,
            to_status AS status,
            min(CASE WHEN to_status = 'CREATED' THEN "at" END) OVER (PARTITION BY payment_id) AS created_at,
            row_number() OVER (PARTITION BY payment_id ORDER BY version DESC) AS recency
        FROM payment_changes
    ) AS latest
    WHERE recency = 1
        AND created_at IS NOT NULL
)
SELECT
    fee_type,
    CAST(date_trunc('month', created_at) AS DATE) AS month,
    count(*) AS payments,
    sum(amount_cents) AS total_amount_cents,
    sum(CASE WHEN status = 'SETTLED' THEN 1 ELSE 0 END) AS settled_payments,
    sum(CASE WHEN status = 'SETTLED' THEN amount_cents ELSE 0 END) AS settled_amount_cents
FROM payments
GROUP BY fee_type, CAST(date_trunc('month', created_at) AS DATE)
ORDER BY month, fee_type
