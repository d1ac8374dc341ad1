-- review_failed_jobs lists every failed job once, with the error message the source landed for it.
{{ config(enabled=any_source_enabled()) }}
{%- set parts = [] -%}
{%- if source_enabled('cognite') -%}
    {%- do parts.append("select 'entity_matching_jobs', cast(job_id as " ~ dbt.type_string() ~ "), error_message from "
        ~ source('tap_jobresults', 'entity_matching_jobs') ~ " where status = 'Failed'") -%}
    {%- do parts.append("select 'pipeline_runs', cast(pipeline_id as " ~ dbt.type_string() ~ ") || '/' || cast(run_id as "
        ~ dbt.type_string() ~ "), error_message from " ~ source('tap_jobresults', 'pipeline_runs') ~ " where status = 'Failed'") -%}
{%- endif -%}
{%- if source_enabled('clavata') -%}
    {%- do parts.append("select 'clavata_jobs', job_uuid, cast(null as " ~ dbt.type_string() ~ ") from "
        ~ source('tap_jobresults', 'clavata_jobs') ~ " where status = 'JOB_STATUS_FAILED'") -%}
{%- endif -%}
{%- if source_enabled('talonic') -%}
    {%- do parts.append("select 'extraction_jobs', job_id, error_message from "
        ~ source('tap_jobresults', 'extraction_jobs') ~ " where lower(status) = 'failed'") -%}
{%- endif %}
with expected (job_stream, job_key, error_message) as (
    {{ parts | join('\n    union all\n    ') }}
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
