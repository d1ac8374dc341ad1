{#
  The few JSON operations the models need, for PostgreSQL (jsonb) and DuckDB (JSON). Everything goes through
  these so that a model reads the same on both. Other adapters: add a `<adapter>__` variant of each.
#}

{# A JSON column as JSON, with the JSON null that target-postgres stores for a null object turned into SQL NULL.
   to_jsonb() also accepts the text[] / bigint[] columns the loader makes for arrays of scalars. #}
{% macro json_value(expr) %}{{ return(adapter.dispatch('json_value', 'tap_jobresults')(expr)) }}{% endmacro %}
{% macro default__json_value(expr) %}nullif(to_jsonb({{ expr }}), 'null'::jsonb){% endmacro %}
{% macro duckdb__json_value(expr) -%}
  (case when json_type(cast({{ expr }} as json)) = 'NULL' then null else cast({{ expr }} as json) end)
{%- endmacro %}

{# object, array, string, number, boolean or null (SQL NULL for SQL NULL). #}
{% macro json_kind(expr) %}{{ return(adapter.dispatch('json_kind', 'tap_jobresults')(expr)) }}{% endmacro %}
{% macro default__json_kind(expr) %}jsonb_typeof({{ expr }}){% endmacro %}
{% macro duckdb__json_kind(expr) -%}
  (case json_type({{ expr }})
    when 'OBJECT' then 'object' when 'ARRAY' then 'array' when 'VARCHAR' then 'string'
    when 'BOOLEAN' then 'boolean' when 'NULL' then 'null'
    when 'BIGINT' then 'number' when 'UBIGINT' then 'number' when 'HUGEINT' then 'number' when 'DOUBLE' then 'number'
    else lower(json_type({{ expr }})) end)
{%- endmacro %}

{# A JSON value as text: strings unquoted, numbers and booleans as written, objects and arrays as JSON text. #}
{% macro json_text(expr) %}{{ return(adapter.dispatch('json_text', 'tap_jobresults')(expr)) }}{% endmacro %}
{% macro default__json_text(expr) %}({{ expr }} #>> '{}'){% endmacro %}
{% macro duckdb__json_text(expr) %}json_extract_string({{ expr }}, '$'){% endmacro %}

{# A JSON number as double precision; NULL when the value is not a number (a vendor sending "0.9" or null). #}
{% macro json_number(expr) -%}
  (case when {{ json_kind(expr) }} = 'number' then cast({{ json_text(expr) }} as double precision) end)
{%- endmacro %}

{# A JSON string (or number) as text; NULL for objects, arrays and null. #}
{% macro json_scalar(expr) -%}
  (case when {{ json_kind(expr) }} in ('string', 'number', 'boolean') then {{ json_text(expr) }} end)
{%- endmacro %}

{# `cross join` one row per element of a JSON array: <alias>.idx (0-based position) and <alias>.value.
   Anything that is not an array (SQL NULL, JSON null, an object) gives no rows. #}
{% macro json_array_elements(expr, alias) %}{{ return(adapter.dispatch('json_array_elements', 'tap_jobresults')(expr, alias)) }}{% endmacro %}
{% macro default__json_array_elements(expr, alias) -%}
  cross join lateral (
    select e.ordinality - 1 as idx, e.value
    from jsonb_array_elements(case when jsonb_typeof({{ expr }}) = 'array' then {{ expr }} else '[]'::jsonb end)
      with ordinality as e(value, ordinality)
  ) as {{ alias }}
{%- endmacro %}
{% macro duckdb__json_array_elements(expr, alias) -%}
  cross join lateral (
    select r.i as idx, ({{ expr }}) -> cast(r.i as integer) as value
    from range(cast(case when json_type({{ expr }}) = 'ARRAY' then json_array_length({{ expr }}) else 0 end as bigint)) as r(i)
  ) as {{ alias }}
{%- endmacro %}

{# `cross join` one row per key of a JSON object: <alias>.key and <alias>.value (JSON). Not an object: no rows. #}
{% macro json_object_entries(expr, alias) %}{{ return(adapter.dispatch('json_object_entries', 'tap_jobresults')(expr, alias)) }}{% endmacro %}
{% macro default__json_object_entries(expr, alias) -%}
  cross join lateral jsonb_each(case when jsonb_typeof({{ expr }}) = 'object' then {{ expr }} else '{}'::jsonb end)
    as {{ alias }}(key, value)
{%- endmacro %}
{% macro duckdb__json_object_entries(expr, alias) -%}
  cross join lateral (
    select k.key, ({{ expr }}) -> k.key as value
    from (select unnest(json_keys(case when json_type({{ expr }}) = 'OBJECT' then {{ expr }} else '{}'::json end)) as key) as k
  ) as {{ alias }}
{%- endmacro %}

{# Number of elements of a JSON array; NULL when it is not an array. #}
{% macro json_array_length(expr) %}{{ return(adapter.dispatch('json_array_length', 'tap_jobresults')(expr)) }}{% endmacro %}
{% macro default__json_array_length(expr) -%}
  (case when jsonb_typeof({{ expr }}) = 'array' then jsonb_array_length({{ expr }}) end)
{%- endmacro %}
{% macro duckdb__json_array_length(expr) -%}
  (case when json_type({{ expr }}) = 'ARRAY' then cast(json_array_length({{ expr }}) as bigint) end)
{%- endmacro %}
