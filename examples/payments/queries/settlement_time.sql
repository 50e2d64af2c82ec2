-- Settlement time of one method's payments (a parameter; the question asks it for ACH): per payment, from
-- its first change to CREATED to its change to SETTLED, in seconds; their count, average, p50, p95, min and
-- max. Payments not settled (pending, failed, cancelled), or whose creation is not in the export, are left
-- out. p50 and p95 are approx_percentile's: exact (linear interpolation) in DuckDB, approximate in Athena.
-- A change exported twice counts once: each payment's times are the earliest of its copies.
-- params: method
WITH settlements AS (
    SELECT
        payment_id,
        min(CASE WHEN to_status = 'CREATED' THEN at_ms END) AS created_ms,
        min(CASE WHEN to_status = 'SETTLED' THEN at_ms END) AS settled_ms
    FROM payment_changes
    WHERE method = ?
    GROUP BY payment_id
),
durations AS (
    SELECT payment_id, CAST(settled_ms - created_ms AS DOUBLE) / 1000 AS seconds
    FROM settlements
    WHERE created_ms IS NOT NULL
        AND settled_ms IS NOT NULL
)
SELECT
    count(*) AS payments,
    avg(seconds) AS avg_seconds,
    approx_percentile(seconds, 0.5) AS p50_seconds,
    approx_percentile(seconds, 0.95) AS p95_seconds,
    min(seconds) AS min_seconds,
    max(seconds) AS max_seconds
FROM durations
