//! One connection type for a single Redis node or a Redis Cluster, chosen by
//! configuration. Both are multiplexed: one connection carries every concurrent request
//! of the process, pipelined, which is what lets one issuer reach tens of thousands of
//! admissions per second.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// Where Redis is: one URL for a single node, or the seed URLs of a cluster.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    pub urls: Vec<String>,
    pub cluster: bool,
}

impl RedisTarget {
    /// `urls` is a comma-separated list; `cluster` says whether they are cluster seeds.
    pub fn new(urls: &str, cluster: bool) -> Self {
        Self { urls: urls.split(',').map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect(), cluster }
    }

    pub async fn connect(&self) -> redis::RedisResult<RedisConn> {
        let response_timeout = Duration::from_secs(2);
        let connect_timeout = Duration::from_secs(2);
        if self.cluster {
            let client = ClusterClientBuilder::new(self.urls.clone())
                .response_timeout(response_timeout)
                .connection_timeout(connect_timeout)
                .build()?;
            return Ok(RedisConn::Cluster(client.get_async_connection().await?));
        }
        let url = self.urls.first().ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no Redis URL configured"))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response_timeout))
            .set_connection_timeout(Some(connect_timeout))
            .set_number_of_retries(2);
        let client = redis::Client::open(url.as_str())?;
        Ok(RedisConn::Single(ConnectionManager::new_with_config(client, config).await?))
    }

    /// A client for pub/sub. In a cluster a `PUBLISH` reaches every node, so
    /// subscribing on the first seed node hears every round's sold-out message.
    pub fn pubsub_client(&self) -> redis::RedisResult<redis::Client> {
        let url = self.urls.first().map(String::as_str).unwrap_or("redis://127.0.0.1:6379");
        redis::Client::open(url)
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
