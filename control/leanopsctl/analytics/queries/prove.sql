-- leanops report prove: which run committed a source position or an object. A batch committed a position
-- when its range holds it (after < position <= the batch's end) in its source's order: `N:<number>` (a
-- DynamoDB number sort key) by exact value, `S:<string>` (a string sort key) as a whole string by UTF-8
-- bytes, anything else a files position `<object key>#<line offset>` by key, then offset as a number (no
-- `#<digits>` suffix: offset 0). A batch committed an object when the object is its output or quarantine
-- object, or one of the source keys it read. Each match names when it was committed, with which fence, by
-- which execution (owner), its output, whether it is still output (a rewind superseded it: superseded_by,
-- also a rewind whose [superseded_from, superseded_to] holds it after its record expired), and that run's
-- record if archived. Each record counts once (`outputs`, `runs`).
-- params: position, object, since, since_date, topic, runs_since_date
WITH probe AS (
    SELECT
        CAST(? AS VARCHAR) AS position,
        CAST(? AS VARCHAR) AS object
),
outputs AS (
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
    ) AS copies
    WHERE copy_rank = 1
),
batches AS (
    SELECT * FROM outputs WHERE record_kind = 'batch'
),
rewinds AS (
    SELECT topic, coalesce("partition", '') AS part, seq, committed_at, superseded_from, superseded_to
    FROM outputs
    WHERE record_kind = 'override'
        AND action = 'rewind_checkpoint'
        AND superseded_from IS NOT NULL
        AND superseded_to IS NOT NULL
),
-- Every position compared, once: the probe's and the batches' ends and starts.
positions AS (
    SELECT position AS pos FROM probe WHERE position IS NOT NULL
    UNION
    SELECT "after" AS pos FROM batches WHERE "after" IS NOT NULL
    UNION
    SELECT position AS pos FROM batches WHERE position IS NOT NULL
),
position_parts AS (
    SELECT
        pos,
        CASE WHEN pos LIKE 'N:%' THEN 'N' WHEN pos LIKE 'S:%' THEN 'S' ELSE 'F' END AS source,
        -- N: a plain decimal number (report prove writes out an exponent): sign, whole and fraction digits
        regexp_like(substr(pos, 3), '^[+-]{0,1}([0-9]+[.]{0,1}[0-9]*|[.][0-9]+)$') AS plain_number,
        CASE WHEN substr(pos, 3, 1) = '-' THEN '-' ELSE '' END AS sign,
        regexp_replace(regexp_extract(substr(pos, 3), '^[+-]{0,1}([0-9]*)', 1), '^0+', '') AS whole,
        regexp_replace(coalesce(regexp_extract(substr(pos, 3), '[.]([0-9]*)$', 1), ''), '0+$', '') AS fraction,
        -- files: the object key and the line offset
        regexp_like(pos, '#[0-9]+$') AS has_offset
    FROM positions
),
-- Each position as (k, i, f), compared in that order: files (key, offset, 0); N: ('', whole part, fraction
-- part), exact as DECIMAL(38, 0) and DECIMAL(38, 38) (NULL, so never matched, past 38 digits either side);
-- S: (the whole string, 0, 0).
position_keys AS (
    SELECT
        pos,
        source,
        CASE
            WHEN source = 'N' THEN ''
            WHEN source = 'S' THEN pos
            WHEN has_offset THEN regexp_replace(pos, '#[0-9]+$', '')
            ELSE pos
        END AS k,
        CASE
            WHEN source = 'N' AND plain_number AND length(whole) <= 38 AND length(fraction) <= 38
                THEN TRY_CAST(sign || (CASE WHEN whole = '' THEN '0' ELSE whole END) AS DECIMAL(38, 0))
            WHEN source = 'N' THEN NULL
            WHEN source = 'F' AND has_offset
                THEN TRY_CAST(regexp_extract(pos, '#([0-9]+)$', 1) AS DECIMAL(38, 0))
            ELSE CAST(0 AS DECIMAL(38, 0))
        END AS i,
        CASE
            WHEN source = 'N' AND plain_number AND length(whole) <= 38 AND length(fraction) <= 38
                THEN TRY_CAST(sign || '0.' || (CASE WHEN fraction = '' THEN '0' ELSE fraction END) AS DECIMAL(38, 38))
            WHEN source = 'N' THEN NULL
            ELSE CAST(0 AS DECIMAL(38, 38))
        END AS f
    FROM position_parts
),
matches AS (
    SELECT
        b.*,
        CASE WHEN p.object IS NOT NULL AND (
            b.object = p.object OR b.quarantine = p.object OR contains(b.source_keys, p.object)
        ) THEN 'object' ELSE 'position' END AS matched_by
    FROM batches AS b
    CROSS JOIN probe AS p
    LEFT JOIN position_keys AS q ON q.pos = p.position
    LEFT JOIN position_keys AS s ON s.pos = b."after"
    LEFT JOIN position_keys AS e ON e.pos = b.position
    WHERE (
        p.position IS NOT NULL
        AND b.position IS NOT NULL
        AND e.source = q.source
        AND (
            b."after" IS NULL
            OR (
                s.source = q.source
                AND (s.k < q.k OR (s.k = q.k AND (s.i < q.i OR (s.i = q.i AND s.f < q.f))))
            )
        )
        AND (q.k < e.k OR (q.k = e.k AND (q.i < e.i OR (q.i = e.i AND q.f <= e.f))))
    ) OR (
        p.object IS NOT NULL
        AND (b.object = p.object OR b.quarantine = p.object OR contains(b.source_keys, p.object))
    )
),
late AS (
    SELECT
        m.topic,
        coalesce(m."partition", '') AS part,
        m.seq,
        min(w.seq) AS rewind_seq,
        min_by(w.committed_at, w.seq) AS rewind_at
    FROM matches AS m
    JOIN rewinds AS w
        ON w.topic = m.topic
        AND w.part = coalesce(m."partition", '')
        AND w.seq > m.seq
        AND m.seq BETWEEN w.superseded_from AND w.superseded_to
    WHERE m.superseded_by IS NULL
    GROUP BY m.topic, coalesce(m."partition", ''), m.seq
),
runs AS (
    SELECT *
    FROM (
        SELECT
            r.*,
            row_number() OVER (
                PARTITION BY r.topic, r."partition", r."key"
                ORDER BY r.expired_at DESC NULLS LAST, r.sequence_number DESC NULLS LAST
            ) AS copy_rank
        FROM leanops_runs AS r
        WHERE r."date" >= ?
            AND r.execution IN (SELECT owner FROM matches)
    ) AS copies
    WHERE copy_rank = 1
)
SELECT
    m.topic,
    m."partition",
    m.matched_by,
    m.seq,
    m.committed_at,
    m.fence,
    m.owner AS execution,
    m."after",
    m.position,
    m.object,
    m.quarantine,
    m.records,
    m.written,
    m.quarantined,
    m.source_keys,
    coalesce(m.superseded_by, l.rewind_seq) AS superseded_by,
    coalesce(m.superseded_at, l.rewind_at) AS superseded_at,
    coalesce(m.superseded_by, l.rewind_seq) IS NULL AS still_output,
    r.outcome AS run_outcome,
    r.started_at AS run_started_at,
    r.ended_at AS run_ended_at,
    r.fence AS run_fence
FROM matches AS m
LEFT JOIN late AS l
    ON l.topic = m.topic
    AND l.part = coalesce(m."partition", '')
    AND l.seq = m.seq
LEFT JOIN runs AS r
    ON r.execution = m.owner
    AND r.topic = m.topic
    AND coalesce(r."partition", '') = coalesce(m."partition", '')
ORDER BY m.committed_at, m.topic, m.seq
