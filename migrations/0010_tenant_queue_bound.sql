-- A tenant's own bound on its queue (`wafleet tenants limits <ref> --queue-max-bytes`), overriding
-- the fleet-wide default of the `wafleet-tenant-queues` policy. The broker applies it as a policy of
-- its own; the row keeps it so operators and the admin API can see it. Null = the default.
-- Expand only: a new nullable column and a new function.
alter table tenants add column queue_max_bytes bigint check (queue_max_bytes > 0);

-- Sets (or clears, with null) the queue bound of a tenant that is not offboarded.
create function wafleet_set_tenant_queue_bound(p_ref text, p_max_bytes bigint)
returns bigint
language sql security definer set search_path = public, pg_temp as $$
    update tenants t set queue_max_bytes = p_max_bytes, updated_at = now()
    where t.customer_ref = p_ref and t.status <> 'offboarded'
    returning t.tenant_id
$$;

revoke all on function wafleet_set_tenant_queue_bound(text, bigint) from public;
