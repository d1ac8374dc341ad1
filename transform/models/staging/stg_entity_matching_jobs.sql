-- One row per CDF entity-matching predict job (also while queued or running).
{{ config(enabled=source_enabled('cognite')) }}
select
    cast(job_id as bigint) as job_id,
    status,
    coalesce(finished, status in ('Completed', 'Failed')) as finished,
    {{ utc_timestamptz('created_time') }} as created_time,
    {{ utc_timestamptz('start_time') }} as start_time,
    {{ utc_timestamptz('status_time') }} as status_time,
    error_message,
    cast(item_count as bigint) as item_count,
    cast(model_id as bigint) as model_id,
    {{ json_value('extra_fields') }} as extra_fields,
    {{ loaded_at(source('tap_jobresults', 'entity_matching_jobs')) }} as loaded_at
from {{ source('tap_jobresults', 'entity_matching_jobs') }}
