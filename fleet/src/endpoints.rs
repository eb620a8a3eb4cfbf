//! Where the service layer finds its services: the database, the broker and its management API.
//! A plain value built by each binary's config; it reads no environment itself.

use crate::error::Result;
use crate::topology::Management;

/// Where the CLI finds its services.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// `DATABASE_URL` (application role).
    pub database_url: String,
    /// `AMQP_URL`.
    pub amqp_url: String,
    /// `RABBITMQ_API_URL`.
    pub rabbitmq_api_url: String,
}

impl Endpoints {
    /// Management API client for the vhost of `AMQP_URL`.
    pub fn management(&self) -> Result<Management> {
        Management::new(&self.rabbitmq_api_url, &wafleet_shared::amqp::vhost_of(&self.amqp_url))
    }
}
