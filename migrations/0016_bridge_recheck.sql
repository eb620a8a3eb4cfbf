-- Connection events arrive at most once. A bridge marked `disconnected` holds its tenant's replies,
-- so one lost `connected` event would hold them until they expire. The sender re-checks such a
-- bridge through /proxy/status with backoff, only while replies wait; these columns carry the
-- backoff across replicas, and the claim below hands each due bridge to one replica at a time.
alter table tenants
    add column bridge_recheck_at timestamptz,
    add column bridge_recheck_failures integer not null default 0;

-- One disconnected bridge of `p_account` whose tenant is active, has a pending reply and is due
-- for a re-check; its next check moves out by base * 2^failures (at most p_max_ms).
create function wafleet_claim_bridge_recheck(p_account bigint, p_base_ms integer, p_max_ms integer)
returns table (tenant_id bigint, customer_ref text)
language sql security definer set search_path = public, pg_temp as $$
    update tenants t
    set bridge_recheck_at = now() + least(p_max_ms::double precision,
                                          p_base_ms * power(2, least(t.bridge_recheck_failures, 20)))
                                    * interval '1 millisecond',
        bridge_recheck_failures = t.bridge_recheck_failures + 1
    where t.tenant_id = (
        select d.tenant_id from tenants d
        where d.account_id = p_account and d.status = 'active' and d.bridge_state = 'disconnected'
          and (d.bridge_recheck_at is null or d.bridge_recheck_at <= now())
          and exists (select 1 from outbox o where o.tenant_id = d.tenant_id and o.status = 'pending')
        order by d.bridge_recheck_at nulls first, d.tenant_id
        limit 1
        for update skip locked)
    returning t.tenant_id, t.customer_ref
$$;
revoke all on function wafleet_claim_bridge_recheck(bigint, integer, integer) from public;

insert into wafleet_function_grants (signature, duties, why) values
    ('public.wafleet_claim_bridge_recheck(bigint,integer,integer)', array['worker'],
     'the sender re-checks disconnected bridges whose replies wait, across tenants');
