-- leanops report runs: runs per topic per day (UTC, the day a run started), by outcome.
-- Each run counts once: an item the archive holds twice (or that is also still live) is one row (`runs`).
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
    ) AS copies
    WHERE copy_rank = 1
)
SELECT
    topic,
    "date" AS day,
    outcome,
    count(*) AS runs
FROM runs
GROUP BY topic, "date", outcome
ORDER BY day, topic, outcome
