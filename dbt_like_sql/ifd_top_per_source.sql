-- Top-k selection in SQL: per source, the rows with the highest IFD among those the instruction helps
-- (IFD < 1), up to 10% of that source's rows (at least one), ranked within the source. Rows without an
-- IFD score are not eligible.
WITH eligible AS (
    SELECT s.id, p.source, s.ifd
    FROM ifd_scores AS s
    JOIN instruction_pool AS p USING (id)
    WHERE s.ifd IS NOT NULL AND s.ifd < 1
),
ranked AS (
    SELECT
        e.id,
        e.source,
        e.ifd,
        row_number() OVER (PARTITION BY e.source ORDER BY e.ifd DESC, e.id) AS rank_in_source,
        (SELECT count(*) FROM instruction_pool AS q WHERE q.source = e.source) AS source_rows
    FROM eligible AS e
)
SELECT id, source, ifd, rank_in_source, source_rows
FROM ranked
WHERE rank_in_source <= greatest(1, CAST(ceil(0.1 * source_rows) AS BIGINT))
ORDER BY source, rank_in_source
