-- One row per CDF pipeline run (also while queued or running).
{{ config(enabled=source_enabled('cognite')) }}
select
    cast(pipeline_id as bigint) as pipeline_id,
    cast(run_id as bigint) as run_id,
    status,
    coalesce(finished, status in ('Completed', 'Failed')) as finished,
    {{ utc_timestamptz('created_time') }} as created_time,
    {{ utc_timestamptz('start_time') }} as start_time,
    {{ utc_timestamptz('status_time') }} as status_time,
    error_message,
    {{ json_value('errors') }} as errors,
    cast(match_count as bigint) as match_count,
    cast(suggested_rule_count as bigint) as suggested_rule_count,
    cast(generated_rule_count as bigint) as generated_rule_count,
    {{ json_value('extra_fields') }} as extra_fields,
    {{ loaded_at(source('tap_jobresults', 'pipeline_runs')) }} as loaded_at
from {{ source('tap_jobresults', 'pipeline_runs') }}
