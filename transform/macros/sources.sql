{#
  Which vendors' tables this project reads. The tap lands tables only for the sources it is configured for
  (CDF: six streams, Clavata: two, Talonic: two; `sync_runs` for any), so a vendor that is not configured must be
  switched off here: its source tables, models and tests are then disabled (`dbt build` and `dbt source freshness`
  neither read nor test them).

    --vars '{"cognite_enabled": false, "clavata_enabled": false}'      # only Talonic configured
    DBT_COGNITE_ENABLED=false DBT_CLAVATA_ENABLED=false                  # the same from the environment (Meltano)

  Each var is read at parse time: from --vars, else env DBT_<VENDOR>_ENABLED, else true. sources.yml repeats
  the same expression (YAML cannot call macros).
#}
{% macro source_enabled(vendor) -%}
  {%- if vendor not in ('cognite', 'clavata', 'talonic') -%}
    {{ exceptions.raise_compiler_error("source_enabled: unknown vendor '" ~ vendor ~ "' (cognite, clavata, talonic)") }}
  {%- endif -%}
  {{- return((var(vendor ~ '_enabled', env_var('DBT_' ~ (vendor | upper) ~ '_ENABLED', 'true')) | string | lower) == 'true') -}}
{%- endmacro %}

{% macro any_source_enabled() -%}
  {{- return(source_enabled('cognite') or source_enabled('clavata') or source_enabled('talonic')) -}}
{%- endmacro %}

{#
  on-run-start: every enabled source table must exist. A vendor left enabled whose tables the tap never landed
  (not configured) fails here with the tables and the var to set, instead of 30 errors about missing relations.
#}
{% macro check_source_tables() %}
  {%- if execute and flags.WHICH in ('build', 'run', 'test', 'source', 'freshness') -%}
    {%- set vendors = {
      'entity_matching_jobs': 'cognite', 'match_results': 'cognite', 'pipeline_runs': 'cognite',
      'pipeline_matches': 'cognite', 'suggested_rules': 'cognite', 'generated_rules': 'cognite',
      'clavata_jobs': 'clavata', 'clavata_reports': 'clavata', 'extraction_jobs': 'talonic',
      'extraction_rows': 'talonic', 'sync_runs': 'sync_runs'} -%}
    {%- set missing = {} -%}
    {%- for node in graph.sources.values() if node.source_name == 'tap_jobresults' -%}
      {%- if adapter.get_relation(database=node.database, schema=node.schema, identifier=node.identifier) is none -%}
        {%- do missing.setdefault(vendors.get(node.name, node.name), []).append(node.schema ~ '.' ~ node.identifier) -%}
      {%- endif -%}
    {%- endfor -%}
    {%- if missing -%}
      {%- set lines = [] -%}
      {%- for vendor, tables in missing.items() | sort -%}
        {%- if vendor == 'sync_runs' -%}
          {%- do lines.append('sync_runs: ' ~ tables | join(', ') ~ ' is missing: set sync_runs_enabled: false (a tap older than the sync_runs stream), or check source_schema') -%}
        {%- else -%}
          {%- do lines.append(vendor ~ ': ' ~ tables | join(', ') ~ ' missing: if the tap is not configured for ' ~ vendor ~ ', set --vars \'{"' ~ vendor ~ '_enabled": false}\' (or DBT_' ~ vendor | upper ~ '_ENABLED=false); else check source_schema and that the load ran') -%}
        {%- endif -%}
      {%- endfor -%}
      {{ exceptions.raise_compiler_error("tap_jobresults: source tables not found.\n  " ~ lines | join("\n  ")) }}
    {%- endif -%}
  {%- endif -%}
{% endmacro %}
