-- leanops report failures: time to recover, per failed run. The topic (or its backfill) recovered when its
-- next run after the failure ended processed or up_to_date; recover_seconds is the time from the end of the
-- failed run to the end of that run (NULL: no run has ended well since). Each run counts once (`runs`).
-- params: since, since_date, topic
WITH runs AS (
    SELECT
        topic,
        coalesce("partition", '') AS part,
        "key",
        execution,
        outcome,
        error,
        started_at,
        ended_at
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
    ) AS copies
    WHERE copy_rank = 1
)
SELECT
    f.topic,
    nullif(f.part, '') AS "partition",
    f.execution,
    coalesce(f.error, f.outcome) AS error_type,
    f.started_at AS failed_started_at,
    f.ended_at AS failed_at,
    min(ok.ended_at) AS recovered_at,
    CAST(date_diff('millisecond', f.ended_at, min(ok.ended_at)) AS DOUBLE) / 1000 AS recover_seconds
FROM runs AS f
LEFT JOIN runs AS ok
    ON ok.topic = f.topic
    AND ok.part = f.part
    AND ok.outcome IN ('processed', 'up_to_date')
    AND ok.ended_at > f.ended_at
WHERE f.outcome IN ('failed', 'timed_out', 'aborted')
GROUP BY f.topic, f.part, f."key", f.execution, f.error, f.outcome, f.started_at, f.ended_at
ORDER BY f.topic, failed_at
