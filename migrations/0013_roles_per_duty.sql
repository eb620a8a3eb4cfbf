-- A role per duty. The worker (message path, sender, reconciler, canary, retention) and the
-- administration surface (the CLI, the admin API) reach the database as two different roles, so a
-- flaw in the worker cannot add, re-status or offboard tenants or change accounts.
--
-- `wafleet migrate` creates both roles from DATABASE_URL and ADMIN_DATABASE_URL, records them in
-- wafleet_duty_roles, and then grants EXECUTE on each SECURITY DEFINER function to exactly the
-- duties its row in wafleet_function_grants names (revoking it from every other role). A function
-- without a row is refused by `wafleet migrate` and reported by scripts/db-guard.sql, so a function
-- added later is granted on purpose or not at all.

-- Unused since the outbox scheduler moved to wafleet_outbox_pick / _stale_sending_at and tenants
-- are added through wafleet_add_tenant_in_account: definer functions nobody calls are only surface.
drop function wafleet_outbox_due(integer);
drop function wafleet_outbox_stale_sending(interval);
drop function wafleet_add_tenant(text, text, text, text, text);

create table wafleet_duty_roles (
    duty text primary key check (duty in ('worker', 'admin')),
    role_name name not null
);

create table wafleet_function_grants (
    -- regprocedure input syntax, schema-qualified: the guard resolves it with to_regprocedure.
    signature text primary key,
    -- Who may EXECUTE it; empty for helpers that only other definer functions call.
    duties text[] not null check (duties <@ array['worker', 'admin']),
    why text not null
);

insert into wafleet_function_grants (signature, duties, why) values
    ('public.wafleet_resolve_tenant(text)', array['worker', 'admin'],
     'the message path resolves the queue''s tenant; the CLI and API look tenants up'),
    ('public.wafleet_list_tenants()', array['worker', 'admin'],
     'the worker subscribes to every active tenant; the CLI lists them'),
    ('public.wafleet_list_tenants_page(text,integer)', array['admin'], 'paged tenant list of the CLI and API'),
    ('public.wafleet_fleet_bridges()', array['worker', 'admin'],
     'the reconciler and the sender''s summaries read every bridge; so do bridge commands'),
    ('public.wafleet_outbox_pick(bigint,double precision,double precision,double precision,timestamptz)', array['worker'],
     'the sender''s fair cross-tenant pick'),
    ('public.wafleet_outbox_settle(timestamptz,integer)', array['worker'], 'the sender expires replies past their TTL'),
    ('public.wafleet_outbox_stale_sending_at(timestamptz,interval)', array['worker'],
     'the sender cuts sends whose claimer is gone'),
    ('public.wafleet_outbox_summary()', array['worker', 'admin'], 'backlog metrics of the worker; outbox summary of the CLI'),
    ('public.wafleet_retrying_counts()', array['worker', 'admin'], 'retry-tier depth per tenant'),
    ('public.wafleet_budget_take(bigint,text,double precision,double precision,double precision,timestamptz)', array['worker', 'admin'],
     'every WA Bridges call spends the account''s budget: the sender''s, and provisioning and bridge status of the CLI'),
    ('public.wafleet_budget_pause(bigint,text,double precision,double precision,timestamptz)', array['worker', 'admin'],
     'a 429 pauses the account, whoever received it'),
    ('public.wafleet_budget_state()', array['worker', 'admin'], 'budget gauges and summaries'),
    ('public.wafleet_budget_lock(bigint,text,double precision,double precision,double precision,timestamptz)', array[]::text[],
     'internal to the budget functions'),
    ('public.wafleet_tenant_sends_since(bigint,timestamptz,integer)', array[]::text[], 'internal to the pick'),
    ('public.wafleet_add_tenant_in_account(text,text,text,text,text,text)', array['admin'], 'tenant administration'),
    ('public.wafleet_set_tenant_status(text,text)', array['admin'], 'tenant administration'),
    ('public.wafleet_set_tenant_limits(text,integer,integer,integer)', array['admin'], 'tenant administration'),
    ('public.wafleet_set_tenant_queue_bound(text,bigint)', array['admin'], 'tenant administration'),
    ('public.wafleet_set_tenant_bot(text,text,text,text,boolean)', array['admin'], 'tenant administration'),
    ('public.wafleet_bump_generation(text)', array['admin'], 'tenant administration (URL rotation)'),
    ('public.wafleet_offboard_tenant(text)', array['admin'], 'tenant administration'),
    ('public.wafleet_add_account(text,text,text,integer,integer,boolean)', array['admin'], 'account administration');
