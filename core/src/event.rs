//! Names: an event (`namespace/name`, as in Kubernetes), one round of it, the strategy
//! that admits its requests, and the settings of a round.

use std::fmt;
use std::str::FromStr;

/// Longest user id accepted anywhere (JWT `sub`, trusted header, Kafka message).
pub const MAX_USER_ID_LEN: usize = 128;

/// An event, named like the CouponEvent resource it comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{what} must be 1 to {max} characters of a-z, 0-9, '-' or '.', starting and ending with a letter or digit")]
    InvalidName { what: &'static str, max: usize },
    #[error("user id must be 1 to {MAX_USER_ID_LEN} characters without control characters")]
    InvalidUserId,
}

impl EventId {
    /// Accepts Kubernetes names only (RFC 1123 subdomains for the name, labels for the
    /// namespace), so an id can never smuggle a Redis hash-tag brace or a key separator.
    pub fn new(namespace: &str, name: &str) -> Result<Self, NameError> {
        check_dns_name(namespace, 63, "namespace")?;
        check_dns_name(name, 253, "event name")?;
        Ok(Self { namespace: namespace.to_owned(), name: name.to_owned() })
    }

    /// `namespace/name`, the form stored in MySQL and carried in messages.
    pub fn parse_qualified(qualified: &str) -> Result<Self, NameError> {
        let (namespace, name) = qualified.split_once('/').ok_or(NameError::InvalidName { what: "event", max: 317 })?;
        Self::new(namespace, name)
    }

    pub fn round(&self, round: u32) -> RoundId {
        RoundId { event: self.clone(), round }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn check_dns_name(value: &str, max: usize, what: &'static str) -> Result<(), NameError> {
    let bytes = value.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let body_ok = bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.');
    if value.len() > max || !edge_ok(bytes.first()) || !edge_ok(bytes.last()) || !body_ok {
        return Err(NameError::InvalidName { what, max });
    }
    Ok(())
}

/// Checks a user id: non-empty, at most [`MAX_USER_ID_LEN`] characters, no control characters.
pub fn check_user_id(user: &str) -> Result<(), NameError> {
    let len = user.chars().count();
    if len == 0 || len > MAX_USER_ID_LEN || user.chars().any(char::is_control) {
        return Err(NameError::InvalidUserId);
    }
    Ok(())
}

/// One round of an event: a one-off event has round 1, a daily schedule counts up.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoundId {
    pub event: EventId,
    pub round: u32,
}

impl fmt::Display for RoundId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.event, self.round)
    }
}

impl FromStr for RoundId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = NameError::InvalidName { what: "round", max: 328 };
        let (event, round) = s.rsplit_once(':').ok_or(invalid.clone())?;
        let round = round.parse().map_err(|_| invalid)?;
        Ok(EventId::parse_qualified(event)?.round(round))
    }
}

pub use couponrush_strategy::{Strategy, UnknownStrategy};

/// The settings of one round, as the operator (or `couponrush-issuer prewarm`) writes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundSpec {
    pub stock: u32,
    pub per_user: u32,
    /// Opening instant, milliseconds since the epoch, compared against the backend's clock.
    pub start_ms: i64,
    /// Closing instant; `None` keeps the round open until sold out.
    pub end_ms: Option<i64>,
    pub strategy: Strategy,
    /// Stock buckets ([`crate::round_store::buckets`]): 1, or up to 64 for a
    /// `kafka-async` round of one coupon per user.
    pub buckets: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_follow_kubernetes_rules() {
        assert!(EventId::new("marketing", "opening-day.v2").is_ok());
        for (ns, name) in [("", "a"), ("Ns", "a"), ("ns", "a{b}"), ("ns", "-a"), ("ns", "a/b")] {
            assert!(EventId::new(ns, name).is_err(), "{ns}/{name} must be rejected");
        }
    }

    #[test]
    fn user_ids_reject_control_characters_and_overlong_values() {
        assert!(check_user_id("user-42@example").is_ok());
        assert!(check_user_id("사용자").is_ok());
        assert!(check_user_id("").is_err());
        assert!(check_user_id("a\nb").is_err());
        assert!(check_user_id(&"x".repeat(MAX_USER_ID_LEN + 1)).is_err());
    }

    #[test]
    fn round_ids_round_trip_through_text() -> anyhow::Result<()> {
        let round = EventId::new("ns", "spring-sale")?.round(7);
        assert_eq!(round.to_string().parse::<RoundId>()?, round);
        Ok(())
    }

    #[test]
    fn strategy_facts() {
        let in_redis: Vec<_> = Strategy::ALL.into_iter().filter(|s| s.counts_in_redis()).collect();
        assert_eq!(in_redis, [Strategy::KafkaAsync]);
        for strategy in Strategy::ALL {
            // Counts kept in Redis imply a current Redis `remaining`.
            assert!(!strategy.counts_in_redis() || strategy.redis_remaining_is_current());
            assert_eq!(strategy.persists_through_kafka(), strategy == Strategy::KafkaAsync);
        }
        assert!(Strategy::Queue.redis_remaining_is_current());
        assert_eq!(Strategy::Queue.max_per_user(), Some(1));
        assert_eq!(Strategy::DbLock.max_per_user(), None);
    }

    #[test]
    fn strategies_round_trip_through_text() -> anyhow::Result<()> {
        for strategy in Strategy::ALL {
            assert_eq!(strategy.as_str().parse::<Strategy>()?, strategy);
        }
        assert!("fastest".parse::<Strategy>().is_err());
        Ok(())
    }
}
