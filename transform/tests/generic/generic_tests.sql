{# A composite primary key: no two rows share the same values of `columns` (NULLs compare equal here, so a
   key with a NULL part is still checked; the not_null tests on each part catch the NULL itself). #}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as n
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}

{# Every row satisfies `expression` (rows where it is NULL pass: use not_null for that). #}
{% test expression_true(model, expression) %}
select * from {{ model }} where not ({{ expression }})
{% endtest %}

{# A number within [min_value, max_value]; NULL passes. #}
{% test between(model, column_name, min_value, max_value) %}
select {{ column_name }} from {{ model }}
where {{ column_name }} < {{ min_value }} or {{ column_name }} > {{ max_value }}
{% endtest %}
