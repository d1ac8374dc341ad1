-- One row per match of a finished pipeline run.
{{ config(enabled=source_enabled('cognite')) }}
select
    cast(pipeline_id as bigint) as pipeline_id,
    cast(run_id as bigint) as run_id,
    cast(match_index as bigint) as match_index,
    match_type,
    cast(score as double precision) as score,
    {{ json_value('source') }} as source,
    {{ json_scalar(json_value('source') ~ " -> 'name'") }} as source_name,
    {{ json_value('target') }} as target,
    {{ json_scalar(json_value('target') ~ " -> 'name'") }} as target_name,
    {{ json_scalar(json_value('target') ~ " -> 'id'") }} as target_id,
    {{ json_value('extra_fields') }} as extra_fields,
    {{ loaded_at(source('tap_jobresults', 'pipeline_matches')) }} as loaded_at
from {{ source('tap_jobresults', 'pipeline_matches') }}
