-- review_running_jobs lists each unfinished job of the four job-level streams once, and none that finished.
with expected as (
    select 'entity_matching_jobs' as job_stream, count(*) as n
    from {{ source('tap_jobresults', 'entity_matching_jobs') }} where not finished
    union all
    select 'pipeline_runs', count(*) from {{ source('tap_jobresults', 'pipeline_runs') }} where not finished
    union all
    select 'clavata_jobs', count(*) from {{ source('tap_jobresults', 'clavata_jobs') }} where not finished
    union all
    select 'extraction_jobs', count(*) from {{ source('tap_jobresults', 'extraction_jobs') }} where not finished
),

actual as (
    select job_stream, count(*) as n from {{ ref('review_running_jobs') }} group by job_stream
)

select e.job_stream, e.n as expected, coalesce(a.n, 0) as actual, null as status
from expected as e
left join actual as a on a.job_stream = e.job_stream
where coalesce(a.n, 0) <> e.n

union all

select job_stream, null, null, status
from {{ ref('review_running_jobs') }}
where upper(status) in ('COMPLETED', 'FAILED', 'JOB_STATUS_COMPLETED', 'JOB_STATUS_FAILED', 'JOB_STATUS_CANCELED',
                        'COMPLETE', 'CANCELLED')
    or age_seconds is null and created_at is not null
