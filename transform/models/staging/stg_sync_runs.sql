-- One row per job-level stream per tap run: the tap's heartbeat.
{{ config(enabled=(var('sync_runs_enabled', env_var('DBT_SYNC_RUNS_ENABLED', 'true')) | string | lower == 'true')) }}
select
    cast(run_id as {{ dbt.type_string() }}) as run_id,
    job_stream,
    source,
    {{ utc_timestamptz('started_at') }} as started_at,
    {{ utc_timestamptz('finished_at') }} as finished_at,
    cast(jobs_listed as bigint) as jobs_listed,
    cast(jobs_synced as bigint) as jobs_synced,
    cast(jobs_pending as bigint) as jobs_pending,
    cast(jobs_failed as bigint) as jobs_failed,
    status,
    {{ loaded_at(source('tap_jobresults', 'sync_runs')) }} as loaded_at
from {{ source('tap_jobresults', 'sync_runs') }}
