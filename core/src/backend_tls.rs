//! TLS and authentication for managed Redis, MySQL and Kafka: what a backends Secret
//! holds beside the addresses, and how each client is built from it.
//!
//! Redis and MySQL credentials travel in their URLs (`rediss://user:password@host:6380`,
//! `mysql://user:password@host/db?ssl-mode=VERIFY_IDENTITY`); what a URL cannot carry is
//! here: each backend's CA certificate as PEM text (a Secret value, so no file has to be
//! mounted), and Kafka's security protocol and SASL login. Unset, everything is
//! plaintext as on a developer's machine; a `rediss://` URL or an `ssl-mode` without a
//! CA trusts the system's CAs.

use clap::Args;
use rdkafka::ClientConfig;

use crate::workload::env;

/// Kafka security protocols librdkafka speaks.
pub const KAFKA_SECURITY_PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"];
/// SASL mechanisms that need no Kerberos (SCRAM is what managed Kafka services offer).
pub const KAFKA_SASL_MECHANISMS: [&str; 3] = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"];

#[derive(Clone, Default, PartialEq, Eq, Hash, Args)]
pub struct BackendTls {
    /// CA certificate (PEM text) that Redis' TLS certificate must chain to, for
    /// `rediss://` URLs; unset: the system's CAs.
    #[arg(long, env = env::REDIS_CA_PEM, hide_env_values = true, global = true)]
    pub redis_ca_pem: Option<String>,
    /// CA certificate (PEM text) that MySQL's certificate must chain to, with
    /// `ssl-mode=VERIFY_CA` or `VERIFY_IDENTITY` in the URL; unset: the system's CAs.
    #[arg(long, env = env::DATABASE_CA_PEM, hide_env_values = true, global = true)]
    pub database_ca_pem: Option<String>,
    /// Kafka security protocol (unset: PLAINTEXT).
    #[arg(long, env = env::KAFKA_SECURITY_PROTOCOL, value_parser = KAFKA_SECURITY_PROTOCOLS, global = true)]
    pub kafka_security_protocol: Option<String>,
    /// Kafka SASL mechanism, with SASL_SSL or SASL_PLAINTEXT.
    #[arg(long, env = env::KAFKA_SASL_MECHANISM, value_parser = KAFKA_SASL_MECHANISMS, global = true)]
    pub kafka_sasl_mechanism: Option<String>,
    /// Kafka SASL user.
    #[arg(long, env = env::KAFKA_SASL_USERNAME, global = true)]
    pub kafka_sasl_username: Option<String>,
    /// Kafka SASL password.
    #[arg(long, env = env::KAFKA_SASL_PASSWORD, hide_env_values = true, global = true)]
    pub kafka_sasl_password: Option<String>,
    /// CA certificate (PEM text) that the Kafka brokers' certificates must chain to;
    /// unset: the system's CAs.
    #[arg(long, env = env::KAFKA_CA_PEM, hide_env_values = true, global = true)]
    pub kafka_ca_pem: Option<String>,
}

impl std::fmt::Debug for BackendTls {
    // Says what is set, never a value: the password is a secret and the CAs are noise.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("redis_ca_pem", &self.redis_ca_pem.is_some())
            .field("database_ca_pem", &self.database_ca_pem.is_some())
            .field("kafka_security_protocol", &self.kafka_security_protocol)
            .field("kafka_sasl_mechanism", &self.kafka_sasl_mechanism)
            .field("kafka_sasl_username", &self.kafka_sasl_username)
            .field("kafka_sasl_password", &self.kafka_sasl_password.as_ref().map(|_| "***"))
            .field("kafka_ca_pem", &self.kafka_ca_pem.is_some())
            .finish()
    }
}

/// A backends Secret value that is not one of the accepted ones.
#[derive(Debug, thiserror::Error)]
#[error("{key} is {value:?}; expected one of {expected:?}")]
pub struct InvalidValue {
    pub key: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

impl BackendTls {
    /// Reads the settings by their environment names (the keys of a backends Secret),
    /// through `lookup`; empty values count as unset. Checks the enumerated ones as the
    /// binaries' command lines do, so a Secret the operator accepts is one the pods accept.
    pub fn from_lookup(lookup: impl Fn(&'static str) -> Option<String>) -> Result<Self, InvalidValue> {
        let value = |key: &'static str| lookup(key).filter(|v| !v.trim().is_empty());
        let one_of = |key: &'static str, expected: &'static [&'static str]| match value(key) {
            Some(v) if !expected.contains(&v.as_str()) => Err(InvalidValue { key, value: v, expected }),
            other => Ok(other),
        };
        Ok(Self {
            redis_ca_pem: value(env::REDIS_CA_PEM),
            database_ca_pem: value(env::DATABASE_CA_PEM),
            kafka_security_protocol: one_of(env::KAFKA_SECURITY_PROTOCOL, &KAFKA_SECURITY_PROTOCOLS)?,
            kafka_sasl_mechanism: one_of(env::KAFKA_SASL_MECHANISM, &KAFKA_SASL_MECHANISMS)?,
            kafka_sasl_username: value(env::KAFKA_SASL_USERNAME),
            kafka_sasl_password: value(env::KAFKA_SASL_PASSWORD),
            kafka_ca_pem: value(env::KAFKA_CA_PEM),
        })
    }

    /// Redis at `urls` (a cluster's seeds when `cluster`), with the CA.
    pub fn redis(&self, urls: &str, cluster: bool) -> crate::redis_conn::RedisTarget {
        crate::redis_conn::RedisTarget::new(urls, cluster).with_ca_pem(self.redis_ca_pem.as_deref())
    }

    /// MySQL at `url`, with the CA: what a pool connects with.
    pub fn database(&self, url: &str) -> Result<sqlx::mysql::MySqlConnectOptions, sqlx::Error> {
        crate::db::connect_options(url, self.database_ca_pem.as_deref())
    }

    /// A pool of at most `max_connections` to MySQL at `url`, with the CA.
    pub async fn connect_database(&self, url: &str, max_connections: u32) -> Result<sqlx::MySqlPool, sqlx::Error> {
        crate::db::connect_with(self.database(url)?, max_connections).await
    }

    /// Adds the Kafka settings to a librdkafka configuration.
    pub(crate) fn apply_to_kafka(&self, config: &mut ClientConfig) {
        let settings = [
            ("security.protocol", &self.kafka_security_protocol),
            ("sasl.mechanism", &self.kafka_sasl_mechanism),
            ("sasl.username", &self.kafka_sasl_username),
            ("sasl.password", &self.kafka_sasl_password),
            ("ssl.ca.pem", &self.kafka_ca_pem),
        ];
        for (name, value) in settings {
            if let Some(value) = value {
                config.set(name, value);
            }
        }
        // Without a CA of its own, TLS trusts the system's CAs: librdkafka looks for them
        // where distributions (and the distroless image) keep them.
        let tls = self.kafka_security_protocol.as_deref().is_some_and(|p| p.ends_with("SSL"));
        if tls && self.kafka_ca_pem.is_none() {
            config.set("ssl.ca.location", "probe");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_with_an_unknown_protocol_is_refused_by_name() {
        let secret = |key: &str| (key == env::KAFKA_SECURITY_PROTOCOL).then(|| "TLS".to_owned());
        let error = BackendTls::from_lookup(secret).expect_err("TLS is not a protocol");
        assert_eq!(error.key, env::KAFKA_SECURITY_PROTOCOL);
        assert!(error.to_string().contains("SASL_SSL"), "{error}");
    }

    #[test]
    fn empty_values_are_unset_and_the_password_is_never_printed() {
        let secret = |key: &str| match key {
            env::KAFKA_SASL_PASSWORD => Some("hunter2".to_owned()),
            env::REDIS_CA_PEM => Some("  ".to_owned()),
            _ => None,
        };
        let tls = BackendTls::from_lookup(secret).expect("valid settings");
        assert_eq!(tls.redis_ca_pem, None);
        assert!(!format!("{tls:?}").contains("hunter2"));
    }
}
