-- One row per generated rule of a finished pipeline run.
{{ config(enabled=source_enabled('cognite')) }}
select
    cast(pipeline_id as bigint) as pipeline_id,
    cast(run_id as bigint) as run_id,
    cast(rule_index as bigint) as rule_index,
    cast(num_conflicts as bigint) as num_conflicts,
    cast(num_overlaps as bigint) as num_overlaps,
    {{ json_value('matches') }} as matches,
    {{ json_value('extractors') }} as extractors,
    {{ json_value('conditions') }} as conditions,
    cast(priority as bigint) as priority,
    {{ json_value('extra_fields') }} as extra_fields,
    {{ loaded_at(source('tap_jobresults', 'generated_rules')) }} as loaded_at
from {{ source('tap_jobresults', 'generated_rules') }}
