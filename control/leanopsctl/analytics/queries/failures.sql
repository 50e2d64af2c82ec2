-- leanops report failures: failed runs per topic by error type (the error a failed run recorded; a run
-- the safety net ended counts as its outcome, timed_out or aborted). Each run counts once (`runs`).
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
            AND r.outcome IN ('failed', 'timed_out', 'aborted')
    ) AS copies
    WHERE copy_rank = 1
)
SELECT
    topic,
    coalesce(error, outcome) AS error_type,
    count(*) AS failures,
    min(started_at) AS first_at,
    max(started_at) AS last_at,
    max_by(cause, started_at) AS last_cause
FROM runs
GROUP BY topic, coalesce(error, outcome)
ORDER BY failures DESC, topic, error_type
