-- One row per source item of a finished predict job; `matches` stays JSON (see stg_match_candidates).
{{ config(enabled=source_enabled('cognite')) }}
select
    cast(job_id as bigint) as job_id,
    cast(item_index as bigint) as item_index,
    {{ json_value('source') }} as source,
    {{ json_scalar(json_value('source') ~ " -> 'name'") }} as source_name,
    {{ json_scalar(json_value('source') ~ " -> 'id'") }} as source_id,
    {{ json_scalar(json_value('source') ~ " -> 'externalId'") }} as source_external_id,
    {{ json_value('matches') }} as matches,
    cast(match_count as bigint) as match_count,
    cast(top_score as double precision) as top_score,
    {{ json_value('top_target') }} as top_target,
    {{ json_scalar(json_value('top_target') ~ " -> 'name'") }} as top_target_name,
    {{ json_scalar(json_value('top_target') ~ " -> 'id'") }} as top_target_id,
    {{ json_value('extra_fields') }} as extra_fields,
    {{ loaded_at(source('tap_jobresults', 'match_results')) }} as loaded_at
from {{ source('tap_jobresults', 'match_results') }}
