//! Where the service layer finds its services: the database, the broker and its management API.
//! A plain value built by each binary's config; it reads no environment itself.

use wafleet_shared::amqp::{AmqpEndpoints, ConnectError};

use crate::error::Result;
use crate::topology::Management;

/// Where the CLI and the admin API find their services.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// `ADMIN_DATABASE_URL`: the administration role, which the service layer acts as.
    pub database_url: String,
    /// `AMQP_URL`: one URL, or a comma-separated list of one cluster's node URLs.
    pub amqp_url: String,
    /// `RABBITMQ_API_URL`: one URL, or a comma-separated list of the nodes' management URLs.
    pub rabbitmq_api_url: String,
}

impl Endpoints {
    /// Management API client for the vhost of `AMQP_URL` (refused when its endpoints disagree).
    pub fn management(&self) -> Result<Management> {
        let amqp = AmqpEndpoints::parse(&self.amqp_url).map_err(ConnectError::from)?;
        Management::new(&self.rabbitmq_api_url, amqp.vhost())
    }
}
