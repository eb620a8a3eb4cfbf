-- Database guard: one query that lists every way the schema could let one tenant read
-- or write another tenant's rows, or a duty's role do more than its duty. It returns one row per
-- violation (violation, object, detail) and no row when the schema is sound. The roles to check
-- are the one named by the setting wafleet.guard_role when it is set (scripts/db-guard.sh and
-- tests/tests/it/db_guard.rs set it), else every role `wafleet migrate` recorded in
-- wafleet_duty_roles (the worker's and the administration role).
--
-- Tenant-owned tables are discovered from the catalog: every table with a tenant_id column, in
-- every schema but the system ones. Nothing here names a wafleet table, so a new table is checked
-- the day it is added.
with
app_schema as (
    select n.oid, n.nspname
    from pg_namespace n
    where n.nspname not in ('pg_catalog', 'information_schema')
      and n.nspname not like 'pg\_toast%'
      and n.nspname not like 'pg\_temp\_%'
),
guard_setting as (
    select nullif(current_setting('wafleet.guard_role', true), '') as role_name
),
app_role as (
    select r.oid, r.rolname, r.rolsuper, r.rolbypassrls, r.rolcreaterole
    from pg_roles r
    where r.rolname = (select role_name from guard_setting)
       or ((select role_name from guard_setting) is null and r.rolname in (select role_name from wafleet_duty_roles))
),
duty_role as (
    select d.duty, r.oid, r.rolname from wafleet_duty_roles d join pg_roles r on r.rolname = d.role_name
),
tenant_table as (
    select c.oid, c.relname, s.nspname, format('%I.%I', s.nspname, c.relname) as name,
           c.relrowsecurity, c.relforcerowsecurity, a.attnum, a.attnotnull
    from pg_class c
    join app_schema s on s.oid = c.relnamespace
    join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id' and a.attnum > 0 and not a.attisdropped
    where c.relkind in ('r', 'p')
),
definer as (
    select p.oid, format('%I.%s(%s)', s.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) as name,
           p.proname, p.proowner, p.proconfig, p.proacl, p.prorettype, p.proretset, p.proargnames, p.proargmodes
    from pg_proc p
    join app_schema s on s.oid = p.pronamespace
    where p.prosecdef
),
-- Column names that carry message content (or a tenant's free text) and must never leave a
-- definer function.
content_name(name) as (
    values ('body'), ('payload'), ('chat'), ('chat_id'), ('text'), ('reply'), ('raw'), ('bot_config')
)
-- Role ------------------------------------------------------------------------------------------
select 'app_role_missing' as violation, coalesce((select role_name from guard_setting), 'wafleet_duty_roles') as object,
       'the application role does not exist (or no duty role is recorded), so nothing below could be checked for it' as detail
where not exists (select 1 from app_role)
union all
select 'app_role_superuser', r.rolname, 'a superuser bypasses row-level security' from app_role r where r.rolsuper
union all
select 'app_role_bypassrls', r.rolname, 'BYPASSRLS ignores every policy' from app_role r where r.rolbypassrls
union all
select 'app_role_createrole', r.rolname, 'CREATEROLE can grant itself membership in a table owner''s role'
from app_role r where r.rolcreaterole
union all
select 'app_role_member_of_privileged_role', r.rolname, format('member of %I, which is superuser or BYPASSRLS', p.rolname)
from app_role r
join pg_roles p on p.oid <> r.oid and (p.rolsuper or p.rolbypassrls)
where pg_has_role(r.oid, p.oid, 'MEMBER')
union all
select 'app_role_owns_or_is_member_of_table_owner', format('%I.%I', s.nspname, c.relname),
       format('owned by %I; the owner is exempt from RLS unless forced and may alter or disable it',
              pg_get_userbyid(c.relowner))
from pg_class c
join app_schema s on s.oid = c.relnamespace
cross join app_role r
where c.relkind in ('r', 'p', 'v', 'm', 'f') and pg_has_role(r.oid, c.relowner, 'MEMBER')
union all
select 'app_role_owns_or_is_member_of_definer_owner', d.name,
       'the application role could redefine a function that runs with the owner''s rights'
from definer d cross join app_role r
where pg_has_role(r.oid, d.proowner, 'MEMBER')
union all
select 'app_role_can_create_in_schema', s.nspname,
       'CREATE lets the application role add objects (views, functions, FK probes) next to tenant data'
from app_schema s cross join app_role r
where has_schema_privilege(r.oid, s.oid, 'CREATE')
-- Tenant-owned tables ---------------------------------------------------------------------------
union all
select 'rls_disabled', t.name, 'row-level security is not enabled' from tenant_table t where not t.relrowsecurity
union all
select 'rls_not_forced', t.name, 'row-level security is not FORCEd, so the owner bypasses it'
from tenant_table t where not t.relforcerowsecurity
union all
select 'no_policy', t.name, 'no row-level security policy'
from tenant_table t where not exists (select 1 from pg_policy p where p.polrelid = t.oid)
union all
-- A permissive policy is OR-ed with the others: one that does not test app.tenant_id opens the
-- table to every tenant.
select 'policy_not_tenant_scoped', format('%s policy %I', t.name, p.polname),
       'a permissive policy whose USING or WITH CHECK does not test app.tenant_id'
from tenant_table t
join pg_policy p on p.polrelid = t.oid and p.polpermissive
where (p.polqual is not null and pg_get_expr(p.polqual, p.polrelid) not like '%app.tenant_id%')
   or (p.polwithcheck is not null and pg_get_expr(p.polwithcheck, p.polrelid) not like '%app.tenant_id%')
   or (p.polqual is null and p.polwithcheck is null)
union all
select 'tenant_id_nullable', t.name, 'tenant_id must be NOT NULL' from tenant_table t where not t.attnotnull
union all
select 'tenant_id_not_leading_index', t.name, 'no index leads with tenant_id'
from tenant_table t
where not exists (select 1 from pg_index i where i.indrelid = t.oid and i.indkey[0] = t.attnum)
union all
select 'tenant_id_without_foreign_key', t.name, 'tenant_id does not reference the tenants table'
from tenant_table t
where t.relname <> 'tenants'
  and not exists (
      select 1 from pg_constraint k
      join pg_class f on f.oid = k.confrelid
      where k.conrelid = t.oid and k.contype = 'f' and k.conkey = array[t.attnum] and f.relname = 'tenants')
union all
-- TRUNCATE ignores RLS; REFERENCES allows foreign-key probes that ignore RLS; TRIGGER lets the
-- role attach code to every tenant's writes.
select 'tenant_table_privilege', t.name, format('the application role has %s', x.privilege)
from tenant_table t
cross join app_role r
cross join (values ('TRUNCATE'), ('REFERENCES'), ('TRIGGER')) as x(privilege)
where has_table_privilege(r.oid, t.oid, x.privilege)
union all
-- A view runs with its owner's rights (who bypasses RLS) unless it is security_invoker; a
-- materialized view has no RLS at all.
select 'view_bypasses_rls', format('%I.%I', s.nspname, c.relname),
       'the application role can read a view that is not security_invoker'
from pg_class c
join app_schema s on s.oid = c.relnamespace
cross join app_role r
where c.relkind = 'v'
  and has_table_privilege(r.oid, c.oid, 'SELECT')
  and not coalesce(c.reloptions && array['security_invoker=true', 'security_invoker=on', 'security_invoker=1'], false)
union all
select 'materialized_view_readable', format('%I.%I', s.nspname, c.relname),
       'the application role can read a materialized view (no RLS applies to it)'
from pg_class c
join app_schema s on s.oid = c.relnamespace
cross join app_role r
where c.relkind = 'm' and has_table_privilege(r.oid, c.oid, 'SELECT')
-- SECURITY DEFINER functions ----------------------------------------------------------------------
union all
select 'definer_without_search_path', d.name, 'no fixed search_path (SET search_path = ..., pg_temp)'
from definer d
where not exists (select 1 from unnest(coalesce(d.proconfig, '{}')) c where c like 'search\_path=%')
union all
-- Unless pg_temp is named last, it is searched first for tables, so any caller could shadow one.
select 'definer_search_path_pg_temp_not_last', d.name, format('%s', c)
from definer d
cross join unnest(d.proconfig) c
where c like 'search\_path=%' and c !~ '(=|,)\s*"?pg_temp"?\s*$'
union all
select 'definer_executable_by_public', d.name, 'EXECUTE is granted to PUBLIC (revoke it; grant the roles that need it)'
from definer d
where d.proacl is null
   or exists (select 1 from aclexplode(d.proacl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE')
union all
select 'definer_without_duty_row', d.name,
       'no row in wafleet_function_grants says which duty may execute it (add one in the migration that adds the function)'
from definer d
where not exists (select 1 from wafleet_function_grants g where to_regprocedure(g.signature) = d.oid)
union all
-- EXECUTE held by a role that is not the role of a duty the function's row names (the worker on
-- an administration function, a leftover single application role, a hand-made grant).
select 'definer_executable_outside_its_duties', d.name, format('%I may execute it', pg_get_userbyid(a.grantee))
from definer d
cross join aclexplode(d.proacl) a
where a.privilege_type = 'EXECUTE' and a.grantee not in (0, d.proowner)
  and not exists (
      select 1 from wafleet_function_grants g join duty_role dr on dr.duty = any (g.duties)
      where to_regprocedure(g.signature) = d.oid and dr.oid = a.grantee)
union all
select 'duty_grant_of_missing_function', g.signature, 'wafleet_function_grants names a function that does not exist'
from wafleet_function_grants g
where to_regprocedure(g.signature) is null
union all
select 'worker_role_can_administer', w.rolname, format('member of the administration role %I', a.rolname)
from duty_role w join duty_role a on a.duty = 'admin'
where w.duty = 'worker' and pg_has_role(w.oid, a.oid, 'USAGE')
union all
select 'definer_returns_content', d.name, format('returns column %I', o.name)
from definer d
cross join lateral unnest(d.proargnames, d.proargmodes) as o(name, mode)
where d.proargmodes is not null and o.mode in ('o', 'b', 't') and lower(o.name) in (select name from content_name)
union all
-- A whole row type hands out every column, including the ones added later. The one exception is
-- an internal helper whose type holds only budget counters.
select 'definer_returns_rowtype', d.name, format('returns %s', format_type(d.prorettype, null))
from definer d
join pg_type ty on ty.oid = d.prorettype
where ty.typrelid <> 0
  and d.proname not in ('wafleet_budget_lock') -- returns budget_buckets: account, tokens, pause; no tenant data
union all
select 'definer_returns_content', d.name, format('its return type %s has column %I', format_type(d.prorettype, null), a.attname)
from definer d
join pg_type ty on ty.oid = d.prorettype and ty.typrelid <> 0
join pg_attribute a on a.attrelid = ty.typrelid and a.attnum > 0 and not a.attisdropped
where lower(a.attname) in (select name from content_name)
union all
select 'definer_returns_json', d.name, 'returns json/jsonb, which can carry a payload'
from definer d
where d.prorettype in ('json'::regtype, 'jsonb'::regtype, 'json[]'::regtype, 'jsonb[]'::regtype)
order by 1, 2;
