-- leanops output: a topic's archived output records (its batches and the operator's overrides), by seq.
-- partition is the backfill's id, or '' for the topic's own state. Each record counts once (`outputs`). A
-- record is superseded when a rewind marked it (superseded_by), or when its seq lies in the range
-- [superseded_from, superseded_to] of a later rewind's override record: it had expired before that rewind
-- could mark it (`late`); superseded_by is then the first such rewind's seq, superseded_at its time.
-- params: since, since_date, topic, partition
WITH outputs AS (
    SELECT *
    FROM (
        SELECT
            o.*,
            row_number() OVER (
                PARTITION BY o.topic, o."partition", o."key"
                ORDER BY o.expired_at DESC NULLS LAST, o.sequence_number DESC NULLS LAST
            ) AS copy_rank
        FROM leanops_outputs AS o
        WHERE o.committed_at >= CAST(? AS TIMESTAMP)
            AND o."date" >= ?
            AND o.topic LIKE ? ESCAPE '\'
            AND coalesce(o."partition", '') = ?
    ) AS copies
    WHERE copy_rank = 1
),
rewinds AS (
    SELECT topic, coalesce("partition", '') AS part, seq, committed_at, superseded_from, superseded_to
    FROM outputs
    WHERE record_kind = 'override'
        AND action = 'rewind_checkpoint'
        AND superseded_from IS NOT NULL
        AND superseded_to IS NOT NULL
),
late AS (
    SELECT
        o.topic,
        coalesce(o."partition", '') AS part,
        o.seq,
        min(w.seq) AS rewind_seq,
        min_by(w.committed_at, w.seq) AS rewind_at
    FROM outputs AS o
    JOIN rewinds AS w
        ON w.topic = o.topic
        AND w.part = coalesce(o."partition", '')
        AND w.seq > o.seq
        AND o.seq BETWEEN w.superseded_from AND w.superseded_to
    WHERE o.superseded_by IS NULL
    GROUP BY o.topic, coalesce(o."partition", ''), o.seq
)
SELECT
    o.topic,
    nullif(coalesce(o."partition", ''), '') AS "partition",
    o.seq,
    o.record_kind,
    o.committed_at,
    o."after",
    o.position,
    o.object,
    o.quarantine,
    o.stem,
    o.attempt,
    o.records,
    o.written,
    o.quarantined,
    o.source_keys,
    o.fence,
    o.owner,
    coalesce(o.superseded_by, l.rewind_seq) AS superseded_by,
    coalesce(o.superseded_at, l.rewind_at) AS superseded_at,
    o.superseded_from,
    o.superseded_to,
    o.action,
    o.actor,
    o.reason
FROM outputs AS o
LEFT JOIN late AS l
    ON l.topic = o.topic
    AND l.part = coalesce(o."partition", '')
    AND l.seq = o.seq
ORDER BY o.topic, o.seq
