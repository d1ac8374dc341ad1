-- One row per candidate match of a predict item: match_results.matches unnested. candidate_index is the
-- position in the array as sent; candidate_rank orders by score (1 = best; unscored candidates last).
{{ config(enabled=source_enabled('cognite')) }}
with candidates as (
    select
        m.job_id,
        m.item_index,
        c.idx as candidate_index,
        {{ json_number('c.value -> \'score\'') }} as score,
        c.value -> 'target' as target,
        m.source_name,
        m.match_count
    from {{ ref('stg_match_results') }} as m
    {{ json_array_elements('m.matches', 'c') }}
)

select
    job_id,
    item_index,
    candidate_index,
    row_number() over (
        partition by job_id, item_index
        order by case when score is null then 1 else 0 end, score desc, candidate_index
    ) as candidate_rank,
    score,
    {{ json_scalar("target -> 'id'") }} as target_id,
    {{ json_scalar("target -> 'externalId'") }} as target_external_id,
    {{ json_scalar("target -> 'name'") }} as target_name,
    target,
    source_name,
    match_count
from candidates
