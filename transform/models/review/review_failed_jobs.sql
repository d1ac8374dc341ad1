-- Failed jobs of every source with their error, newest first.
{{ config(enabled=any_source_enabled()) }}
select
    source,
    job_stream,
    job_key,
    status,
    error_code,
    error_message,
    created_at,
    ended_at as failed_at,
    loaded_at
from {{ ref('jobs') }}
where failed
