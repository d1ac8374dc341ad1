-- review_failed_jobs lists every failed job once, with the error message the source landed for it.
with expected as (
    select 'entity_matching_jobs' as job_stream, cast(job_id as {{ dbt.type_string() }}) as job_key, error_message
    from {{ source('tap_jobresults', 'entity_matching_jobs') }} where status = 'Failed'
    union all
    select 'pipeline_runs', cast(pipeline_id as {{ dbt.type_string() }}) || '/' || cast(run_id as {{ dbt.type_string() }}), error_message
    from {{ source('tap_jobresults', 'pipeline_runs') }} where status = 'Failed'
    union all
    select 'clavata_jobs', job_uuid, cast(null as {{ dbt.type_string() }})
    from {{ source('tap_jobresults', 'clavata_jobs') }} where status = 'JOB_STATUS_FAILED'
    union all
    select 'extraction_jobs', job_id, error_message
    from {{ source('tap_jobresults', 'extraction_jobs') }} where lower(status) = 'failed'
)

select e.job_stream, e.job_key, e.error_message as expected, f.error_message as actual
from expected as e
left join {{ ref('review_failed_jobs') }} as f
    on f.job_stream = e.job_stream and f.job_key = e.job_key
where f.job_key is null
    or (e.error_message is not null and (f.error_message is null or f.error_message <> e.error_message))

union all

select f.job_stream, f.job_key, null, f.error_message
from {{ ref('review_failed_jobs') }} as f
left join expected as e
    on f.job_stream = e.job_stream and f.job_key = e.job_key
where e.job_key is null
