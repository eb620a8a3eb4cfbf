-- The fleet console of wafleet-admin: its sign-in sessions, the tenant list it pages and
-- searches, the send counts of its fleet page, and the isolation canary's last verdicts. Runs as
-- the owner. Expand only.
--
-- ISOLATION: none of these tables is tenant-owned. Sessions belong to admin tokens; canary
-- verdicts name a canary tenant by its ref and hold no message content. The two functions return
-- counts and timestamps only, never a body, chat or URL.

-- A console session: the SHA-256 of the random cookie value, and the admin token it signed in
-- with. A session lives while its token does (revoking the token ends it: every lookup joins the
-- live token) and until it expires; signing out deletes it.
create table console_sessions (
    session_hash bytea primary key,
    token_id     uuid not null references admin_tokens (token_id) on delete cascade,
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null,
    constraint console_sessions_hash_length check (length(session_hash) = 32)
);
create index console_sessions_expiry on console_sessions (expires_at);
create index console_sessions_token on console_sessions (token_id);

-- The last verdict of each canary tenant, written by the worker replica that holds the canary
-- lock, read by the console.
create table canary_results (
    customer_ref text primary key,
    passed       boolean not null,
    -- The failure reason (a metric label: misrouted, not_sent, timeout, ...); null when passed.
    reason       text,
    latency_ms   bigint,
    checked_at   timestamptz not null default now()
);

-- One page of tenants for the console: refs containing p_search (any, when null), of one status
-- (any, when null), after p_after in ref order; with the account's name and the time of the
-- newest sent reply (the outbox index on tenant, status and creation finds it without a scan).
create function wafleet_console_tenants(p_search text, p_status text, p_after text, p_limit integer)
returns table (tenant_id bigint, customer_ref text, status text, account text, bridge_state text,
               bot_kind text, queue_type text, last_reply_at timestamptz)
language sql stable security definer set search_path = public, pg_temp as $$
    select t.tenant_id, t.customer_ref, t.status, a.name, t.bridge_state, t.bot_kind, t.queue_type,
           (select o.sent_at from outbox o
             where o.tenant_id = t.tenant_id and o.status = 'sent'
             order by o.created_at desc limit 1)
    from tenants t
    join accounts a on a.account_id = t.account_id
    where (p_search is null or strpos(t.customer_ref, p_search) > 0)
      and (p_status is null or t.status = p_status)
      and (p_after is null or t.customer_ref > p_after)
    order by t.customer_ref
    limit greatest(p_limit, 0)
$$;

-- Per account: replies sent in the last minute and the last hour, and tenants with replies
-- waiting to be sent. The sent replies of the last hour are found by this index, not by a scan
-- of the outbox (one more index entry per sent reply).
create index outbox_sent_at on outbox (sent_at) where status = 'sent';
create function wafleet_console_account_sends(p_now timestamptz)
returns table (account_id bigint, sent_last_minute bigint, sent_last_hour bigint, tenants_waiting bigint)
language sql stable security definer set search_path = public, pg_temp as $$
    select t.account_id,
           count(*) filter (where o.status = 'sent' and o.sent_at > p_now - interval '1 minute'),
           count(*) filter (where o.status = 'sent'),
           count(distinct t.tenant_id) filter (where o.status = 'pending')
    from tenants t
    join outbox o on o.tenant_id = t.tenant_id
    where (o.status = 'sent' and o.sent_at > p_now - interval '1 hour') or o.status = 'pending'
    group by t.account_id
$$;

revoke all on function wafleet_console_tenants(text, text, text, integer) from public;
revoke all on function wafleet_console_account_sends(timestamptz) from public;

insert into wafleet_function_grants (signature, duties, why) values
    ('public.wafleet_console_tenants(text,text,text,integer)', array['admin'],
     'the console''s searchable, paged tenant list'),
    ('public.wafleet_console_account_sends(timestamptz)', array['admin'],
     'the console''s sends per account against the budget');
