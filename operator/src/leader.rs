//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several
//! operator replicas exactly one reconciles. Taking and renewing the Lease are
//! replace calls guarded by its resourceVersion: of two replicas racing for an expired
//! Lease, the apiserver lets one write win and refuses the other.

use std::time::{Duration, Instant};

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
        let duration = self.duration;
        keep_leading(|| self.try_lead(), duration, &leading, &shutdown).await;
        if *leading.borrow() {
            // Bounded like every other call: a hung apiserver must not hold up shutdown.
            if tokio::time::timeout(duration / 3, self.release()).await.is_err() {
                tracing::warn!("releasing the lease timed out; it expires by itself");
            }
        }
        leading.send_replace(false);
    }
}

/// How long this replica may act as leader: until the Lease it last wrote expires,
/// counted on the monotonic clock from the moment that write was *sent* (the apiserver
/// stored it at that instant or later, so the others' view of the expiry is no earlier).
/// A renew call that hangs changes nothing here: the deadline passes all the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tenure {
    until: Option<Instant>,
}

impl Tenure {
    /// A write of the Lease that was sent at `sent` succeeded.
    pub fn renewed(&mut self, sent: Instant, duration: Duration) {
        self.until = Some(sent + duration);
    }

    /// Someone else holds the Lease.
    pub fn lost(&mut self) {
        self.until = None;
    }

    pub fn leads(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.until
    }
}

/// The election loop, over any way of trying to lead once (the Lease calls; a stub in
/// tests). Every attempt is bounded by a third of the Lease duration and by the current
/// tenure's deadline, and leadership is re-judged against that deadline whatever the
/// attempt does: a leader whose renewals hang stops leading when its Lease expires.
pub async fn keep_leading<F, Fut>(
    mut attempt: F,
    duration: Duration,
    leading: &watch::Sender<bool>,
    shutdown: &CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, kube::Error>>,
{
    let every = duration / 3;
    let mut tenure = Tenure::default();
    let publish = |tenure: &Tenure| {
        let leads = tenure.leads(Instant::now());
        if leading.send_replace(leads) != leads {
            tracing::info!(leads, "leadership changed");
        }
    };
    loop {
        let sent = Instant::now();
        // Give up on the attempt at the deadline too, so a hang cannot outlive the tenure.
        let give_up = tenure.deadline().filter(|d| *d > sent).map_or(sent + every, |d| d.min(sent + every));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            result = tokio::time::timeout_at(give_up.into(), attempt()) => match result {
                Ok(Ok(true)) => tenure.renewed(sent, duration),
                Ok(Ok(false)) => tenure.lost(),
                Ok(Err(error)) => tracing::warn!(%error, "leader election call failed"),
                Err(_) => tracing::warn!(timeout_ms = give_up.duration_since(sent).as_millis(), "leader election call timed out"),
            },
        }
        publish(&tenure);
        // Sleep until the next renewal, or until the tenure ends if that comes first.
        let now = Instant::now();
        let wake = tenure.deadline().filter(|d| *d > now).map_or(sent + every, |d| d.min(sent + every)).max(now);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        publish(&tenure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_tenure_ends_at_its_deadline() {
        let t0 = Instant::now();
        let mut tenure = Tenure::default();
        assert!(!tenure.leads(t0));
        tenure.renewed(t0, Duration::from_secs(15));
        assert!(tenure.leads(t0 + Duration::from_secs(14)));
        assert!(!tenure.leads(t0 + Duration::from_secs(15)), "the Lease's own deadline");
        tenure.renewed(t0 + Duration::from_secs(5), Duration::from_secs(15));
        assert!(tenure.leads(t0 + Duration::from_secs(19)));
        tenure.lost();
        assert!(!tenure.leads(t0 + Duration::from_secs(6)));
    }

    #[tokio::test]
    async fn a_leader_whose_renewal_hangs_stops_at_the_deadline() {
        let duration = Duration::from_millis(900);
        let calls = Arc::new(AtomicU32::new(0));
        let (leading, mut watch) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let counter = calls.clone();
        let attempt = move || {
            let call = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if call == 0 {
                    Ok(true)
                } else {
                    // The renewal never returns.
                    std::future::pending::<Result<bool, kube::Error>>().await
                }
            }
        };
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { keep_leading(attempt, duration, &leading, &stop).await });
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), watch.wait_for(|leads| *leads))
            .await
            .expect("leads")
            .expect("open");
        tokio::time::timeout(Duration::from_secs(3), watch.wait_for(|leads| !*leads))
            .await
            .expect("stepped down although every renewal hangs")
            .expect("open");
        let after = started.elapsed();
        assert!(after >= Duration::from_millis(850) && after < Duration::from_millis(1500), "{after:?}");
        assert!(calls.load(Ordering::SeqCst) >= 2, "it kept trying");
        shutdown.cancel();
        task.await.expect("joins");
    }
}
