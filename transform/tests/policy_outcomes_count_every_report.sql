-- Every Clavata report is counted exactly once, under its own policy and outcome.
{{ config(enabled=source_enabled('clavata')) }}
with landed as (
    select
        policy_id,
        count(*) as reports,
        sum(case when upper(outcome) = 'OUTCOME_TRUE' then 1 else 0 end) as outcome_true,
        sum(case when upper(outcome) = 'OUTCOME_FALSE' then 1 else 0 end) as outcome_false
    from {{ source('tap_jobresults', 'clavata_reports') }}
    group by policy_id
),

reviewed as (
    select policy_id, sum(reports) as reports, sum(outcome_true) as outcome_true, sum(outcome_false) as outcome_false
    from {{ ref('review_policy_outcomes') }}
    group by policy_id
)

select l.policy_id, l.reports, r.reports as reviewed_reports
from landed as l
left join reviewed as r
    on r.policy_id = l.policy_id or (r.policy_id is null and l.policy_id is null)
where r.reports is null or r.reports <> l.reports
    or r.outcome_true <> l.outcome_true or r.outcome_false <> l.outcome_false
