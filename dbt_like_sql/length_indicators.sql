-- Length and size indicators per pool row (docs/METHODS.md family 1): characters of the instruction,
-- input and response (first exchange), characters of all assistant turns, turns, and the token
-- counts computed by metric_features with the scorer's tokenizer.
SELECT
    p.id,
    p.source,
    f.language,
    length(p.instruction) AS instruction_chars,
    length(p.input) AS input_chars,
    length(p.output) AS output_chars,
    coalesce(list_sum([length(t.content) FOR t IN p.conversations IF t.role = 'assistant']), 0)
        AS response_chars_all_turns,
    p.n_turns,
    f.instruction_tokens,
    f.input_tokens,
    f.output_tokens,
    f.total_tokens
FROM instruction_pool AS p
JOIN metric_features AS f USING (id)
ORDER BY p.id
