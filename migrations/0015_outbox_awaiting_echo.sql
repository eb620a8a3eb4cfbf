-- A send answered 503 (or a 5xx other than 500/502/504) may still have reached the person: the
-- reference does not say. Its row goes back to `pending` for a resend after the from_me echo
-- window, and stays matchable by the echo meanwhile. Expand-only: older workers ignore the column.
alter table outbox add column awaiting_echo boolean not null default false;
