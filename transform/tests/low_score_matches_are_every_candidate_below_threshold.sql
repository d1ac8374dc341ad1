-- review_low_score_matches holds exactly the candidates scoring below the threshold, each with its score.
{{ config(enabled=source_enabled('cognite')) }}
with expected as (
    select job_id, item_index, candidate_index, score
    from {{ ref('stg_match_candidates') }}
    where score < {{ var('match_score_threshold') }}
),

actual as (
    select job_id, item_index, candidate_index, score
    from {{ ref('review_low_score_matches') }}
)

select 'missing' as problem, e.job_id, e.item_index, e.candidate_index
from expected as e
left join actual as a
    on a.job_id = e.job_id and a.item_index = e.item_index and a.candidate_index = e.candidate_index
where a.job_id is null

union all

select 'not below threshold or wrong score', a.job_id, a.item_index, a.candidate_index
from actual as a
left join expected as e
    on a.job_id = e.job_id and a.item_index = e.item_index and a.candidate_index = e.candidate_index
where e.job_id is null or a.score <> e.score or a.score >= {{ var('match_score_threshold') }}
