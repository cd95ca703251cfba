//! One connection type for a single Redis node or a Redis Cluster, chosen by
//! configuration. Both are multiplexed: one connection carries every concurrent request
//! of the process, pipelined, which is what lets one issuer reach tens of thousands of
//! admissions per second.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// How long a caller waits for a Redis reply before the outcome counts as unknown
/// (`OUTCOME_UNKNOWN` for an admission). The operator's sizing reads it too: admissions
/// queued in front of Redis longer than this turn into 503s.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where Redis is: one URL for a single node, or the seed URLs of a cluster. A
/// `rediss://` URL connects over TLS, checked against `ca_pem` when set (a managed
/// Redis with its own CA) and the system's CAs otherwise; an ACL user and password go
/// in the URL (`rediss://user:password@host:port`).
#[derive(Clone)]
pub struct RedisTarget {
    pub urls: Vec<String>,
    pub cluster: bool,
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for RedisTarget {
    // The URLs may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<String> = self.urls.iter().map(|url| crate::redact_url(url)).collect();
        f.debug_struct("RedisTarget").field("urls", &hosts).field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

impl RedisTarget {
    /// `urls` is a comma-separated list; `cluster` says whether they are cluster seeds.
    pub fn new(urls: &str, cluster: bool) -> Self {
        Self {
            urls: urls.split(',').map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect(),
            cluster,
            ca_pem: None,
        }
    }

    /// The same target, its TLS certificate checked against `ca_pem` (PEM) when given.
    pub fn with_ca_pem(mut self, ca_pem: Option<&str>) -> Self {
        self.ca_pem = ca_pem.map(str::to_owned);
        self
    }

    fn certificates(&self) -> Option<redis::TlsCertificates> {
        let root_cert = self.ca_pem.as_ref()?.as_bytes().to_vec();
        Some(redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) })
    }

    /// A client for one node's URL, with the CA when one is configured.
    fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        match self.certificates() {
            Some(certificates) => redis::Client::build_with_tls(url, certificates),
            None => redis::Client::open(url),
        }
    }

    pub async fn connect(&self) -> redis::RedisResult<RedisConn> {
        let response_timeout = RESPONSE_TIMEOUT;
        let connect_timeout = Duration::from_secs(2);
        if self.cluster {
            let mut builder = ClusterClientBuilder::new(self.urls.clone())
                .response_timeout(response_timeout)
                .connection_timeout(connect_timeout);
            if let Some(certificates) = self.certificates() {
                builder = builder.certs(certificates);
            }
            let client = builder.build()?;
            return Ok(RedisConn::Cluster(client.get_async_connection().await?));
        }
        let url = self.urls.first().ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no Redis URL configured"))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response_timeout))
            .set_connection_timeout(Some(connect_timeout))
            .set_number_of_retries(2);
        let client = self.client(url)?;
        Ok(RedisConn::Single(ConnectionManager::new_with_config(client, config).await?))
    }

    /// A client for pub/sub. In a cluster a `PUBLISH` reaches every node, so
    /// subscribing on the first seed node hears every round's sold-out message.
    pub fn pubsub_client(&self) -> redis::RedisResult<redis::Client> {
        let url = self.urls.first().map(String::as_str).unwrap_or("redis://127.0.0.1:6379");
        self.client(url)
    }
}

/// A multiplexed connection to a single node or to a cluster; cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_command(cmd),
            RedisConn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(conn) => conn.get_db(),
            RedisConn::Cluster(conn) => conn.get_db(),
        }
    }
}
