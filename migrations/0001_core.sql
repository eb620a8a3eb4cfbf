-- wafleet core schema. Runs as the owner role (MIGRATE_DATABASE_URL). The application role
-- (DATABASE_URL) owns nothing and gets its grants from `wafleet migrate` afterwards.
--
-- ISOLATION: every tenant-owned table has tenant_id NOT NULL, a leading index column, FORCE row
-- level security and a policy on the transaction-local setting app.tenant_id. Cross-tenant needs
-- go through the narrow SECURITY DEFINER functions at the end, which return ids and metadata only.

create table tenants (
    tenant_id       bigint generated always as identity primary key,
    customer_ref    text not null,
    bridge          text not null,
    instance_id     bigint,
    status          text not null default 'active',
    generation      bigint not null default 1,
    auth_mode       text not null default 'token',
    queue_type      text not null default 'quorum',
    bot_kind        text not null default 'echo',
    bot_config      jsonb not null default '{}'::jsonb,
    bridge_state    text not null default 'unknown',
    bridge_state_at timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    -- A ref is never reused: offboarded rows stay as tombstones and keep the ref taken.
    constraint tenants_customer_ref_key unique (customer_ref),
    -- A bridge belongs to exactly one tenant.
    constraint tenants_bridge_key unique (bridge),
    constraint tenants_customer_ref_format check (customer_ref ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    constraint tenants_bridge_nonempty check (length(bridge) between 1 and 256),
    constraint tenants_status check (status in ('active', 'disabled', 'offboarded')),
    constraint tenants_generation check (generation >= 1),
    constraint tenants_auth_mode check (auth_mode in ('token', 'open')),
    constraint tenants_queue_type check (queue_type in ('quorum', 'classic')),
    constraint tenants_bot_kind check (bot_kind in ('echo', 'rules'))
);

create table processed_events (
    tenant_id           bigint not null references tenants (tenant_id),
    ingest_id           uuid not null,
    event_type          text not null,
    chat_id             text,
    from_me             boolean not null default false,
    provider_message_id text,
    outcome             text not null,
    received_at         timestamptz not null,
    processed_at        timestamptz not null default now(),
    primary key (tenant_id, ingest_id)
);
-- The same WhatsApp message posted twice (WA Bridges may duplicate) is processed once.
create unique index processed_events_provider_key
    on processed_events (tenant_id, coalesce(chat_id, ''), from_me, provider_message_id)
    where provider_message_id is not null;
create index processed_events_processed_at on processed_events (tenant_id, processed_at);

create table outbox (
    outbox_id           bigint generated always as identity primary key,
    tenant_id           bigint not null references tenants (tenant_id),
    ingest_id           uuid not null,
    chat                text not null,
    body                text not null,
    status              text not null default 'pending',
    attempts            integer not null default 0,
    next_attempt_at     timestamptz not null default now(),
    expires_at          timestamptz not null,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    sent_at             timestamptz,
    provider_message_id text,
    last_error          text,
    constraint outbox_status check (status in ('pending', 'sending', 'sent', 'failed', 'unknown', 'cancelled', 'expired'))
);
create index outbox_tenant_status on outbox (tenant_id, status, created_at);
create index outbox_pending_due on outbox (next_attempt_at, tenant_id) where status = 'pending';

create table bot_rules (
    rule_id    bigint generated always as identity primary key,
    tenant_id  bigint not null references tenants (tenant_id),
    keyword    text not null,
    reply      text not null,
    created_at timestamptz not null default now(),
    constraint bot_rules_keyword_key unique (tenant_id, keyword),
    constraint bot_rules_keyword_nonempty check (length(keyword) between 1 and 200)
);

create table message_log (
    log_id      bigint generated always as identity primary key,
    tenant_id   bigint not null references tenants (tenant_id),
    ingest_id   uuid,
    direction   text not null,
    event_type  text not null,
    chat_id     text,
    body        text,
    created_at  timestamptz not null default now(),
    constraint message_log_direction check (direction in ('in', 'out'))
);
create index message_log_tenant_created on message_log (tenant_id, created_at);

-- ISOLATION: row-level security on every tenant-owned table. FORCE makes the policy bind the
-- table owner too. The setting is transaction-local (set_config(.., true)), so a pooled
-- connection never carries one tenant's id into another transaction.
do $$
declare
    t text;
begin
    foreach t in array array['tenants', 'processed_events', 'outbox', 'bot_rules', 'message_log'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format(
            'create policy tenant_isolation on %I using (tenant_id = nullif(current_setting(''app.tenant_id'', true), '''')::bigint) '
            'with check (tenant_id = nullif(current_setting(''app.tenant_id'', true), '''')::bigint)', t);
    end loop;
end
$$;

-- Tell workers (LISTEN wafleet_tenants) that the tenant set changed, so the reconciler and the
-- consumers pick up new, disabled or rotated tenants without polling.
create function wafleet_notify_tenant_change() returns trigger
language plpgsql set search_path = public, pg_temp as $$
begin
    perform pg_notify('wafleet_tenants', new.customer_ref);
    return new;
end
$$;
create trigger tenants_notify after insert or update on tenants
    for each row execute function wafleet_notify_tenant_change();

-- ---------------------------------------------------------------------------------------------
-- Narrow SECURITY DEFINER functions. Each has a fixed search_path and returns ids and metadata,
-- never message content. They run as the owner, which must be able to bypass RLS (superuser or
-- BYPASSRLS); `wafleet migrate` checks that.
-- ---------------------------------------------------------------------------------------------

-- ref -> tenant metadata. ISOLATION: the only cross-tenant lookup by ref.
create function wafleet_resolve_tenant(p_ref text)
returns table (tenant_id bigint, status text, generation bigint, auth_mode text)
language sql stable security definer set search_path = public, pg_temp as $$
    select t.tenant_id, t.status, t.generation, t.auth_mode from tenants t where t.customer_ref = p_ref
$$;

-- The fleet, for the reconciler, consumers and `tenants list`.
create function wafleet_list_tenants()
returns table (tenant_id bigint, customer_ref text, bridge text, status text, generation bigint,
               auth_mode text, queue_type text, bot_kind text, created_at timestamptz)
language sql stable security definer set search_path = public, pg_temp as $$
    select t.tenant_id, t.customer_ref, t.bridge, t.status, t.generation, t.auth_mode, t.queue_type, t.bot_kind, t.created_at
    from tenants t order by t.customer_ref
$$;

-- Adds a tenant. Idempotent for an identical tenant; the caller maps unique violations
-- (tenants_bridge_key, tenants_customer_ref_key) to clear errors.
create function wafleet_add_tenant(p_ref text, p_bridge text, p_bot_kind text, p_auth_mode text, p_queue_type text)
returns table (tenant_id bigint, created boolean)
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    existing tenants%rowtype;
begin
    select * into existing from tenants t where t.customer_ref = p_ref;
    if found then
        if existing.status = 'offboarded' then
            raise exception 'customer_ref % was offboarded and can never be reused', p_ref
                using errcode = 'P0001', hint = 'tombstoned';
        end if;
        if existing.bridge = p_bridge and existing.bot_kind = p_bot_kind and existing.auth_mode = p_auth_mode
           and existing.queue_type = p_queue_type then
            return query select existing.tenant_id, false;
            return;
        end if;
        raise exception 'tenant % already exists with different settings', p_ref
            using errcode = 'P0001', hint = 'conflict';
    end if;
    return query
        insert into tenants as t (customer_ref, bridge, bot_kind, auth_mode, queue_type)
        values (p_ref, p_bridge, p_bot_kind, p_auth_mode, p_queue_type)
        returning t.tenant_id, true;
end
$$;

-- Enables or disables a tenant. Offboarded tenants stay offboarded.
create function wafleet_set_tenant_status(p_ref text, p_status text)
returns bigint
language plpgsql security definer set search_path = public, pg_temp as $$
declare
    id bigint;
begin
    if p_status not in ('active', 'disabled') then
        raise exception 'status must be active or disabled' using errcode = '22023';
    end if;
    update tenants t set status = p_status, updated_at = now()
    where t.customer_ref = p_ref and t.status <> 'offboarded'
    returning t.tenant_id into id;
    return id;
end
$$;

-- Due outbox rows, the oldest per tenant first, so one tenant's backlog cannot starve the
-- others (round robin by tenant). Ids and timestamps only.
create function wafleet_outbox_due(p_limit integer)
returns table (outbox_id bigint, tenant_id bigint, created_at timestamptz)
language sql stable security definer set search_path = public, pg_temp as $$
    select d.outbox_id, d.tenant_id, d.created_at from (
        select distinct on (o.tenant_id) o.outbox_id, o.tenant_id, o.created_at
        from outbox o
        where o.status = 'pending' and o.next_attempt_at <= now()
        order by o.tenant_id, o.created_at, o.outbox_id
    ) d
    order by d.created_at
    limit p_limit
$$;

-- Rows a crashed sender left in 'sending'. Ids only.
create function wafleet_outbox_stale_sending(p_older_than interval)
returns table (outbox_id bigint, tenant_id bigint)
language sql stable security definer set search_path = public, pg_temp as $$
    select o.outbox_id, o.tenant_id from outbox o
    where o.status = 'sending' and o.updated_at < now() - p_older_than
$$;

revoke all on function wafleet_resolve_tenant(text) from public;
revoke all on function wafleet_list_tenants() from public;
revoke all on function wafleet_add_tenant(text, text, text, text, text) from public;
revoke all on function wafleet_set_tenant_status(text, text) from public;
revoke all on function wafleet_outbox_due(integer) from public;
revoke all on function wafleet_outbox_stale_sending(interval) from public;
