//! The sender's re-check of disconnected bridges (see `wafleet_fleet::bridge_recheck`): one loop
//! per account, asking `/proxy/status` for at most one due bridge per pass, with a proxy token of
//! that account's budget like any other proxy call.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wafleet_fleet::accounts::AccountRuntime;
use wafleet_fleet::bridge_client::ApiError;
use wafleet_fleet::budget::{self, Bucket, Take};
use wafleet_fleet::error::Result;
use wafleet_fleet::{bridge_recheck, tenant};

use super::Sender;

impl Sender {
    /// Re-checks `account`'s due bridges until `stop` fires.
    pub(super) async fn recheck_loop(self: Arc<Self>, account: Arc<AccountRuntime>, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if let Err(e) = self.recheck_one(&account).await {
                warn!(account = %account.name, error = %e, "bridge re-check failed");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.housekeeping_interval) => {}
            }
        }
    }

    async fn recheck_one(&self, account: &AccountRuntime) -> Result<()> {
        let Some(customer_ref) = bridge_recheck::claim_due(&self.pool, account.id, &self.config.recheck).await? else {
            return Ok(());
        };
        let tenant = tenant::load_by_ref(&self.pool, &customer_ref).await?;
        // ISOLATION: the claimed tenant's own bridge, asked with its own account's key only.
        if tenant.account_id() != account.id {
            return Ok(());
        }
        // No token now: the claim already moved the next re-check out, so the budget of the
        // account's replies is never waited on for a status call.
        if let Take::Wait(_) = budget::take(&self.pool, account, Bucket::Proxy, self.clock.now()).await? {
            return Ok(());
        }
        let result = match account.client.status(tenant.bridge()).await {
            Ok(status) if status == "connected" => {
                if bridge_recheck::record_connected(&self.pool, tenant.id()).await? {
                    info!(tenant = %customer_ref, "bridge connected again; its held replies go out");
                    self.wake.notify_one();
                }
                "connected"
            }
            Ok(status) => {
                debug!(tenant = %customer_ref, %status, "bridge still not connected");
                "not_connected"
            }
            Err(ApiError::RateLimited { retry_after }) => {
                let pause = retry_after.map(std::time::Duration::from_secs);
                budget::pause(&self.pool, account, Bucket::Proxy, pause, self.clock.now()).await?;
                "rate_limited"
            }
            Err(e) => {
                warn!(tenant = %customer_ref, error = %e, "bridge status unavailable; asked again later");
                "error"
            }
        };
        metrics::counter!(crate::metric::BRIDGE_RECHECKS_TOTAL, "result" => result).increment(1);
        Ok(())
    }
}
