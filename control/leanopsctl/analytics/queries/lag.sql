-- leanops report lag: average and 95th percentile lag per topic per hour (UTC, the hour a run ended).
-- A run's lag is the age of the newest record committed when it ended (lag_seconds). Backfills' runs (a
-- partition of the topic) are left out: they read old records on purpose. Each run counts once (`runs`).
-- params: since, since_date, topic
WITH runs AS (
    SELECT *
    FROM (
        SELECT
            r.*,
            row_number() OVER (
                PARTITION BY r.topic, r."partition", r."key"
                ORDER BY r.expired_at DESC NULLS LAST, r.sequence_number DESC NULLS LAST
            ) AS copy_rank
        FROM leanops_runs AS r
        WHERE r.started_at >= CAST(? AS TIMESTAMP)
            AND r."date" >= ?
            AND r.topic LIKE ? ESCAPE '\'
            AND coalesce(r."partition", '') = ''
    ) AS copies
    WHERE copy_rank = 1
)
SELECT
    topic,
    date_trunc('hour', ended_at) AS hour,
    count(*) AS runs,
    avg(lag_seconds) AS avg_lag_seconds,
    approx_percentile(lag_seconds, 0.95) AS p95_lag_seconds,
    max(lag_seconds) AS max_lag_seconds
FROM runs
WHERE lag_seconds IS NOT NULL
    AND ended_at IS NOT NULL
GROUP BY topic, date_trunc('hour', ended_at)
ORDER BY hour, topic
