-- Candidate matches of predict items scoring below var('match_score_threshold'): the matches to review by
-- hand. is_best marks the item's best candidate (when even that one is weak, the item has no good match).
{{ config(enabled=source_enabled('cognite')) }}
select
    c.job_id,
    c.item_index,
    c.source_name,
    c.candidate_index,
    c.candidate_rank,
    c.candidate_rank = 1 as is_best,
    c.score,
    c.target_id,
    c.target_name,
    cast({{ var('match_score_threshold') }} as double precision) as threshold
from {{ ref('stg_match_candidates') }} as c
where c.score < {{ var('match_score_threshold') }}
