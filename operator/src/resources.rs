//! The workloads of an event, built with no API calls: the issuer Deployment, Service
//! and PodDisruptionBudget, and the consumer Deployment, sized by [`crate::sizing`],
//! owned by the CouponEvent (so deleting it removes them), reading the backends'
//! addresses from the event's Secret.

use std::collections::BTreeMap;

use couponrush_crds::CouponEvent;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecretEnvSource, Service, ServicePort, ServiceSpec, TopologySpreadConstraint,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::sizing::{PodResources, Sizing};

pub const ISSUER: &str = "issuer";
pub const CONSUMER: &str = "consumer";
pub const EVENT_LABEL: &str = "couponrush.io/event";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// What the workloads need besides the event: images and where the backends are.
#[derive(Clone, Debug)]
pub struct WorkloadInputs {
    pub issuer_image: String,
    pub consumer_image: String,
    pub backends_secret: String,
    pub topic: String,
    pub sizing: Sizing,
}

/// `<event>-issuer` / `<event>-consumer`.
pub fn workload_name(event: &str, component: &str) -> String {
    format!("{event}-{component}")
}

/// The Kafka topic of an event: one per event, so its consumers are its own.
pub fn topic_name(namespace: &str, event: &str) -> String {
    format!("couponrush.{namespace}.{event}")
}

fn labels(event: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), format!("couponrush-{component}")),
        ("app.kubernetes.io/part-of".to_owned(), "couponrush".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "couponrush-operator".to_owned()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
        (EVENT_LABEL.to_owned(), event.to_owned()),
    ])
}

fn selector(event: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(COMPONENT_LABEL.to_owned(), component.to_owned()), (EVENT_LABEL.to_owned(), event.to_owned())])
}

fn meta(ce: &CouponEvent, component: &str) -> ObjectMeta {
    let name = ce.metadata.name.clone().unwrap_or_default();
    ObjectMeta {
        name: Some(workload_name(&name, component)),
        namespace: ce.metadata.namespace.clone(),
        labels: Some(labels(&name, component)),
        owner_references: ce.controller_owner_ref(&()).map(|owner: OwnerReference| vec![owner]),
        ..ObjectMeta::default()
    }
}

fn resources(pod: &PodResources) -> ResourceRequirements {
    let quantities = |cpu: u32, mib: u32| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(format!("{cpu}m"))),
            ("memory".to_owned(), Quantity(format!("{mib}Mi"))),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities(pod.cpu_request_millis, pod.memory_request_mib)),
        limits: Some(quantities(pod.cpu_limit_millis, pod.memory_limit_mib)),
        ..ResourceRequirements::default()
    }
}

fn env(pairs: &[(&str, String)]) -> Vec<EnvVar> {
    pairs
        .iter()
        .map(|(name, value)| EnvVar { name: (*name).to_owned(), value: Some(value.clone()), ..EnvVar::default() })
        .collect()
}

fn probe(path: &str, port: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn deployment(
    ce: &CouponEvent,
    component: &str,
    image: &str,
    replicas: u32,
    pod: &PodResources,
    env_vars: Vec<EnvVar>,
    port: i32,
    secret: &str,
) -> Deployment {
    let event = ce.metadata.name.clone().unwrap_or_default();
    let container = Container {
        name: component.to_owned(),
        image: Some(image.to_owned()),
        command: Some(vec![format!("/usr/local/bin/couponrush-{component}")]),
        env: Some(env_vars),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: secret.to_owned(), optional: Some(false) }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: port,
            ..ContainerPort::default()
        }]),
        resources: Some(resources(pod)),
        readiness_probe: Some(probe("/readyz", port)),
        liveness_probe: Some(probe("/healthz", port)),
        ..Container::default()
    };
    Deployment {
        metadata: meta(ce, component),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector { match_labels: Some(selector(&event, component)), ..LabelSelector::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(&event, component)), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // Longer than the binaries' 10 s drain, so they finish in-flight work.
                    termination_grace_period_seconds: Some(30),
                    topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        when_unsatisfiable: "ScheduleAnyway".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector(&event, component)),
                            ..LabelSelector::default()
                        }),
                        ..TopologySpreadConstraint::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub fn issuer_deployment(ce: &CouponEvent, inputs: &WorkloadInputs) -> Deployment {
    let vars = env(&[
        ("LISTEN", "0.0.0.0:8080".to_owned()),
        ("KAFKA_TOPIC", inputs.topic.clone()),
        ("LOG_JSON", "true".to_owned()),
    ]);
    deployment(
        ce,
        ISSUER,
        &inputs.issuer_image,
        inputs.sizing.issuer_replicas,
        &inputs.sizing.issuer,
        vars,
        8080,
        &inputs.backends_secret,
    )
}

pub fn consumer_deployment(ce: &CouponEvent, inputs: &WorkloadInputs) -> Deployment {
    let namespace = ce.metadata.namespace.clone().unwrap_or_default();
    let name = ce.metadata.name.clone().unwrap_or_default();
    let vars = env(&[
        ("LISTEN", "0.0.0.0:9090".to_owned()),
        ("KAFKA_TOPIC", inputs.topic.clone()),
        ("KAFKA_GROUP", format!("couponrush-{namespace}-{name}")),
        ("LOG_JSON", "true".to_owned()),
    ]);
    deployment(
        ce,
        CONSUMER,
        &inputs.consumer_image,
        inputs.sizing.consumer_replicas,
        &inputs.sizing.consumer,
        vars,
        9090,
        &inputs.backends_secret,
    )
}

pub fn issuer_service(ce: &CouponEvent) -> Service {
    let event = ce.metadata.name.clone().unwrap_or_default();
    Service {
        metadata: meta(ce, ISSUER),
        spec: Some(ServiceSpec {
            selector: Some(selector(&event, ISSUER)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: 80,
                target_port: Some(IntOrString::String("http".to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one issuer down at a time for voluntary disruptions (node drains).
pub fn issuer_disruption_budget(ce: &CouponEvent) -> PodDisruptionBudget {
    let event = ce.metadata.name.clone().unwrap_or_default();
    PodDisruptionBudget {
        metadata: meta(ce, ISSUER),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector(&event, ISSUER)), ..LabelSelector::default() }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizing::size;
    use couponrush_crds::{Capacity, CouponEventSpec};

    fn event() -> CouponEvent {
        let spec: CouponEventSpec = serde_json::from_value(serde_json::json!({
            "coupon": {"name": "c", "amount": 1, "currency": "KRW"},
            "stock": 1000,
            "startTime": "2026-12-01T10:00:00+09:00"
        }))
        .expect("spec");
        let mut ce = CouponEvent::new("opening-day", spec);
        ce.metadata.namespace = Some("marketing".into());
        ce.metadata.uid = Some("uid-1".into());
        ce
    }

    fn inputs() -> WorkloadInputs {
        WorkloadInputs {
            issuer_image: "issuer:1".into(),
            consumer_image: "consumer:1".into(),
            backends_secret: "backends".into(),
            topic: topic_name("marketing", "opening-day"),
            sizing: size(&Capacity::default()),
        }
    }

    #[test]
    fn the_issuer_deployment_is_sized_owned_and_configured() {
        let deployment = issuer_deployment(&event(), &inputs());
        assert_eq!(deployment.metadata.name.as_deref(), Some("opening-day-issuer"));
        let owner = &deployment.metadata.owner_references.expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("CouponEvent", Some(true)));
        let spec = deployment.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.expect("pod");
        let container = &pod.containers[0];
        let requests = container.resources.as_ref().and_then(|r| r.requests.as_ref()).expect("requests");
        assert_eq!(requests["cpu"], Quantity("900m".into()));
        let env = container.env.as_ref().expect("env");
        assert!(
            env.iter()
                .any(|e| e.name == "KAFKA_TOPIC" && e.value.as_deref() == Some("couponrush.marketing.opening-day"))
        );
        let from = container.env_from.as_ref().expect("envFrom");
        assert_eq!(from[0].secret_ref.as_ref().map(|s| s.name.as_str()), Some("backends"));
        assert_eq!(pod.topology_spread_constraints.expect("spread")[0].topology_key, "kubernetes.io/hostname");
    }

    #[test]
    fn the_service_and_budget_select_the_issuers() {
        let service = issuer_service(&event());
        let budget = issuer_disruption_budget(&event());
        let selected = service.spec.and_then(|s| s.selector).expect("selector");
        assert_eq!(selected[EVENT_LABEL], "opening-day");
        assert_eq!(budget.spec.and_then(|s| s.max_unavailable), Some(IntOrString::Int(1)));
    }
}
