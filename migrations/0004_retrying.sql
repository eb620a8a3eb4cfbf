-- Messages waiting in a retry tier, per tenant. The tier queues are shared by every tenant, so
-- the broker cannot say how many of a tenant's messages are retrying; the worker records it here
-- when it republishes to a tier and clears it when the message completes or is dead-lettered.
create table retrying (
    tenant_id  bigint not null references tenants (tenant_id),
    ingest_id  uuid not null,
    tier       text not null,
    due_at     timestamptz not null,
    created_at timestamptz not null default now(),
    primary key (tenant_id, ingest_id)
);

alter table retrying enable row level security;
alter table retrying force row level security;
create policy tenant_isolation on retrying
    using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)
    with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint);

-- Counts per tenant for `wafleet depth`: ids and numbers only.
create function wafleet_retrying_counts()
returns table (tenant_id bigint, retrying bigint)
language sql stable security definer set search_path = public, pg_temp as $$
    select r.tenant_id, count(*) from retrying r group by r.tenant_id
$$;
revoke all on function wafleet_retrying_counts() from public;

-- The trace context of the message that produced a reply, so the send joins the same trace.
alter table outbox add column traceparent text;
