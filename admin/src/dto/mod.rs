//! Request and response bodies of the admin API: the contract published in `openapi.json`. They
//! are converted from the service layer's types here, so an internal change cannot silently
//! change the contract (the OpenAPI check fails instead).

mod accounts;
mod queues;
mod records;
mod tenants;
mod tokens;
mod upkeep;

pub use accounts::*;
pub use queues::*;
pub use records::*;
pub use tenants::*;
pub use tokens::*;
pub use upkeep::*;
