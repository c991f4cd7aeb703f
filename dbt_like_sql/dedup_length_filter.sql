-- Threshold filter over the indicators (docs/METHODS.md family 1), set-based: every pool row with the
-- reason it would be dropped, or NULL when it passes. Rules, in order: a later copy in an exact-duplicate
-- group, a non-representative member of a near-duplicate cluster, an empty response, a response shorter
-- than 3 tokens, a row longer than 2048 tokens. Every row appears once, so kept + dropped = pool.
SELECT
    l.id,
    l.source,
    l.language,
    l.output_chars,
    l.total_tokens,
    d.exact_dup_group,
    d.near_dup_cluster,
    d.near_dup_cluster_size,
    CASE
        WHEN d.exact_dup_rank > 0 THEN 'exact duplicate of ' || d.exact_dup_group
        WHEN d.near_dup_rank > 0 THEN 'near duplicate in cluster ' || d.near_dup_cluster
        WHEN l.output_chars = 0 THEN 'empty response'
        WHEN l.output_tokens < 3 THEN 'response shorter than 3 tokens'
        WHEN l.total_tokens > 2048 THEN 'longer than 2048 tokens'
    END AS drop_reason,
    drop_reason IS NULL AS kept
FROM length_indicators AS l
JOIN duplicate_indicators AS d USING (id)
ORDER BY l.id
