-- Jobs still queued or running, oldest first, with their age when this model was built (as_of).
{{ config(enabled=any_source_enabled()) }}
select
    source,
    job_stream,
    job_key,
    status,
    created_at,
    started_at,
    progress,
    {{ dbt.current_timestamp() }} as as_of,
    cast({{ seconds_between('created_at', dbt.current_timestamp()) }} as bigint) as age_seconds,
    cast({{ seconds_between('started_at', dbt.current_timestamp()) }} as bigint) as running_seconds,
    loaded_at as last_seen_at
from {{ ref('jobs') }}
where not coalesce(finished, false)
