-- Crash-loop backstop for classic tenant queues, which have no broker-side delivery limit: the
-- worker counts redeliveries here and dead-letters a message past the limit.
create table delivery_attempts (
    tenant_id  bigint not null references tenants (tenant_id),
    ingest_id  uuid not null,
    attempts   integer not null default 0,
    updated_at timestamptz not null default now(),
    primary key (tenant_id, ingest_id)
);

alter table delivery_attempts enable row level security;
alter table delivery_attempts force row level security;
create policy tenant_isolation on delivery_attempts
    using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)
    with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint);
