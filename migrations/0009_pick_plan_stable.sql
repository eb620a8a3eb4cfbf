-- The fair scheduler plans its statements for every call, with the tables' current sizes.
--
-- Found by the fleet benchmark: the sender's connections are long-lived and start picking while
-- the outbox is still empty. PL/pgSQL caches a generic plan for each statement after five calls;
-- the plan chosen for empty tables turned the EXISTS tests into joins that scan the whole
-- pending-reply index for every tenant (a join filter instead of an index condition), and nothing
-- revisits a cached plan as the outbox grows until ANALYZE runs. With 1,000 tenants and 3,000
-- pending replies one pick then took ~0.6 s while holding the account's bucket row: one send a
-- second, until a manual ANALYZE brought it back to ~450 a second.
--
-- Custom plans use the current number of pages of every table, so the planner picks per-tenant
-- index probes for small candidate sets and hash joins for large fleets, for a fraction of a
-- millisecond of planning per call. (Forcing per-tenant probes in the SQL instead was measured
-- too: right at 1,000 tenants, ~3x slower at 10,000.) Expand only: signature, owner and grants
-- are unchanged.
alter function wafleet_outbox_pick(bigint, double precision, double precision, double precision, timestamptz)
    set plan_cache_mode = force_custom_plan;
