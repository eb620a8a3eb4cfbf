-- Issue #15 item 5: a claim is bound to the claiming sender's live database session.
--
-- `claimed_by` is the claimer's token: the second key of the session-level advisory lock
-- (CLAIM_LOCK_CLASS, token) that the sender holds on a dedicated connection while it runs
-- (fleet/src/outbox/lease.rs; keep 1464222540 = 0x5746434c equal to CLAIM_LOCK_CLASS there).
-- Null for rows claimed by a sender without a lease: only the age backstop applies to them.
alter table outbox add column claimed_by integer;

-- A `sending` row is cut when its claimer's lock is held by nobody (Postgres released it with the
-- claimer's connection: a crash, a kill, a black-holed worker whose session timed out), or,
-- as a backstop, when it is older than `p_older_than`. pg_locks is live, so a claimer that is
-- merely slow keeps its row. Two-int4 advisory locks show as classid/objid with objsubid 2.
create or replace function wafleet_outbox_stale_sending_at(p_now timestamptz, p_older_than interval)
returns table (outbox_id bigint, tenant_id bigint)
language sql stable security definer set search_path = public, pg_temp as $$
    select o.outbox_id, o.tenant_id from outbox o
    where o.status = 'sending'
      and (coalesce(o.attempted_at, o.updated_at) < coalesce(p_now, now()) - p_older_than
           or (o.claimed_by is not null and not exists (
                 select 1 from pg_catalog.pg_locks l
                 where l.locktype = 'advisory' and l.granted and l.objsubid = 2
                   and l.database = (select d.oid from pg_catalog.pg_database d where d.datname = current_database())
                   and l.classid = 1464222540::oid and l.objid = o.claimed_by::oid)))
$$;
