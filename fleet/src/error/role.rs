//! Why a database role is refused at start.

/// Why the database role would make row-level security moot.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeRole {
    /// A superuser bypasses every policy.
    #[error("role {0} is a superuser, which bypasses row-level security")]
    Superuser(String),
    /// The role has `BYPASSRLS`.
    #[error("role {0} has BYPASSRLS")]
    BypassRls(String),
    /// The role has `CREATEROLE`, so it can grant itself membership in a table owner's role.
    #[error("role {0} has CREATEROLE")]
    CreateRole(String),
    /// The role inherits from a superuser or BYPASSRLS role.
    #[error("role {role} is a member of {privileged}, which is superuser or has BYPASSRLS")]
    MemberOfPrivileged {
        /// The connecting role.
        role: String,
        /// The privileged role it belongs to.
        privileged: String,
    },
    /// The role owns (or is a member of the owner of) a table, so policies do not apply to it.
    #[error("role {role} owns or is a member of table owner {owner}")]
    TableOwner {
        /// The connecting role.
        role: String,
        /// The table owner it is or belongs to.
        owner: String,
    },
    /// The database records no role for this duty (not migrated since the duty split), or the
    /// role may not read the record (it is not a duty role of this database).
    #[error("role {role} is not the {duty} role of this database (none is recorded, or {role} may not read the record; run `wafleet migrate`)")]
    NoDutyRole {
        /// The connecting role.
        role: String,
        /// `worker` or `admin`.
        duty: &'static str,
    },
    /// `wafleet migrate` recorded another role for this duty.
    #[error("{variable} connects as {role}, but the {duty} role of this database is {expected}")]
    NotTheDutyRole {
        /// The connecting role.
        role: String,
        /// `worker` or `admin`.
        duty: &'static str,
        /// The role `migrate` recorded for the duty.
        expected: String,
        /// The setting to change.
        variable: &'static str,
    },
    /// The worker's role is also the administration role (or a member of it).
    #[error("the worker's role {role} can act as the administration role {admin}")]
    WorkerCanAdminister {
        /// The connecting role.
        role: String,
        /// The administration role it inherits.
        admin: String,
    },
}

impl UnsafeRole {
    /// What to do about it. Names each duty's setting and default role literally (a test in `db`
    /// checks), so this module imports nothing from the modules that use it.
    pub fn advice() -> &'static str {
        "Point DATABASE_URL (default wafleet_worker) at the worker's role and ADMIN_DATABASE_URL (default \
         wafleet_admin) at the administration role, both created by `wafleet migrate`, \
         or set WAFLEET_ALLOW_UNSAFE_DB_ROLE=true for local experiments only"
    }
}
