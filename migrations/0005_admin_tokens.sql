-- Admin API (issue #9): bearer tokens, asynchronous operations, idempotency records, and a
-- keyset page of the fleet. Runs as the owner. Expand only: nothing of an earlier release changes.
--
-- ISOLATION: none of these tables is tenant-owned. None has a tenant_id column, so tenant export
-- never includes them and RLS does not apply; operations name their tenant by its ref only, and
-- idempotency records hold the admin API's own answers (tenant metadata, never message content).
-- The application role gets only the grants it needs (worker/src/db.rs, role_statements).

-- Admin API bearer tokens. Only the SHA-256 of the token is stored; the token itself is shown
-- once, by `wafleet admin-tokens create`.
create table admin_tokens (
    token_id     uuid primary key,
    name         text not null,
    token_hash   bytea not null,
    read_only    boolean not null default false,
    created_by   text not null,
    created_at   timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    constraint admin_tokens_hash_key unique (token_hash),
    constraint admin_tokens_hash_length check (length(token_hash) = 32),
    constraint admin_tokens_name_format check (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$')
);
-- One live token per name; the name of a revoked token can be issued again.
create unique index admin_tokens_live_name on admin_tokens (name) where revoked_at is null;

-- Long-running admin API commands (offboarding): 202 + GET /v1/operations/{id}.
create table admin_operations (
    operation_id uuid primary key,
    kind         text not null,
    target       text not null,
    arguments    jsonb not null default '{}'::jsonb,
    status       text not null default 'pending',
    steps        jsonb not null default '[]'::jsonb,
    error        text,
    created_by   text not null,
    created_at   timestamptz not null default now(),
    started_at   timestamptz,
    -- Renewed while a run is alive; a pending or running operation whose heartbeat stopped was
    -- cut by a restart and is reported as failed.
    heartbeat_at timestamptz,
    finished_at  timestamptz,
    constraint admin_operations_kind check (kind in ('offboard')),
    constraint admin_operations_status check (status in ('pending', 'running', 'succeeded', 'failed'))
);
create index admin_operations_status on admin_operations (status, created_at);

-- Idempotency-Key records of the admin API, per token: the request's hash and, once it finished,
-- the answer to repeat. A record without an answer is a request still in progress.
create table admin_idempotency (
    token_id     uuid not null references admin_tokens (token_id),
    key          text not null,
    request_hash bytea not null,
    status_code  integer,
    response     jsonb,
    created_at   timestamptz not null default now(),
    primary key (token_id, key),
    constraint admin_idempotency_key_length check (length(key) between 1 and 255)
);
create index admin_idempotency_created on admin_idempotency (created_at);

-- One page of the fleet, by customer_ref after p_after (keyset pagination of GET /v1/tenants).
-- Same columns as wafleet_list_tenants: ids and metadata only.
create function wafleet_list_tenants_page(p_after text, p_limit integer)
returns table (tenant_id bigint, customer_ref text, bridge text, status text, generation bigint,
               auth_mode text, queue_type text, bot_kind text, created_at timestamptz)
language sql stable security definer set search_path = public, pg_temp as $$
    select t.tenant_id, t.customer_ref, t.bridge, t.status, t.generation, t.auth_mode, t.queue_type, t.bot_kind, t.created_at
    from tenants t
    where p_after is null or t.customer_ref > p_after
    order by t.customer_ref
    limit greatest(p_limit, 0)
$$;
revoke all on function wafleet_list_tenants_page(text, integer) from public;
