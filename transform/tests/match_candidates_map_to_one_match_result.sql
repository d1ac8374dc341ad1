-- Every unnested candidate maps back to exactly one match_results row, and every item has exactly as many
-- candidates as its `matches` array has elements.
{{ config(enabled=source_enabled('cognite')) }}
with per_item as (
    select job_id, item_index, count(*) as candidates
    from {{ ref('stg_match_candidates') }}
    group by job_id, item_index
),

matched as (
    select p.job_id, p.item_index, p.candidates, count(m.job_id) as parents
    from per_item as p
    left join {{ source('tap_jobresults', 'match_results') }} as m
        on cast(m.job_id as bigint) = p.job_id and cast(m.item_index as bigint) = p.item_index
    group by p.job_id, p.item_index, p.candidates
)

select job_id, item_index, candidates, parents, null as expected
from matched
where parents <> 1

union all

select m.job_id, m.item_index, coalesce(p.candidates, 0), 1, {{ json_array_length('m.matches') }}
from {{ ref('stg_match_results') }} as m
left join per_item as p
    on p.job_id = m.job_id and p.item_index = m.item_index
where coalesce(p.candidates, 0) <> coalesce({{ json_array_length('m.matches') }}, 0)
