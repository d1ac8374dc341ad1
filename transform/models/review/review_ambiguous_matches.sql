-- Predict items whose two best candidates score within var('ambiguity_margin') of each other: the model could
-- not tell them apart, so the top match deserves a look.
{{ config(enabled=source_enabled('cognite')) }}
with ranked as (
    select * from {{ ref('stg_match_candidates') }} where score is not null
),

best as (select * from ranked where candidate_rank = 1),
runner_up as (select * from ranked where candidate_rank = 2)

select
    b.job_id,
    b.item_index,
    b.source_name,
    b.score as best_score,
    b.target_id as best_target_id,
    b.target_name as best_target_name,
    r.score as runner_up_score,
    r.target_id as runner_up_target_id,
    r.target_name as runner_up_target_name,
    b.score - r.score as score_gap,
    cast({{ var('ambiguity_margin') }} as double precision) as margin
from best as b
inner join runner_up as r
    on r.job_id = b.job_id and r.item_index = b.item_index
where b.score - r.score <= {{ var('ambiguity_margin') }}
