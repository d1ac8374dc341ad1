-- One row per section report of a Clavata result: clavata_reports.section_evaluation_reports unnested.
-- outcome is reviewResult.outcome, falling back to the deprecated `result` (as the tap does for the report).
{{ config(enabled=source_enabled('clavata')) }}
select
    r.job_uuid,
    r.result_index,
    s.idx as section_index,
    r.policy_id,
    r.policy_key,
    {{ json_scalar("s.value -> 'name'") }} as section_name,
    {{ json_scalar("s.value -> 'message'") }} as message,
    coalesce(
        {{ json_scalar("s.value -> 'reviewResult' -> 'outcome'") }},
        {{ json_scalar("s.value -> 'result'") }}
    ) as outcome,
    {{ json_number("s.value -> 'reviewResult' -> 'score'") }} as score,
    r.created,
    s.value as report
from {{ ref('stg_clavata_reports') }} as r
{{ json_array_elements('r.section_evaluation_reports', 's') }}
