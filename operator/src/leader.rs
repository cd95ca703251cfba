//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several
//! operator replicas exactly one reconciles. Taking and renewing the Lease are
//! replace calls guarded by its resourceVersion: of two replicas racing for an expired
//! Lease, the apiserver lets one write win and refuses the other.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Election {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl Election {
    /// Tries to take or renew the Lease once; returns whether this replica leads.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(now, seconds, 0, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec.renew_time.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
        let valid_for = jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
        let expired = renewed.checked_add(valid_for).map_or(true, |until| until < now) || holder.is_empty();
        if holder != self.identity && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != self.identity);
        let acquired = if holder == self.identity { spec.acquire_time.map_or(now, |t| t.0) } else { now };
        lease.spec = Some(self.spec(now, seconds, transitions, acquired));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Someone else wrote first: they lead.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn spec(&self, now: Timestamp, seconds: i32, transitions: i32, acquired: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Gives the Lease up (on shutdown), so another replica takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str())
        {
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.renew_time = None;
            }
            if let Err(error) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
                tracing::warn!(%error, "releasing the lease failed; it expires by itself");
            }
        }
    }

    /// Keeps trying and renewing until `shutdown`; publishes whether this replica leads.
    pub async fn run(self, leading: watch::Sender<bool>, shutdown: CancellationToken) {
        let every = self.duration / 3;
        loop {
            let leads = match self.try_lead().await {
                Ok(leads) => leads,
                Err(error) => {
                    tracing::warn!(%error, "leader election call failed");
                    false
                }
            };
            if leading.send_replace(leads) != leads {
                tracing::info!(identity = %self.identity, leads, "leadership changed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        if *leading.borrow() {
            self.release().await;
        }
    }
}
