-- Per-source and per-language summary of the pool: rows, mean lengths, mean lexical diversity
-- and mean IFD, the table a reader checks before choosing a selection method.
SELECT
    l.source,
    l.language,
    count(*) AS rows,
    round(avg(l.output_chars), 1) AS mean_output_chars,
    round(avg(l.total_tokens), 1) AS mean_total_tokens,
    round(avg(f.mtld), 2) AS mean_mtld,
    round(avg(s.ifd), 4) AS mean_ifd,
    sum(CASE WHEN s.ifd >= 1 THEN 1 ELSE 0 END) AS rows_ifd_at_least_1
FROM length_indicators AS l
JOIN metric_features AS f USING (id)
LEFT JOIN ifd_scores AS s USING (id)
GROUP BY l.source, l.language
ORDER BY l.source, l.language
