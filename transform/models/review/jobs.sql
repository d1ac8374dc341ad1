-- One row per job of any source: CDF predict jobs and pipeline runs, Clavata jobs, Talonic jobs, in one shape.
-- job_key is unique within job_stream (pipeline runs: '<pipeline_id>/<run_id>'). Only the vendors switched on
-- (macros/sources.sql) are unioned.
{{ config(enabled=any_source_enabled()) }}
{%- set parts = [] -%}
-- The column list names the columns whichever part comes first.
with unioned (
    source, job_stream, job_key, status, finished, failed, created_at, started_at, ended_at, error_code,
    error_message, progress, loaded_at
) as (
    {%- if source_enabled('cognite') %}{% do parts.append('entity_matching_jobs') %}
    {{ 'union all' if parts | length > 1 }}
    select
        'cognite' as source,
        'entity_matching_jobs' as job_stream,
        cast(job_id as {{ dbt.type_string() }}) as job_key,
        status,
        finished,
        upper(status) = 'FAILED' as failed,
        created_time as created_at,
        start_time as started_at,
        case when finished then status_time end as ended_at,
        cast(null as {{ dbt.type_string() }}) as error_code,
        error_message,
        cast(null as {{ dbt.type_string() }}) as progress,
        loaded_at
    from {{ ref('stg_entity_matching_jobs') }}
    {%- endif %}

    {%- if source_enabled('cognite') %}{% do parts.append('pipeline_runs') %}
    {{ 'union all' if parts | length > 1 }}
    select
        'cognite',
        'pipeline_runs',
        cast(pipeline_id as {{ dbt.type_string() }}) || '/' || cast(run_id as {{ dbt.type_string() }}),
        status,
        finished,
        upper(status) = 'FAILED',
        created_time,
        start_time,
        case when finished then status_time end,
        cast(null as {{ dbt.type_string() }}),
        coalesce(
            error_message,
            case when {{ json_array_length('errors') }} > 0 then {{ json_text('errors') }} end
        ),
        cast(null as {{ dbt.type_string() }}),
        loaded_at
    from {{ ref('stg_pipeline_runs') }}
    {%- endif %}

    {%- if source_enabled('clavata') %}{% do parts.append('clavata_jobs') %}
    {{ 'union all' if parts | length > 1 }}
    select
        'clavata',
        'clavata_jobs',
        job_uuid,
        status,
        finished,
        upper(status) in ('JOB_STATUS_FAILED', 'FAILED'),
        created,
        {{ utc_timestamptz('null') }},
        completed,
        cast(null as {{ dbt.type_string() }}),
        -- Clavata reports no reason for a failed job; the status is all there is.
        cast(null as {{ dbt.type_string() }}),
        cast(null as {{ dbt.type_string() }}),
        loaded_at
    from {{ ref('stg_clavata_jobs') }}
    {%- endif %}

    {%- if source_enabled('talonic') %}{% do parts.append('extraction_jobs') %}
    {{ 'union all' if parts | length > 1 }}
    select
        'talonic',
        'extraction_jobs',
        job_id,
        status,
        finished,
        lower(status) = 'failed',
        created_at,
        started_at,
        completed_at,
        error_code,
        error_message,
        case
            when document_count is not null
                then cast(coalesce(completed_documents, 0) as {{ dbt.type_string() }})
                    || '/' || cast(document_count as {{ dbt.type_string() }}) || ' documents'
                    || coalesce(' (' || current_phase || ')', '')
            else current_phase
        end,
        loaded_at
    from {{ ref('stg_extraction_jobs') }}
    {%- endif %}
)

select * from unioned
