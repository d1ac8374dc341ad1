-- review_running_jobs lists each unfinished job of the four job-level streams once, and none that finished.
{{ config(enabled=any_source_enabled()) }}
{%- set parts = [] -%}
{%- if source_enabled('cognite') -%}
    {%- do parts.append("select 'entity_matching_jobs', count(*) from " ~ source('tap_jobresults', 'entity_matching_jobs') ~ " where not finished") -%}
    {%- do parts.append("select 'pipeline_runs', count(*) from " ~ source('tap_jobresults', 'pipeline_runs') ~ " where not finished") -%}
{%- endif -%}
{%- if source_enabled('clavata') -%}
    {%- do parts.append("select 'clavata_jobs', count(*) from " ~ source('tap_jobresults', 'clavata_jobs') ~ " where not finished") -%}
{%- endif -%}
{%- if source_enabled('talonic') -%}
    {%- do parts.append("select 'extraction_jobs', count(*) from " ~ source('tap_jobresults', 'extraction_jobs') ~ " where not finished") -%}
{%- endif %}
with expected (job_stream, n) as (
    {{ parts | join('\n    union all\n    ') }}
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
