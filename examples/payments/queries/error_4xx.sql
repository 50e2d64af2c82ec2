-- Payments whose latest error code is a 4XX (a final refusal), with how many payments have each code.
-- A payment's latest error code is the error_code of its last change (highest version) that has one: a
-- payment whose 4XX was followed by a 5XX is not listed, one whose 5XX was followed by a 4XX is.
-- A change exported twice counts once: one change per payment is kept (copies of a change are alike).
-- params:
WITH errors AS (
    SELECT
        payment_id,
        error_code,
        to_status,
        "at" AS error_at,
        fee_type,
        method,
        amount_cents,
        row_number() OVER (PARTITION BY payment_id ORDER BY version DESC) AS recency
    FROM payment_changes
    WHERE error_code IS NOT NULL
)
SELECT
    payment_id,
    error_code,
    count(*) OVER (PARTITION BY error_code) AS payments_with_code,
    to_status AS status_at_error,
    error_at,
    fee_type,
    method,
    amount_cents
FROM errors
WHERE recency = 1
    AND error_code LIKE '4__'
ORDER BY error_code, payment_id
