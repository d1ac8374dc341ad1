-- One row per suggested rule of a finished pipeline run.
{{ config(enabled=source_enabled('cognite')) }}
select
    cast(pipeline_id as bigint) as pipeline_id,
    cast(run_id as bigint) as run_id,
    cast(rule_index as bigint) as rule_index,
    input_pattern,
    predict_pattern,
    cast(num_matches as bigint) as num_matches,
    cast(avg_score as double precision) as avg_score,
    {{ json_value('match_index') }} as match_index,
    {{ json_value('matches') }} as matches,
    {{ json_value('extra_fields') }} as extra_fields,
    {{ loaded_at(source('tap_jobresults', 'suggested_rules')) }} as loaded_at
from {{ source('tap_jobresults', 'suggested_rules') }}
