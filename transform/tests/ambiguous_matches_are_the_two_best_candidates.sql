-- For each item in review_ambiguous_matches: best_score is the item's highest candidate score, runner_up_score
-- the highest of the others, and the gap is within the margin. And every item whose two best scores are
-- within the margin is listed.
{{ config(enabled=source_enabled('cognite')) }}
with candidates as (
    select job_id, item_index, candidate_index, score
    from {{ ref('stg_match_candidates') }}
    where score is not null
),

top_score as (
    select job_id, item_index, max(score) as best, count(*) as scored
    from candidates
    group by job_id, item_index
),

second_score as (
    -- the highest score once one candidate with the best score is set aside
    select t.job_id, t.item_index, t.best, t.scored,
        case
            when (select count(*) from candidates as c2
                  where c2.job_id = t.job_id and c2.item_index = t.item_index and c2.score = t.best) > 1
                then t.best
            else (select max(c3.score) from candidates as c3
                  where c3.job_id = t.job_id and c3.item_index = t.item_index and c3.score < t.best)
        end as second
    from top_score as t
),

expected as (
    select * from second_score
    where scored >= 2 and best - second <= {{ var('ambiguity_margin') }}
)

select 'wrong scores' as problem, a.job_id, a.item_index
from {{ ref('review_ambiguous_matches') }} as a
left join expected as e
    on e.job_id = a.job_id and e.item_index = a.item_index
where e.job_id is null or a.best_score <> e.best or a.runner_up_score <> e.second
    or a.score_gap > {{ var('ambiguity_margin') }}

union all

select 'missing', e.job_id, e.item_index
from expected as e
left join {{ ref('review_ambiguous_matches') }} as a
    on e.job_id = a.job_id and e.item_index = a.item_index
where a.job_id is null
