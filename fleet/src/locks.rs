//! The one registry of Postgres advisory-lock keys. Every leader election and
//! "one at a time" guard takes its key from here, so two duties can never share a key by
//! accident: retention and the canary once did, and a leading canary (which holds its lock for
//! its lifetime) silently stopped retention from ever pruning personal data.
//!
//! Keys are `"wafleet"` in ASCII followed by a distinct low byte, so they stay recognisable in
//! `pg_locks` (`classid`/`objid` halves) and never collide with sqlx's migrator lock, which is
//! derived from a CRC of the database name.

/// An advisory-lock key with the duty it guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockKey {
    /// What holding the lock entitles to (for logs and the uniqueness test).
    pub duty: &'static str,
    /// The `bigint` passed to `pg_try_advisory_lock`.
    pub key: i64,
}

/// Elects the topology reconciler leader (worker).
pub const RECONCILER: LockKey = LockKey { duty: "reconciler", key: 0x7761_666c_6565_7401 };
/// Elects the replica running the isolation canary (worker); held for the leader's lifetime.
pub const CANARY: LockKey = LockKey { duty: "canary", key: 0x7761_666c_6565_7402 };
/// One retention run at a time across worker replicas and the CLI.
pub const RETENTION: LockKey = LockKey { duty: "retention", key: 0x7761_666c_6565_7403 };

/// Every key in use. A new duty adds its key here, and the test below proves it is unique.
pub const ALL: [LockKey; 3] = [RECONCILER, CANARY, RETENTION];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advisory_lock_key_and_duty_is_distinct() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_ne!(a.key, b.key, "{} and {} share an advisory-lock key", a.duty, b.duty);
                assert_ne!(a.duty, b.duty);
            }
        }
    }
}
